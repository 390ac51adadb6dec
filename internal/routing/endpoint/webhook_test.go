package endpoint

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/telemetry"
)

// receiver is a webhook endpoint that checks what it gets.
type receiver struct {
	t       testing.TB
	secret  []byte
	fail    atomic.Bool // answer 500
	seq     *seqChecker
	mu      sync.Mutex
	headers []http.Header
	bodies  [][]byte
	posts   atomic.Int64
}

func newReceiver(t testing.TB, secret string) *receiver {
	return &receiver{t: t, secret: []byte(secret), seq: newSeqChecker()}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.posts.Add(1)
	body, _ := io.ReadAll(r.Body)
	if rc.fail.Load() {
		http.Error(w, "down for maintenance", http.StatusInternalServerError)
		return
	}
	if err := VerifySignature(rc.secret, body, r.Header.Get(HeaderSignature)); err != nil {
		rc.t.Errorf("signature: %v (header %q)", err, r.Header.Get(HeaderSignature))
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	rc.mu.Lock()
	rc.headers = append(rc.headers, r.Header.Clone())
	rc.bodies = append(rc.bodies, body)
	rc.mu.Unlock()
	if r.Header.Get("aeg-event-type") == "Notification" {
		var evs []EventGridEvent
		if err := json.Unmarshal(body, &evs); err != nil {
			rc.t.Errorf("batch body: %v", err)
			return
		}
		for _, ev := range evs {
			var b struct {
				Device string `json:"device"`
				N      int    `json:"n"`
			}
			if err := json.Unmarshal(ev.Data.Body, &b); err != nil {
				rc.t.Errorf("event body %s: %v", ev.Data.Body, err)
			}
			if err := rc.seq.add(b.Device, b.N); err != nil {
				rc.t.Error(err)
			}
		}
		return
	}
	dev := r.Header.Get("iothub-connection-device-id")
	n, err := strconv.Atoi(r.Header.Get("iothub-app-n"))
	if err != nil {
		rc.t.Errorf("iothub-app-n: %v", err)
	}
	if err := rc.seq.add(dev, n); err != nil {
		rc.t.Error(err)
	}
}

// tlsServer starts an HTTPS server and writes its certificate as a CA file.
func tlsServer(t testing.TB, h http.Handler) (*httptest.Server, string) {
	ts := httptest.NewTLSServer(h)
	t.Cleanup(ts.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ts, ca
}

func webhookSpec(name, url, ca string, batch bool) Spec {
	return Spec{Name: name, Type: TypeWebhook, Retry: fastRetry,
		Webhook: &WebhookSpec{URL: url, CAFile: ca, Secret: "s3cret", Batch: batch, Timeout: Duration(5 * time.Second),
			Headers: map[string]string{"Authorization": "Bearer abc"}}}
}

func TestWebhookTLSSignedHeadersInOrder(t *testing.T) {
	e := newEnv(t, telemetry.Options{Partitions: 2})
	rc := newReceiver(t, "s3cret")
	ts, ca := tlsServer(t, rc)
	e.apply(webhookSpec("hook", ts.URL, ca, false))
	devices := []string{"dev-a", "dev-b", "dev-c"}
	e.send(20, []string{"hook"}, devices...)
	e.send(5, []string{"other"}, "dev-x") // not for this endpoint
	e.send(5, nil, "dev-x")               // built-in only
	e.send(5, []string{"hook", "events"}, devices...)
	waitFor(t, 10*time.Second, "all messages", func() bool {
		for _, d := range devices {
			if rc.seq.count(d) < 25 {
				return false
			}
		}
		return true
	})
	if n := rc.seq.count("dev-x"); n != 0 {
		t.Errorf("%d messages not routed to the endpoint were delivered", n)
	}
	rc.mu.Lock()
	h := rc.headers[0]
	rc.mu.Unlock()
	for k, want := range map[string]string{
		"Content-Type":                         "application/json",
		"Iothub-Content-Type":                  "application/json",
		"Iothub-Content-Encoding":              "utf-8",
		"Iothub-Connection-Auth-Method":        `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`,
		"Iothub-Connection-Auth-Generation-Id": "636930642531278483",
		"Iothub-Message-Source":                "Telemetry",
		"Iothub-App-Level":                     "storage",
		"Authorization":                        "Bearer abc",
		HeaderEndpoint:                         "hook",
		HeaderHub:                              "testhub",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if h.Get("Message-Id") == "" || h.Get("Iothub-Enqueuedtime") == "" || h.Get(HeaderDeliveryID) == "" {
		t.Errorf("missing message-id / iothub-enqueuedtime / delivery id in %v", h)
	}
	if _, err := time.Parse(timeFormat, h.Get("Iothub-Enqueuedtime")); err != nil {
		t.Errorf("iothub-enqueuedtime: %v", err)
	}
	waitFor(t, 5*time.Second, "lag 0", func() bool { return e.health("hook").Lag == 0 })
	hl := e.health("hook")
	if hl.State != StateHealthy || hl.Delivered != 75 {
		t.Errorf("health = %+v, want healthy with 75 delivered", hl)
	}
	if n := rc.posts.Load(); n != 75 {
		t.Errorf("%d posts, want 75 (each message once)", n)
	}
}

func TestWebhookBatchEventGridSchema(t *testing.T) {
	e := newEnv(t, telemetry.Options{Partitions: 2})
	rc := newReceiver(t, "s3cret")
	ts, ca := tlsServer(t, rc)
	e.apply(webhookSpec("batch", ts.URL, ca, true))
	e.send(50, []string{"batch"}, "d1", "d2", "d3", "d4")
	waitFor(t, 10*time.Second, "all messages", func() bool {
		return rc.seq.count("d1")+rc.seq.count("d2")+rc.seq.count("d3")+rc.seq.count("d4") == 200
	})
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.bodies) >= 200 {
		t.Errorf("%d posts for 200 messages: not batched", len(rc.bodies))
	}
	var evs []EventGridEvent
	if err := json.Unmarshal(rc.bodies[0], &evs); err != nil {
		t.Fatal(err)
	}
	ev := evs[0]
	if ev.EventType != "Microsoft.Devices.DeviceTelemetry" || ev.Subject == "" || ev.Data.SystemProperties["iothub-connection-device-id"] == "" ||
		ev.Data.SystemProperties["iothub-content-type"] != "application/json" || ev.Data.Properties["level"] != "storage" || ev.MetadataVersion != "1" {
		t.Errorf("event = %+v", ev)
	}
}

// An endpoint that is down gets everything, in order, when it comes back; meanwhile its health
// goes degraded → unhealthy → dead, and back to healthy.
func TestWebhookDownThenUpCatchesUp(t *testing.T) {
	e := newEnv(t, telemetry.Options{Partitions: 2})
	rc := newReceiver(t, "s3cret")
	rc.fail.Store(true)
	ts, ca := tlsServer(t, rc)
	e.apply(webhookSpec("hook", ts.URL, ca, false))
	devices := []string{"a", "b", "c", "d"}
	e.send(10, []string{"hook"}, devices...)
	waitFor(t, 5*time.Second, "degraded", func() bool { return e.health("hook").State == StateDegraded })
	if h := e.health("hook"); h.LastError == "" || h.Lag != 40 {
		t.Errorf("health while down = %+v, want an error and lag 40", h)
	}
	e.send(10, []string{"hook"}, devices...)
	waitFor(t, 5*time.Second, "dead", func() bool { return e.health("hook").State == StateDead })
	e.send(10, []string{"hook"}, devices...)
	rc.fail.Store(false)
	waitFor(t, 10*time.Second, "catch-up", func() bool {
		for _, d := range devices {
			if rc.seq.count(d) < 30 {
				return false
			}
		}
		return true
	})
	waitFor(t, 5*time.Second, "healthy", func() bool { h := e.health("hook"); return h.State == StateHealthy && h.Lag == 0 })
}
