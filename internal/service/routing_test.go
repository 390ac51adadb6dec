package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/hubtest"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/registry"
	"github.com/tetherhub/tether/internal/routing"
	"github.com/tetherhub/tether/internal/service"
	"github.com/tetherhub/tether/internal/telemetry"
)

type routingFixture struct {
	*fixture
	hub *hub.Hub
}

func newRoutingFixture(t *testing.T) *routingFixture {
	t.Helper()
	f := &fixture{Storage: hubtest.New(t, telemetry.Options{})}
	router := routing.NewRouter("testhub", routing.NewRegistryTags(f.Registry))
	mgr, err := routing.NewManager(context.Background(), routing.ManagerOptions{Router: router, DataDir: f.Dir})
	if err != nil {
		t.Fatal(err)
	}
	f.serve(t, service.Config{Routing: mgr})
	return &routingFixture{fixture: f, hub: f.Hub(hub.Config{Router: router})}
}

func (f *routingFixture) send(t *testing.T, device string, props map[string]string) {
	t.Helper()
	p, err := f.hub.Submit(context.Background(), hub.Origin{Identity: auth.DeviceIdentity{DeviceID: device}}, &message.Message{Properties: props, Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, c *client.Client, opts client.ReadOptions) []api.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var out []api.Event
	err := c.ReadEvents(ctx, opts, func(ev api.Event) error { out = append(out, ev); return nil })
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	return out
}

func TestBuiltInEndpointSeesOnlyWhatIsRoutedToIt(t *testing.T) {
	f := newRoutingFixture(t)
	ctx := context.Background()
	owner := f.client(t, "iothubowner")
	cfg := `{"routes":[{"name":"critical","source":"DeviceMessages","condition":"level = 'critical'","endpointNames":["events"]}],
		"fallbackRoute":{"isEnabled":false},
		"enrichments":[{"key":"hub","value":"$iothubname","endpointNames":["events"]},{"key":"site","value":"$twin.tags.site","endpointNames":["events"]}]}`
	if _, err := owner.SetRouting(ctx, json.RawMessage(cfg), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Registry.CreateDevice(ctx, registry.Device{DeviceID: "d1", Tags: map[string]any{"site": "Lyon"}}); err != nil {
		t.Fatal(err)
	}
	f.send(t, "d1", map[string]string{"level": "critical", "n": "1"})
	f.send(t, "d1", map[string]string{"level": "info", "n": "2"})
	f.send(t, "d1", map[string]string{"level": "critical", "n": "3"})

	events := readAll(t, owner, client.ReadOptions{From: "start", Device: "d1"})
	if len(events) != 2 || events[0].Properties["n"] != "1" || events[1].Properties["n"] != "3" {
		t.Fatalf("built-in endpoint saw %+v, want messages 1 and 3", events)
	}
	if events[1].SequenceNumber-events[0].SequenceNumber != 2 {
		t.Errorf("sequence numbers %d, %d: the skipped message leaves a gap", events[0].SequenceNumber, events[1].SequenceNumber)
	}
	if events[0].Properties["hub"] != "testhub" || events[0].Properties["site"] != "Lyon" || !reflect.DeepEqual(events[0].Routes, []string{"critical"}) {
		t.Errorf("event = %+v: want enrichments and routes", events[0])
	}

	raw := readAll(t, owner, client.ReadOptions{From: "start", Device: "d1", Raw: true})
	if len(raw) != 3 {
		t.Fatalf("raw tap saw %d messages, want 3", len(raw))
	}
	if len(raw[1].Routes) != 0 || len(raw[1].Endpoints) != 0 || !reflect.DeepEqual(raw[0].Endpoints, []string{"events"}) || raw[0].Properties["hub"] != "" {
		t.Errorf("raw = %+v / %+v: want decisions as stored, unenriched", raw[0], raw[1])
	}
	var apiErr *client.Error
	err := f.client(t, "service").ReadEvents(ctx, client.ReadOptions{Raw: true}, func(api.Event) error { return nil })
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("raw tap with ServiceConnect only: %v", err)
	}

	// Back to the defaults: new messages reach events again, without routes.
	if _, err := owner.ResetRouting(ctx); err != nil {
		t.Fatal(err)
	}
	f.send(t, "d1", map[string]string{"level": "info", "n": "4"})
	events = readAll(t, owner, client.ReadOptions{From: "start", Device: "d1"})
	if len(events) != 3 || events[2].Properties["n"] != "4" || events[2].Routes != nil {
		t.Fatalf("after reset: %+v", events)
	}
}

func TestRoutingConfigurationAPI(t *testing.T) {
	f := newRoutingFixture(t)
	ctx := context.Background()
	owner := f.client(t, "iothubowner")
	cfg, etag, err := owner.Routing(ctx)
	if err != nil || cfg.Source != "default" || etag == "" || cfg.Limits == nil || cfg.Limits.Routes != 100 || cfg.Routes == nil {
		t.Fatalf("default = %+v %q %v", cfg, etag, err)
	}
	var apiErr *client.Error
	for _, policy := range []string{"service", "registryReadWrite"} {
		if _, _, err := f.client(t, policy).Routing(ctx); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s reads routing: %v", policy, err)
		}
	}
	_, err = owner.SetRouting(ctx, json.RawMessage(`{"routes":[{"name":"a","source":"DeviceMessages","condition":"x = ","endpointNames":["nowhere"]}]}`), "")
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || apiErr.Code != "ArgumentInvalid" ||
		!strings.Contains(apiErr.Message, "routes[0].condition: route \"a\": column") || !strings.Contains(apiErr.Message, `routes[0].endpointNames[0]: "nowhere"`) {
		t.Fatalf("invalid config: %v", err)
	}
	set, err := owner.SetRouting(ctx, json.RawMessage(`{"routes":[{"name":"a","source":"devicemessages","endpointNames":["events"]}]}`), etag)
	if err != nil || set.Source != "api" || set.Routes[0].Source != "DeviceMessages" {
		t.Fatalf("set = %+v %v", set, err)
	}
	if _, err := owner.SetRouting(ctx, json.RawMessage(`{"routes":[]}`), etag); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("stale etag: %v", err)
	}
}

func TestRouteTestAPI(t *testing.T) {
	f := newRoutingFixture(t)
	ctx := context.Background()
	c := f.client(t, "service")
	str := func(s string) *string { return &s }
	jsonMsg := api.RouteTestMessage{
		Body:             json.RawMessage(`{"Weather":{"Temperature":50,"Location":{"State":"WA"}}}`),
		AppProperties:    map[string]string{"processingPath": "hot", "severity": "3"},
		SystemProperties: map[string]string{"contentType": "application/json", "contentEncoding": "UTF-8"},
	}
	tests := []struct {
		name      string
		req       api.RouteTestRequest
		want      string
		noteHas   string
		errSubstr string
	}{
		{"app property", api.RouteTestRequest{Condition: str("processingPath = 'hot'"), Message: jsonMsg}, "true", "", ""},
		{"as_number", api.RouteTestRequest{Condition: str("as_number(severity) <= 2"), Message: jsonMsg}, "false", "", ""},
		{"body", api.RouteTestRequest{Condition: str("$body.Weather.Temperature > 40 AND length($body.Weather.Location.State) = 2"), Message: jsonMsg}, "true", "", ""},
		{"body as a string", api.RouteTestRequest{Condition: str("$body.a = 1"), Message: api.RouteTestMessage{Body: json.RawMessage(`"{\"a\":1}"`),
			SystemProperties: map[string]string{"content-type": "application/json", "content-encoding": "utf-8"}}}, "true", "", ""},
		{"no content type", api.RouteTestRequest{Condition: str("$body.a = 1"), Message: api.RouteTestMessage{Body: json.RawMessage(`{"a":1}`)}}, "undefined", "contentType", ""},
		{"missing property", api.RouteTestRequest{Condition: str("nope = 'x'"), Message: jsonMsg}, "undefined", "nope", ""},
		{"twin", api.RouteTestRequest{Condition: str("$twin.tags.floor = 1"), Twin: map[string]any{"tags": map[string]any{"floor": 1}}}, "true", "", ""},
		{"empty condition", api.RouteTestRequest{Condition: str("")}, "true", "", ""},
		{"syntax error", api.RouteTestRequest{Condition: str("a = 'x' AND")}, "", "", "condition: column 12"},
		{"unknown system property", api.RouteTestRequest{Condition: str("true"), Message: api.RouteTestMessage{SystemProperties: map[string]string{"nope": "x"}}}, "", "", `"nope" is not a system property`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := c.TestRoute(ctx, tt.req)
			if tt.errSubstr != "" {
				var apiErr *client.Error
				if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.Message, tt.errSubstr) {
					t.Fatalf("err = %v, want 400 with %q", err, tt.errSubstr)
				}
				return
			}
			if err != nil || res.Result != tt.want {
				t.Fatalf("result = %+v %v, want %s", res, err, tt.want)
			}
			if tt.noteHas != "" && !strings.Contains(strings.Join(res.Notes, "\n"), tt.noteHas) {
				t.Errorf("notes %q do not mention %q", res.Notes, tt.noteHas)
			}
		})
	}
	res, err := c.TestRoute(ctx, api.RouteTestRequest{Message: jsonMsg})
	if err != nil || !reflect.DeepEqual(res.Endpoints, []string{"events"}) {
		t.Fatalf("test all on the default hub = %+v %v", res, err)
	}
}
