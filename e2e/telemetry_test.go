package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/auth"
)

// TestSDKTelemetryRoundTrip is the foundation scenario: an unmodified SDK device sends
// telemetry over MQTT/TLS, and `tether monitor --json` shows it with every property and the
// hub's anti-spoofing stamps.
func TestSDKTelemetryRoundTrip(t *testing.T) {
	h := startHub(t)
	conn := h.createDevice("thermostat-1")
	if !strings.HasPrefix(conn, "HostName=localhost;DeviceId=thermostat-1;SharedAccessKey=") {
		t.Fatalf("device connection string = %q", conn)
	}
	if !strings.Contains(conn, fmt.Sprintf("GatewayHostName=localhost:%d", port(h.mqttAddr))) {
		t.Fatalf("connection string %q does not name the MQTT port", conn)
	}
	body := `{"temperature":21.5,"humidity":40}`
	msgs, _ := json.Marshal([]map[string]any{{
		"body": body, "messageId": "mid-1", "correlationId": "cid-1",
		"contentType": "application/json", "contentEncoding": "utf-8",
		"properties": map[string]string{"temperatureAlert": "false", "path": "x=1&y=2 /z"},
	}})
	if res := h.nodeSDK(conn, "mqtt", "send", string(msgs)); !res.OK || res.Sent != 1 {
		t.Fatalf("SDK send failed: %+v", res)
	}

	events := h.events("--device", "thermostat-1")
	if len(events) != 1 {
		t.Fatalf("monitor shows %d events, want 1: %+v", len(events), events)
	}
	ev := events[0]
	dev := h.device("thermostat-1")
	wantSystem := map[string]string{
		"message-id":                           "mid-1",
		"correlation-id":                       "cid-1",
		"content-type":                         "application/json",
		"content-encoding":                     "utf-8",
		"iothub-connection-device-id":          "thermostat-1",
		"iothub-connection-auth-generation-id": dev.GenerationID,
		"iothub-connection-auth-method":        `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`,
		"iothub-message-source":                "Telemetry",
	}
	for k, want := range wantSystem {
		if got := ev.SystemProperties[k]; got != want {
			t.Errorf("system property %s = %q, want %q", k, got, want)
		}
	}
	if dev.GenerationID == "" {
		t.Error("device has no generationId")
	}
	enq, err := time.Parse(time.RFC3339Nano, ev.SystemProperties["iothub-enqueuedtime"])
	if err != nil || time.Since(enq) > time.Minute || !enq.Equal(ev.EnqueuedTime) {
		t.Errorf("iothub-enqueuedtime = %q (event time %v): %v", ev.SystemProperties["iothub-enqueuedtime"], ev.EnqueuedTime, err)
	}
	wantProps := map[string]string{"temperatureAlert": "false", "path": "x=1&y=2 /z"}
	if len(ev.Properties) != len(wantProps) {
		t.Errorf("properties = %v, want %v", ev.Properties, wantProps)
	}
	for k, want := range wantProps {
		if got := ev.Properties[k]; got != want {
			t.Errorf("property %s = %q, want %q", k, got, want)
		}
	}
	if ev.Body == nil || *ev.Body != body {
		t.Errorf("body = %v, want %s", ev.Body, body)
	}
	if ev.DeviceID != "thermostat-1" || ev.SequenceNumber != 0 {
		t.Errorf("event header = %+v", ev)
	}
	if got := h.device("thermostat-1"); got.LastActivityTime.Before(enq.Add(-time.Second)) {
		t.Errorf("lastActivityTime %v not updated by the send at %v", got.LastActivityTime, enq)
	}

	// The human form names the device and pretty-prints the JSON body.
	human := h.mustCLI("monitor", "--from", "start", "--timeout", "2s", "--device", "thermostat-1")
	if !strings.Contains(human, "thermostat-1") || !strings.Contains(human, `"temperature": 21.5`) {
		t.Errorf("human monitor output:\n%s", human)
	}
}

// TestSDKRefusedCredentials: a wrong key, an expired token and a disabled device are refused
// with CONNACK "not authorized", which the SDK reports as UnauthorizedError.
func TestSDKRefusedCredentials(t *testing.T) {
	h := startHub(t)
	good := h.createDevice("dev-ok")
	h.createDevice("dev-disabled")
	disabled := strings.TrimSpace(h.mustCLI("device", "connection-string", "dev-disabled"))
	h.mustCLI("device", "disable", "dev-disabled")

	cs, err := auth.ParseConnectionString(good)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := cs
	wrongKey.SharedAccessKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	// A SharedAccessSignature connection string ignores GatewayHostName, so the token's sr must
	// carry the port for the SDK to dial it (wire notes §1).
	expiredToken, err := auth.Sign(fmt.Sprintf("localhost:%d/devices/dev-ok", port(h.mqttAddr)), "", cs.SharedAccessKey, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	expired := fmt.Sprintf("HostName=localhost:%d;DeviceId=dev-ok;SharedAccessSignature=%s", port(h.mqttAddr), expiredToken)

	for _, tc := range []struct{ name, conn string }{
		{"wrong key", wrongKey.String()},
		{"expired token", expired},
		{"disabled device", disabled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.nodeSDK(tc.conn, "mqtt", "open")
			if res.OK {
				t.Fatal("connection accepted")
			}
			if res.Error != "UnauthorizedError" || !strings.Contains(res.Message+res.Inner, "Not authorized") {
				t.Fatalf("refusal = %+v, want UnauthorizedError from CONNACK not authorized", res)
			}
		})
	}
	if res := h.nodeSDK(good, "mqtt", "open"); !res.OK {
		t.Fatalf("the good device was refused: %+v", res)
	}
	// Enabled again, the device connects.
	h.mustCLI("device", "enable", "dev-disabled")
	if res := h.nodeSDK(disabled, "mqtt", "open"); !res.OK {
		t.Fatalf("re-enabled device refused: %+v", res)
	}
}
