package routing

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAndValidateErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings, each in the error
	}{
		{"unknown top-level key", "routs: []", []string{`routs: unknown field`}},
		{"case mismatch hint", "routes:\n- name: a\n  Source: DeviceMessages\n  endpointNames: [events]", []string{`routes[0].Source: unknown field (did you mean "source"?`}},
		{"bad name", "routes:\n- {name: 'a b', source: DeviceMessages, endpointNames: [events]}", []string{`routes[0].name: "a b": names are 1 to 64 characters`}},
		{"duplicate name", "routes:\n- {name: a, source: DeviceMessages, endpointNames: [events]}\n- {name: A, source: DeviceMessages, endpointNames: [events]}", []string{`routes[1].name: "A" is already the name of another route`}},
		{"bad source", "routes:\n- {name: a, source: Telemetry, endpointNames: [events]}", []string{`routes[0].source: "Telemetry" is not a route source`}},
		{"condition column", "routes:\n- {name: hot, source: DeviceMessages, condition: \"a = 'x' AND\", endpointNames: [events]}", []string{`routes[0].condition: route "hot": column 12:`}},
		{"two endpoints", "routes:\n- {name: a, source: DeviceMessages, endpointNames: [events, x]}", []string{`routes[0].endpointNames: 2 endpoints: a route has exactly one endpoint`}},
		{"no endpoint", "routes:\n- {name: a, source: DeviceMessages}", []string{`routes[0].endpointNames: missing`}},
		{"unknown endpoint", "routes:\n- {name: a, source: DeviceMessages, endpointNames: [nowhere]}", []string{`routes[0].endpointNames[0]: "nowhere": no such endpoint`}},
		{"events spelling", "routes:\n- {name: a, source: DeviceMessages, endpointNames: [Events]}", []string{`the built-in endpoint is spelled "events"`}},
		{"isEnabled type", "routes:\n- {name: a, source: DeviceMessages, endpointNames: [events], isEnabled: 'yes'}", []string{`routes[0].isEnabled: expected true or false, found a string`}},
		{"fallback source", "fallbackRoute: {source: DeviceLifecycleEvents}", []string{`fallbackRoute.source: "DeviceLifecycleEvents": the fallback route's source is DeviceMessages`}},
		{"fallback condition", "fallbackRoute: {condition: \"a = 1\"}", []string{`fallbackRoute.condition`}},
		{"enrichment key", "enrichments:\n- {key: 'my key', value: v, endpointNames: [events]}", []string{`enrichments[0].key: "my key": keys are`}},
		{"enrichment variable", "enrichments:\n- {key: k, value: $twin.foo, endpointNames: [events]}", []string{`enrichments[0].value: "$twin.foo": the only variables are`}},
		{"enrichment empty twin path", "enrichments:\n- {key: k, value: $twin.tags, endpointNames: [events]}", []string{`enrichments[0].value: "$twin.tags": a twin path needs a property`}},
		{"enrichment duplicate key", "enrichments:\n- {key: k, value: v, endpointNames: [events]}\n- {key: K, value: w, endpointNames: [events]}", []string{`enrichments[1].key: "K" is already the key`}},
		{"enrichment endpoint twice", "enrichments:\n- {key: k, value: v, endpointNames: [events, events]}", []string{`enrichments[0].endpointNames[1]: "events" is listed twice`}},
		{"reserved endpoint", "endpoints:\n- {name: events, type: webhook, webhook: {url: 'http://x'}}", []string{`endpoints[0].name: "events" is reserved`}},
		{"endpoint field", "endpoints:\n- {name: hook, type: webhook, webhook: {url: 'ftp://x'}}", []string{`endpoints[0].webhook.url: scheme must be http or https`}},
		{"endpoint unknown field", "endpoints:\n- {name: hook, type: webhook, webhok: {url: 'http://x'}}", []string{`endpoints[0]: unknown field "webhok"`}},
		{"several errors", "routes:\n- {name: '', source: X, endpointNames: []}", []string{"routes[0].name: missing", `routes[0].source: "X"`, "routes[0].endpointNames: missing"}},
		{"limits count", "limits: {routes: 0}", []string{"limits.routes: 0 is not a whole number"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := ParseYAML([]byte(tt.yaml))
			if err == nil {
				var l Limits
				if doc.Limits != nil {
					l = *doc.Limits
				}
				_, err = Check(doc.Config, l)
			}
			if err == nil {
				t.Fatal("no error")
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error %v is not Errors", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestLimits(t *testing.T) {
	var c Config
	for i := range 3 {
		c.Routes = append(c.Routes, Route{Name: "r" + string(rune('a'+i)), Source: "devicemessages", EndpointNames: []string{"events"}})
	}
	if _, err := Check(c, Limits{Routes: 2}); err == nil || !strings.Contains(err.Error(), "routes: 3 routes, the limit is 2") {
		t.Fatalf("over the limit: %v", err)
	}
	got, err := Check(c, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Routes[0].Source != SourceDeviceMessages {
		t.Errorf("source not normalized: %q", got.Routes[0].Source)
	}
	for i := range 11 {
		c.Enrichments = append(c.Enrichments, Enrichment{Key: "k" + string(rune('a'+i)), Value: "v", EndpointNames: []string{"events"}})
	}
	if _, err := Check(c, Limits{}); err == nil || !strings.Contains(err.Error(), "11 enrichments, the limit is 10") {
		t.Fatalf("enrichments over IoT Hub's limit: %v", err)
	}
	if _, err := Check(c, Limits{Enrichments: 20}); err != nil {
		t.Fatalf("raised limit: %v", err)
	}
}

func TestParseFileSection(t *testing.T) {
	file := `
data-dir: /var/lib/tether
mqtt-addr: ":8883"
routing:
  limits: {routes: 200}
  routes:
    - name: alerts
      source: DeviceMessages
      condition: "level = 'critical'"
      endpointNames: [events]
  fallbackRoute: {isEnabled: false}
  enrichments:
    - {key: hub, value: $iothubname, endpointNames: [events]}
`
	doc, present, err := ParseFile([]byte(file))
	if err != nil || !present {
		t.Fatalf("present=%v err=%v", present, err)
	}
	if doc.Limits == nil || doc.Limits.Routes != 200 || len(doc.Config.Routes) != 1 || doc.Config.FallbackRoute.Enabled() ||
		doc.Config.Enrichments[0].Value != "$iothubname" {
		t.Fatalf("doc = %+v", doc)
	}
	if _, present, err := ParseFile([]byte("data-dir: x\n")); err != nil || present {
		t.Fatalf("no section: present=%v err=%v", present, err)
	}
	_, _, err = ParseFile([]byte("routing:\n  routes: {}\n"))
	if err == nil || !strings.Contains(err.Error(), "routing.routes: expected a list") {
		t.Fatalf("paths in the file carry the routing. prefix: %v", err)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	doc, err := ParseJSON([]byte(`{"routes":[{"name":"a","source":"DeviceMessages","condition":"x = 1","endpointNames":["events"],"isEnabled":false}],
		"enrichments":[{"key":"k","value":"v","endpointNames":["events"]}], "source":"api", "limits": {"routes": 100}}`))
	if err != nil {
		t.Fatal(err)
	}
	if doc.Config.Routes[0].Enabled() || doc.Limits.Routes != 100 {
		t.Fatalf("doc = %+v", doc)
	}
	if _, err := ParseJSON([]byte(`{"routes": [1]}`)); err == nil || !strings.Contains(err.Error(), "routes[0]: expected a mapping, found a number") {
		t.Fatalf("err = %v", err)
	}
}

// TestDocumentedExample keeps the README's example valid.
func TestDocumentedExample(t *testing.T) {
	doc, present, err := ParseFile([]byte(`
routing:
  limits: {routes: 100, endpoints: 10, enrichments: 10}
  endpoints:
    - {name: alerts-hook, type: webhook, webhook: {url: "https://example.com/alerts"}}
  routes:
    - name: critical
      source: DeviceMessages
      condition: "level = 'critical' AND $twin.tags.site = 'Lyon'"
      endpointNames: [alerts-hook]
      isEnabled: true
    - {name: everything, source: DeviceMessages, endpointNames: [events]}
  fallbackRoute: {isEnabled: true, endpointNames: [events]}
  enrichments:
    - {key: hub, value: $iothubname, endpointNames: [events, alerts-hook]}
    - {key: site, value: $twin.tags.site, endpointNames: [alerts-hook]}
`))
	if err != nil || !present {
		t.Fatal(present, err)
	}
	if _, err := Check(doc.Config, *doc.Limits); err != nil {
		t.Fatal(err)
	}
}
