package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
)

// TestRouting configures routing from the configuration file and then through the CLI, sends
// telemetry with an MQTT client, and checks what the built-in endpoint (`monitor`) and the raw
// tap (`monitor --routes`) show: routed messages only, enriched, with their routes; hub events
// for lifecycle and connection changes.
func TestRouting(t *testing.T) {
	dir := t.TempDir()
	configFile := filepath.Join(dir, "tether.yaml")
	writeTestFile(t, configFile, `retention: 24h
routing:
  routes:
    - {name: lifecycle, source: DeviceLifecycleEvents, endpointNames: [events]}
`)
	h := startHub(t, "--config", configFile)
	conn := h.createDevice("thermo")

	list := h.mustCLI("route", "list")
	if !strings.Contains(list, "configuration file") || !strings.Contains(list, "lifecycle") {
		t.Fatalf("route list:\n%s", list)
	}
	events := h.events()
	if len(events) != 1 || events[0].Properties["opType"] != "createDeviceIdentity" ||
		events[0].SystemProperties["iothub-message-source"] != "deviceLifecycleEvents" || !reflect.DeepEqual(events[0].Routes, []string{"lifecycle"}) {
		t.Fatalf("after creating a device, the built-in endpoint has %+v", events)
	}

	routingFile := filepath.Join(dir, "routing.yaml")
	writeTestFile(t, routingFile, `routes:
  - name: critical
    source: DeviceMessages
    condition: "level = 'critical'"
    endpointNames: [events]
  - {name: connections, source: DeviceConnectionStateEvents, endpointNames: [events]}
fallbackRoute:
  isEnabled: false
enrichments:
  - {key: hub, value: $iothubname, endpointNames: [events]}
`)
	h.mustCLI("route", "set", "--file", routingFile)
	writeTestFile(t, filepath.Join(dir, "bad.yaml"), "routes:\n  - {name: x, source: DeviceMessages, condition: \"a = \", endpointNames: [events]}\n")
	if _, err := h.cli("route", "set", "--file", filepath.Join(dir, "bad.yaml")); err == nil || !strings.Contains(err.Error(), `routes[0].condition: route "x": column`) {
		t.Fatalf("invalid configuration: %v", err)
	}

	c, err := h.mqttDevice(t, "thermo", conn, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, level := range []string{"critical", "info"} {
		tok := c.Publish("devices/thermo/messages/events/level="+level, 1, false, `{"t":1}`)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", level, tok.Error())
		}
	}
	c.Disconnect(100)
	time.Sleep(300 * time.Millisecond) // the disconnect event

	var telemetry, connection []api.Event
	for _, ev := range h.events() {
		switch ev.SystemProperties["iothub-message-source"] {
		case "Telemetry":
			telemetry = append(telemetry, ev)
		case "deviceConnectionStateEvents":
			connection = append(connection, ev)
		}
	}
	if len(telemetry) != 1 || telemetry[0].Properties["level"] != "critical" || telemetry[0].Properties["hub"] != "tether" ||
		!reflect.DeepEqual(telemetry[0].Routes, []string{"critical"}) {
		t.Fatalf("built-in endpoint telemetry = %+v, want the critical message only, enriched", telemetry)
	}
	if len(connection) != 2 || connection[0].Properties["opType"] != "deviceConnected" || connection[1].Properties["opType"] != "deviceDisconnected" {
		t.Fatalf("connection events = %+v", connection)
	}

	var raw []api.Event
	for _, ev := range h.events("--routes") {
		if ev.SystemProperties["iothub-message-source"] == "Telemetry" {
			raw = append(raw, ev)
		}
	}
	if len(raw) != 2 || raw[1].Properties["level"] != "info" || len(raw[1].Routes) != 0 || len(raw[1].Endpoints) != 0 ||
		!reflect.DeepEqual(raw[0].Endpoints, []string{"events"}) {
		t.Fatalf("raw tap = %+v, want both messages with their decisions", raw)
	}
	text := h.mustCLI("monitor", "--routes", "--from", "start", "--timeout", "2s", "--device", "thermo")
	if !strings.Contains(text, "routes: critical -> endpoints: events") || !strings.Contains(text, "routes: (none matched) -> endpoints: (none: the message went nowhere)") {
		t.Fatalf("monitor --routes printed:\n%s", text)
	}

	msgFile := filepath.Join(dir, "msg.json")
	writeTestFile(t, msgFile, `{"body": {"temp": 42}, "appProperties": {"level": "critical"},
		"systemProperties": {"contentType": "application/json", "contentEncoding": "utf-8"}}`)
	out := h.mustCLI("route", "test", "--condition", "level = 'critical' AND $body.temp > 40", "--message", msgFile)
	if strings.TrimSpace(out) != "true" {
		t.Fatalf("route test printed %q", out)
	}
	out = h.mustCLI("route", "test", "--message", msgFile, "--json")
	var res api.RouteTestResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || !reflect.DeepEqual(res.Endpoints, []string{"events"}) || !reflect.DeepEqual(res.MatchedRoutes, []string{"critical"}) {
		t.Fatalf("route test of the routes in force: %s (%v)", out, err)
	}

	h.mustCLI("route", "reset")
	if list := h.mustCLI("route", "list"); !strings.Contains(list, "configuration file") || strings.Contains(list, "critical") {
		t.Fatalf("after reset:\n%s", list)
	}
}

func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
