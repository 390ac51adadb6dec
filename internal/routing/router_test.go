package routing

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/registry"
)

type staticTags map[string]map[string]any

func (s staticTags) Tags(deviceID, moduleID string) map[string]any {
	if moduleID != "" {
		return nil
	}
	return s[deviceID]
}

func mustRouter(t *testing.T, yaml string) *Router {
	t.Helper()
	r := NewRouter("myhub", staticTags{"d1": {"floor": 3.0, "site": map[string]any{"name": "Lyon"}}})
	doc, err := ParseYAML([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set(doc.Config, Limits{}); err != nil {
		t.Fatal(err)
	}
	return r
}

func telemetry(device string, props map[string]string) *message.Message {
	return &message.Message{ConnectionDeviceID: device, Source: message.SourceTelemetry, Properties: props}
}

func TestRouteDecisions(t *testing.T) {
	cfg := `
endpoints:
  - {name: hook, type: webhook, webhook: {url: 'http://example.com/x'}}
routes:
  - {name: critical, source: DeviceMessages, condition: "level = 'critical'", endpointNames: [hook]}
  - {name: critical-copy, source: DeviceMessages, condition: "level = 'critical' OR level = 'high'", endpointNames: [hook]}
  - {name: all-hot, source: DeviceMessages, condition: "temp > 30", endpointNames: [events]}
  - {name: off, source: DeviceMessages, endpointNames: [events], isEnabled: false}
  - {name: floor3, source: DeviceMessages, condition: "$twin.tags.floor = 3", endpointNames: [events]}
  - {name: life, source: DeviceLifecycleEvents, endpointNames: [hook]}
`
	r := mustRouter(t, cfg)
	tests := []struct {
		name   string
		msg    *message.Message
		routes []string
		eps    []string
	}{
		{"two routes one endpoint: once", telemetry("d2", map[string]string{"level": "critical"}), []string{"critical", "critical-copy"}, []string{"hook"}},
		{"fallback when nothing matches", telemetry("d2", map[string]string{"level": "low"}), []string{"$fallback"}, []string{"events"}},
		{"disabled route ignored; fallback not used when a route matched", telemetry("d2", map[string]string{"level": "high", "temp": "x"}), []string{"critical-copy"}, []string{"hook"}},
		{"twin tags", telemetry("d1", nil), []string{"floor3"}, []string{"events"}},
		{"module has no tags", &message.Message{ConnectionDeviceID: "d1", ConnectionModuleID: "m", Source: message.SourceTelemetry}, []string{"$fallback"}, []string{"events"}},
		{"lifecycle by source", &message.Message{ConnectionDeviceID: "d1", Source: message.SourceDeviceLifecycleEvents}, []string{"life"}, []string{"hook"}},
		{"connection events: no route, no fallback", &message.Message{ConnectionDeviceID: "d1", Source: message.SourceDeviceConnectionStateEvents}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.Route(tt.msg)
			if got == nil {
				t.Fatal("nil decision")
			}
			if !reflect.DeepEqual(got.Routes, tt.routes) || !reflect.DeepEqual(got.Endpoints, tt.eps) {
				t.Fatalf("routes %v endpoints %v, want %v %v", got.Routes, got.Endpoints, tt.routes, tt.eps)
			}
		})
	}
	// A numeric app property compared to a number is undefined: not routed.
	if got := r.Route(telemetry("d2", map[string]string{"temp": "40"})); got.Routes[0] != "$fallback" {
		t.Errorf("string temp > 30 matched: %v", got.Routes)
	}
}

func TestDefaultAndFallbackDisabled(t *testing.T) {
	r := NewRouter("h", nil)
	if got := r.Route(telemetry("d", nil)); got != nil {
		t.Fatalf("default hub: %+v, want nil (built-in only)", got)
	}
	if got := r.Route(&message.Message{ConnectionDeviceID: "d", Source: message.SourceDeviceLifecycleEvents}); got == nil || len(got.Endpoints) != 0 {
		t.Fatalf("hub event in the default hub: %+v, want no endpoint", got)
	}
	r = mustRouter(t, "fallbackRoute: {isEnabled: false}")
	got := r.Route(telemetry("d", nil))
	if got == nil || len(got.Endpoints) != 0 || len(got.Routes) != 0 {
		t.Fatalf("fallback disabled: %+v, want routed nowhere", got)
	}
	m := telemetry("d", nil)
	m.Routing = got
	if m.ToEndpoint("events") {
		t.Fatal("a message routed nowhere reaches events")
	}
	// Only disabled routes: the fallback applies, by name.
	r = mustRouter(t, "routes:\n- {name: x, source: DeviceMessages, endpointNames: [events], isEnabled: false}")
	if got := r.Route(telemetry("d", nil)); got == nil || !reflect.DeepEqual(got.Routes, []string{"$fallback"}) {
		t.Fatalf("only disabled routes: %+v", got)
	}
}

func TestEnrich(t *testing.T) {
	r := mustRouter(t, `
endpoints:
  - {name: hook, type: webhook, webhook: {url: 'http://example.com/x'}}
enrichments:
  - {key: static, value: building-7, endpointNames: [events, hook]}
  - {key: hub, value: $iothubname, endpointNames: [events]}
  - {key: floor, value: $twin.tags.floor, endpointNames: [events]}
  - {key: site, value: $twin.tags.site, endpointNames: [events]}
  - {key: site-name, value: $twin.tags.SITE.name, endpointNames: [events]}
  - {key: missing, value: $twin.tags.nope, endpointNames: [events]}
  - {key: desired, value: $twin.properties.desired.mode, endpointNames: [events]}
`)
	m := telemetry("d1", map[string]string{"STATIC": "device-said", "x": "y"})
	r.Enrich("events", m)
	want := map[string]string{
		"static": "building-7", "x": "y", "hub": "myhub", "floor": "3", "site": `{"name":"Lyon"}`, "site-name": "Lyon",
		"missing": "$twin.tags.nope", "desired": "$twin.properties.desired.mode",
	}
	if !reflect.DeepEqual(m.Properties, want) {
		t.Fatalf("enriched = %v\nwant %v", m.Properties, want)
	}
	m = telemetry("unknown-device", nil)
	r.Enrich("hook", m)
	if !reflect.DeepEqual(m.Properties, map[string]string{"static": "building-7"}) {
		t.Fatalf("hook = %v", m.Properties)
	}
	m = telemetry("unknown-device", nil)
	r.Enrich("events", m)
	if m.Properties["floor"] != "$twin.tags.floor" {
		t.Fatalf("unknown device's tag = %q, want the literal", m.Properties["floor"])
	}
	m = telemetry("d1", nil)
	r.Enrich("other", m)
	if len(m.Properties) != 0 {
		t.Fatalf("endpoint without enrichments got %v", m.Properties)
	}
}

type capture struct{ msgs []*message.Message }

func (c *capture) Publish(_ context.Context, m *message.Message) error {
	c.msgs = append(c.msgs, m)
	return nil
}

func TestHubEvents(t *testing.T) {
	now := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	pub := &capture{}
	r := NewRouter("myhub", nil)
	ev := &Events{Router: r, Publisher: pub, Now: func() time.Time { return now }}
	dev := registry.Device{DeviceID: "d1", ETag: "MQ==", Status: registry.StatusEnabled, Tags: map[string]any{"a": "b"},
		Authentication: registry.Authentication{Type: registry.AuthSAS, SymmetricKey: registry.SymmetricKey{PrimaryKey: "secret"}}}
	ev.RegistryChanged(registry.ChangeEvent{Op: registry.Created, DeviceID: "d1", Device: dev})
	ev.ConnectionChanged("d1", "", true)
	if len(pub.msgs) != 0 {
		t.Fatalf("events built with no route for them: %d", len(pub.msgs))
	}
	doc, _ := ParseYAML([]byte(`routes:
- {name: life, source: DeviceLifecycleEvents, endpointNames: [events]}
- {name: conn, source: DeviceConnectionStateEvents, endpointNames: [events]}`))
	if err := r.Set(doc.Config, Limits{}); err != nil {
		t.Fatal(err)
	}
	ev.RegistryChanged(registry.ChangeEvent{Op: registry.Created, DeviceID: "d1", Device: dev})
	ev.RegistryChanged(registry.ChangeEvent{Op: registry.Updated, DeviceID: "d1", Device: dev})
	mod := registry.Module{DeviceID: "d1", ModuleID: "m1", ETag: "Mg=="}
	ev.RegistryChanged(registry.ChangeEvent{Op: registry.Deleted, DeviceID: "d1", ModuleID: "m1", Device: dev, Module: &mod})
	ev.ConnectionChanged("d1", "", true)
	ev.ConnectionChanged("d1", "", false)
	if len(pub.msgs) != 4 {
		t.Fatalf("%d events, want 4 (updates are not lifecycle events)", len(pub.msgs))
	}
	create := pub.msgs[0]
	wantProps := map[string]string{"deviceId": "d1", "hubName": "myhub", "iothub-message-schema": "deviceLifecycleNotification",
		"opType": "createDeviceIdentity", "operationTimestamp": "2024-05-06T07:08:09.1234567Z"}
	if !reflect.DeepEqual(create.Properties, wantProps) {
		t.Errorf("create props = %v", create.Properties)
	}
	if create.Source != "deviceLifecycleEvents" || create.ContentType != "application/json" || create.ContentEncoding != "utf-8" ||
		create.UserID != "myhub" || create.ConnectionDeviceID != "d1" || len(create.CorrelationID) != 36 {
		t.Errorf("create system properties = %+v", create)
	}
	if strings.Contains(string(create.Body), "secret") {
		t.Fatalf("lifecycle body leaks the key: %s", create.Body)
	}
	var body map[string]any
	if err := json.Unmarshal(create.Body, &body); err != nil || body["deviceId"] != "d1" || body["tags"].(map[string]any)["a"] != "b" || body["authenticationType"] != "sas" {
		t.Errorf("create body = %s (%v)", create.Body, err)
	}
	if r := r.Route(create); !reflect.DeepEqual(r.Routes, []string{"life"}) {
		t.Errorf("lifecycle event routed by %v", r.Routes)
	}
	del := pub.msgs[1]
	if del.Properties["opType"] != "deleteModuleIdentity" || del.Properties["moduleId"] != "m1" || del.ConnectionModuleID != "m1" {
		t.Errorf("module delete = %+v", del)
	}
	c1, c2 := pub.msgs[2], pub.msgs[3]
	if c1.Properties["opType"] != "deviceConnected" || c2.Properties["opType"] != "deviceDisconnected" ||
		c1.Properties["iothub-message-schema"] != "deviceConnectionStateNotification" || c1.Source != "deviceConnectionStateEvents" {
		t.Errorf("connection events = %v / %v", c1.Properties, c2.Properties)
	}
	var s1, s2 struct{ SequenceNumber string }
	json.Unmarshal(c1.Body, &s1)
	json.Unmarshal(c2.Body, &s2)
	if len(s1.SequenceNumber) != 64 || len(s2.SequenceNumber) != 64 || !(s1.SequenceNumber < s2.SequenceNumber) {
		t.Errorf("sequence numbers %q %q: want 64 hex digits, increasing", s1.SequenceNumber, s2.SequenceNumber)
	}
}

func TestTest(t *testing.T) {
	r := mustRouter(t, `routes:
- {name: hot, source: DeviceMessages, condition: "$body.temp > 30", endpointNames: [events]}
- {name: off, source: DeviceMessages, endpointNames: [events], isEnabled: false}
fallbackRoute: {isEnabled: false}`)
	m := &message.Message{ContentType: "application/json", ContentEncoding: "utf-8", Body: []byte(`{"temp": 35}`)}
	cond := "$body.temp > 30 AND $twin.tags.floor = 3"
	res, err := r.Test(TestInput{Condition: &cond, Message: m, Twin: map[string]any{"tags": map[string]any{"floor": 3}}})
	if err != nil || res.Result != "true" {
		t.Fatalf("test = %+v %v", res, err)
	}
	cond = "$body.temp > 30"
	res, err = r.Test(TestInput{Condition: &cond, Message: &message.Message{Body: []byte(`{"temp": 35}`)}})
	if err != nil || res.Result != "undefined" || len(res.Notes) == 0 {
		t.Fatalf("no content type: %+v %v", res, err)
	}
	bad := "a = "
	if _, err := r.Test(TestInput{Condition: &bad}); err == nil || !strings.Contains(err.Error(), "condition: column") {
		t.Fatalf("bad condition: %v", err)
	}
	res, err = r.Test(TestInput{Message: m})
	if err != nil || len(res.Routes) != 2 || res.Routes[0].Result != "true" || res.Routes[1].Enabled || !reflect.DeepEqual(res.Endpoints, []string{"events"}) {
		t.Fatalf("test all = %+v %v", res, err)
	}
	res, err = r.Test(TestInput{Message: &message.Message{}})
	if err != nil || len(res.Endpoints) != 0 || res.Routes[0].Result != "undefined" {
		t.Fatalf("test all, nothing matches: %+v %v", res, err)
	}
	if _, err := r.Test(TestInput{Source: "nope"}); err == nil {
		t.Fatal("unknown source accepted")
	}
}
