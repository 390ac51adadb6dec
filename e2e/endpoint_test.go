package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/routing/endpoint"
)

// TestWebhookEndpointThroughBinary: a route sends matching telemetry to a webhook endpoint; the
// real hub delivers it, signed, with enrichments, while the built-in endpoint keeps the rest;
// a webhook that fails at first receives everything, in order, once it recovers.
func TestWebhookEndpointThroughBinary(t *testing.T) {
	const secret = "s3cret"
	var (
		mu       sync.Mutex
		failing  = true
		received []map[string]string
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if failing {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		if err := endpoint.VerifySignature([]byte(secret), body, r.Header.Get("X-Tether-Signature")); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			t.Errorf("bad signature on %s: %v", body, err)
			return
		}
		received = append(received, map[string]string{
			"body":   string(body),
			"device": r.Header.Get("iothub-connection-device-id"),
			"site":   r.Header.Get("iothub-app-site"),
			"level":  r.Header.Get("iothub-app-level"),
		})
	}))
	defer hook.Close()

	dir := t.TempDir()
	config := filepath.Join(dir, "tether.yaml")
	writeTestFile(t, config, `routing:
  endpoints:
    - name: alerts
      type: webhook
      webhook: {url: "`+hook.URL+`", secret: "`+secret+`"}
      retry: {initialInterval: 100ms, maxInterval: 200ms}
  routes:
    - {name: critical, source: DeviceMessages, condition: "level = 'critical'", endpointNames: [alerts]}
  enrichments:
    - {key: site, value: plant-7, endpointNames: [alerts]}
`)
	h := startHub(t, "--config", config)
	conn := h.createDevice("press-1")
	c, err := h.mqttDevice(t, "press-1", conn, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	levels := []string{"critical", "info", "critical", "critical"}
	for i, level := range levels {
		tok := c.Publish("devices/press-1/messages/events/level="+level, 1, false, []byte{byte('0' + i)})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	c.Disconnect(100)

	time.Sleep(time.Second) // deliveries fail meanwhile
	var health []api.EndpointHealth
	if err := json.Unmarshal([]byte(h.mustCLI("route", "health", "--json")), &health); err != nil {
		t.Fatal(err)
	}
	if len(health) != 1 || health[0].Name != "alerts" || health[0].State == "healthy" || health[0].LastError == "" || health[0].Lag == 0 {
		t.Errorf("health while the webhook fails = %+v, want alerts not healthy, with its error and a lag", health)
	}
	mu.Lock()
	failing = false
	mu.Unlock()

	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(received)
		mu.Unlock()
		if n >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if err := json.Unmarshal([]byte(h.mustCLI("route", "health", "--json")), &health); err != nil {
		t.Fatal(err)
	}
	if len(health) != 1 || health[0].State != "healthy" {
		t.Errorf("health after recovery = %+v, want healthy", health)
	}
	if len(received) != 3 {
		t.Fatalf("webhook received %d messages, want 3: %v", len(received), received)
	}
	for i, want := range []string{"0", "2", "3"} {
		got := received[i]
		if got["body"] != want || got["device"] != "press-1" || got["site"] != "plant-7" || got["level"] != "critical" {
			t.Errorf("delivery %d = %v, want body %s from press-1 enriched with site", i, got, want)
		}
	}
	// The fallback route keeps the unmatched message in the built-in endpoint.
	events := h.events()
	if len(events) != 1 || *events[0].Body != "1" {
		data, _ := json.Marshal(events)
		t.Errorf("built-in endpoint holds %s, want only the info message", data)
	}
}
