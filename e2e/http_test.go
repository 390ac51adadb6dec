package e2e

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/auth"
)

const authMethodDevice = `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`

// TestSDKHTTPTelemetry: the official HTTP transport (azure-iot-device-http, port 443) sends one
// event with every property it can carry and a batch of three; `tether monitor --json` shows
// each message with its properties and the hub's stamps. A wrong key is refused with 401, which
// the SDK reports as UnauthorizedError.
func TestSDKHTTPTelemetry(t *testing.T) {
	h := startHubOn443(t)
	conn := h.createDevice("http-dev")
	// Date.toString() is in the process's time zone.
	t.Setenv("TZ", "UTC")

	single, _ := json.Marshal([]map[string]any{{
		"body": `{"temperature":21.5}`, "messageId": "mid-http-1", "correlationId": "cid-http-1",
		"userId": "user-1", "contentType": "application/json", "contentEncoding": "utf-8",
		"to": "/devices/http-dev/messages/events", "ack": "full",
		"interfaceId": "dtmi:com:example:Thermostat;1", "expiryTimeUtc": "2030-01-01T00:00:00Z",
		"properties": map[string]string{"temperatureAlert": "false", "path": "x=1&y=2 /z", "dt-subject": "thermostat1"},
	}})
	if res := h.nodeSDK(conn, "http", "send", string(single)); !res.OK || res.Sent != 1 {
		t.Fatalf("SDK send over HTTP failed: %+v", res)
	}
	events := h.events("--device", "http-dev")
	if len(events) != 1 {
		t.Fatalf("monitor shows %d events, want 1: %+v", len(events), events)
	}
	ev := events[0]
	dev := h.device("http-dev")
	wantSystem := map[string]string{
		"message-id":                           "mid-http-1",
		"correlation-id":                       "cid-http-1",
		"user-id":                              "user-1",
		"to":                                   "/devices/http-dev/messages/events",
		"content-type":                         "application/json",
		"content-encoding":                     "utf-8",
		"iothub-interface-id":                  "dtmi:com:example:Thermostat;1",
		"dt-subject":                           "thermostat1",
		"iothub-connection-device-id":          "http-dev",
		"iothub-connection-auth-generation-id": dev.GenerationID,
		"iothub-connection-auth-method":        authMethodDevice,
		"iothub-message-source":                "Telemetry",
	}
	for k, want := range wantSystem {
		if got := ev.SystemProperties[k]; got != want {
			t.Errorf("system property %s = %q, want %q", k, got, want)
		}
	}
	// The Node HTTP transport sends the expiry as Date.toString(); it is carried as sent.
	if got := ev.SystemProperties["absolute-expiry-time"]; !strings.HasPrefix(got, "Tue Jan 01 2030 00:00:00 GMT+0000") {
		t.Errorf("absolute-expiry-time = %q", got)
	}
	// Header names are case-insensitive, so names arrive in lower case (httpdevice's package
	// comment); iothub-ack travels as an application property, as on MQTT and AMQP.
	wantProps := map[string]string{"temperaturealert": "false", "path": "x=1&y=2 /z", "iothub-ack": "full"}
	if !equalMaps(ev.Properties, wantProps) {
		t.Errorf("properties = %v, want %v", ev.Properties, wantProps)
	}
	if ev.Body == nil || *ev.Body != `{"temperature":21.5}` {
		t.Errorf("body = %v", ev.Body)
	}
	enq := ev.EnqueuedTime
	if time.Since(enq) > time.Minute {
		t.Errorf("enqueued time %v", enq)
	}
	if got := h.device("http-dev"); got.LastActivityTime.Before(enq.Add(-time.Second)) {
		t.Errorf("lastActivityTime %v not updated by the send at %v", got.LastActivityTime, enq)
	}

	// A batch of three: binary, text, and one with properties (the SDK sends only body and
	// properties in a batch; their names keep their case).
	batch, _ := json.Marshal([]map[string]any{
		{"bodyBase64": base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 0xfe, 0xff})},
		{"body": "second"},
		{"body": `{"n":3}`, "properties": map[string]string{"Color": "red", "dt-subject": "comp3"}},
	})
	if res := h.nodeSDK(conn, "http", "sendBatch", string(batch)); !res.OK || res.Sent != 3 {
		t.Fatalf("SDK sendEventBatch failed: %+v", res)
	}
	events = h.events("--device", "http-dev")
	if len(events) != 4 {
		t.Fatalf("monitor shows %d events, want 4: %+v", len(events), events)
	}
	for i, ev := range events[1:] {
		if ev.SequenceNumber != int64(i+1) {
			t.Errorf("batch event %d has sequence number %d", i, ev.SequenceNumber)
		}
		if ev.SystemProperties["iothub-connection-device-id"] != "http-dev" || ev.SystemProperties["iothub-connection-auth-method"] != authMethodDevice ||
			ev.SystemProperties["iothub-message-source"] != "Telemetry" || ev.SystemProperties["iothub-enqueuedtime"] == "" {
			t.Errorf("batch event %d not stamped: %v", i, ev.SystemProperties)
		}
		if !ev.EnqueuedTime.Equal(events[1].EnqueuedTime) {
			t.Errorf("batch event %d enqueued at %v, the first at %v: one append", i, ev.EnqueuedTime, events[1].EnqueuedTime)
		}
	}
	if b, _ := base64.StdEncoding.DecodeString(events[1].BodyBase64); string(b) != "\x00\x01\x02\xfe\xff" || events[1].Body != nil || len(events[1].Properties) != 0 {
		t.Errorf("batch event 1 = %+v", events[1])
	}
	if events[2].Body == nil || *events[2].Body != "second" || len(events[2].Properties) != 0 {
		t.Errorf("batch event 2 = %+v", events[2])
	}
	if events[3].Body == nil || *events[3].Body != `{"n":3}` || !equalMaps(events[3].Properties, map[string]string{"Color": "red"}) ||
		events[3].SystemProperties["dt-subject"] != "comp3" {
		t.Errorf("batch event 3 = %+v", events[3])
	}

	// A wrong key: 401, reported as UnauthorizedError, nothing stored.
	cs, err := auth.ParseConnectionString(conn)
	if err != nil {
		t.Fatal(err)
	}
	cs.SharedAccessKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	if res := h.nodeSDK(cs.String(), "http", "send", `[{"body":"refused"}]`); res.OK || res.Error != "UnauthorizedError" {
		t.Errorf("wrong key over HTTP: %+v, want UnauthorizedError", res)
	}
	if n := len(h.events("--device", "http-dev")); n != 4 {
		t.Errorf("%d events after the refused send, want 4", n)
	}
}

// TestSDKMQTTOverWebSocket: the official MqttWs transport (wss://localhost:443/$iothub/websocket)
// sends telemetry through the same MQTT server as the TLS listener, with the connection string
// exactly as `tether device create` prints it.
func TestSDKMQTTOverWebSocket(t *testing.T) {
	h := startHubOn443(t)
	conn := h.createDevice("ws-dev")
	msgs, _ := json.Marshal([]map[string]any{
		{"body": `{"ws":1}`, "messageId": "mid-ws-1", "contentType": "application/json", "properties": map[string]string{"temperatureAlert": "true"}},
		{"body": "two", "messageId": "mid-ws-2"},
	})
	if res := h.nodeSDK(conn, "mqttws", "send", string(msgs)); !res.OK || res.Sent != 2 {
		t.Fatalf("SDK send over MQTT/WebSocket failed: %+v", res)
	}
	events := h.events("--device", "ws-dev")
	if len(events) != 2 {
		t.Fatalf("monitor shows %d events, want 2: %+v", len(events), events)
	}
	dev := h.device("ws-dev")
	for i, ev := range events {
		if ev.SystemProperties["iothub-connection-device-id"] != "ws-dev" || ev.SystemProperties["iothub-connection-auth-generation-id"] != dev.GenerationID ||
			ev.SystemProperties["iothub-connection-auth-method"] != authMethodDevice {
			t.Errorf("event %d stamps: %v", i, ev.SystemProperties)
		}
	}
	if ev := events[0]; ev.SystemProperties["message-id"] != "mid-ws-1" || ev.SystemProperties["content-type"] != "application/json" ||
		!equalMaps(ev.Properties, map[string]string{"temperatureAlert": "true"}) || ev.Body == nil || *ev.Body != `{"ws":1}` {
		t.Errorf("event 0 = %+v", ev)
	}
	if ev := events[1]; ev.SystemProperties["message-id"] != "mid-ws-2" || ev.Body == nil || *ev.Body != "two" {
		t.Errorf("event 1 = %+v", ev)
	}
	// The device was connected and disconnected like an MQTT/TLS device.
	if dev.ConnectionState != "Disconnected" || dev.LastActivityTime.Before(events[1].EnqueuedTime.Add(-time.Second)) {
		t.Errorf("device after the WebSocket session: %s, last activity %v", dev.ConnectionState, dev.LastActivityTime)
	}

	// Without GatewayHostName the SDK requests /$iothub/websocket itself.
	cs, err := auth.ParseConnectionString(conn)
	if err != nil {
		t.Fatal(err)
	}
	if cs.GatewayHostName == "" {
		t.Fatalf("connection string %q has no GatewayHostName; the test above did not cover it", conn)
	}
	cs.GatewayHostName = ""
	if res := h.nodeSDK(cs.String(), "mqttws", "send", `[{"body":"three","messageId":"mid-ws-3"}]`); !res.OK || res.Sent != 1 {
		t.Fatalf("SDK send over MQTT/WebSocket without GatewayHostName failed: %+v", res)
	}
	if events := h.events("--device", "ws-dev"); len(events) != 3 || events[2].SystemProperties["message-id"] != "mid-ws-3" {
		t.Errorf("after the third send monitor shows %+v", events)
	}

	// A wrong key is refused at CONNECT, as on the TLS listener.
	cs.SharedAccessKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	if res := h.nodeSDK(cs.String(), "mqttws", "open"); res.OK || res.Error != "UnauthorizedError" || !strings.Contains(res.Message+res.Inner, "Not authorized") {
		t.Errorf("wrong key over MQTT/WebSocket: %+v, want UnauthorizedError from CONNACK not authorized", res)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if got, ok := a[k]; !ok || got != v {
			return false
		}
	}
	return true
}
