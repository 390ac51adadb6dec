package endpoint

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tetherhub/tether/internal/telemetry"
)

// The cursor survives Close and a new dispatcher: messages appended while the hub was down are
// delivered after the restart, none twice.
func TestDispatcherCursorSurvivesRestart(t *testing.T) {
	e := newEnv(t, telemetry.Options{Partitions: 2})
	rc := newReceiver(t, "s3cret")
	ts, ca := tlsServer(t, rc)
	spec := webhookSpec("hook", ts.URL, ca, false)
	e.apply(spec)
	e.send(10, []string{"hook"}, "a", "b")
	waitFor(t, 10*time.Second, "first 20", func() bool { return rc.seq.count("a")+rc.seq.count("b") == 20 })
	if err := e.d.Close(); err != nil {
		t.Fatal(err)
	}
	e.send(10, []string{"hook"}, "a", "b") // while the dispatcher is down
	e.open()
	e.apply(spec)
	e.send(5, []string{"hook"}, "a", "b")
	waitFor(t, 10*time.Second, "all 50", func() bool { return rc.seq.count("a")+rc.seq.count("b") == 50 })
	time.Sleep(100 * time.Millisecond)
	if n := rc.posts.Load(); n != 50 {
		t.Errorf("%d posts, want 50: redelivered after a clean restart", n)
	}
}

// A dead endpoint does not hold back another endpoint reading the same log.
func TestDeadEndpointDoesNotBlockOthers(t *testing.T) {
	e := newEnv(t, telemetry.Options{Partitions: 2})
	good := newReceiver(t, "s3cret")
	bad := newReceiver(t, "s3cret")
	bad.fail.Store(true)
	gts, gca := tlsServer(t, good)
	bts, bca := tlsServer(t, bad)
	e.apply(webhookSpec("good", gts.URL, gca, false), webhookSpec("bad", bts.URL, bca, false))
	e.send(50, []string{"good", "bad"}, "a", "b", "c")
	waitFor(t, 10*time.Second, "good endpoint", func() bool {
		return good.seq.count("a")+good.seq.count("b")+good.seq.count("c") == 150
	})
	waitFor(t, 5*time.Second, "bad endpoint dead", func() bool { return e.health("bad").State == StateDead })
	e.send(50, []string{"good", "bad"}, "a", "b", "c")
	waitFor(t, 10*time.Second, "good endpoint again", func() bool {
		return good.seq.count("a")+good.seq.count("b")+good.seq.count("c") == 300
	})
	h := e.health("bad")
	if h.Lag != 300 || !strings.Contains(h.LastError, "500") {
		t.Errorf("bad endpoint health = %+v, want lag 300 and the 500 as last error", h)
	}
	if g := e.health("good"); g.State != StateHealthy {
		t.Errorf("good endpoint = %+v", g)
	}
}

func TestApplyAddRemoveChange(t *testing.T) {
	e := newEnv(t, telemetry.Options{Partitions: 2})
	r1, r2, r3 := newReceiver(t, "s3cret"), newReceiver(t, "s3cret"), newReceiver(t, "s3cret")
	r1.seq.gaps, r2.seq.gaps, r3.seq.gaps = true, true, true
	ts1, ca1 := tlsServer(t, r1)
	ts2, ca2 := tlsServer(t, r2)
	ts3, ca3 := tlsServer(t, r3)
	e.send(5, []string{"one", "two"}, "a") // before any endpoint exists
	e.apply(webhookSpec("one", ts1.URL, ca1, false))
	e.send(5, []string{"one", "two"}, "a")
	waitFor(t, 5*time.Second, "one", func() bool { return len(r1.seq.seen("a")) == 5 })

	// Add: "two" starts at the end of the log.
	e.apply(webhookSpec("one", ts1.URL, ca1, false), webhookSpec("two", ts2.URL, ca2, false))
	e.send(5, []string{"one", "two"}, "a")
	waitFor(t, 5*time.Second, "two", func() bool { return len(r2.seq.seen("a")) == 5 })
	if got := r2.seq.seen("a")[0]; got != 10 {
		t.Errorf("new endpoint started at message %d, want 10 (the end of the log)", got)
	}

	// Change: "two" now posts elsewhere, from its cursor. Remove: "one".
	e.send(5, []string{"one", "two"}, "a") // maybe delivered to r2 before the change, or to r3 after
	e.apply(webhookSpec("two", ts3.URL, ca3, false))
	e.send(5, []string{"one", "two"}, "a")
	waitFor(t, 5*time.Second, "changed endpoint", func() bool {
		// At-least-once: a post cancelled by the change may reach both receivers.
		distinct := map[int]bool{}
		for _, n := range append(r2.seq.seen("a"), r3.seq.seen("a")...) {
			distinct[n] = true
		}
		return len(distinct) == 15
	})
	if all := r3.seq.seen("a"); all[len(all)-1] != 24 {
		t.Errorf("changed endpoint got %v, want up to 24", all)
	}
	if hs := e.d.Health(); len(hs) != 1 || hs[0].Name != "two" {
		t.Errorf("health after removal = %+v", hs)
	}
	if _, ok, _ := e.d.cursors.load("one"); ok {
		t.Error("cursors of the removed endpoint are still there")
	}
	if _, ok, _ := e.d.cursors.load("two"); !ok {
		t.Error("cursors of the changed endpoint are gone")
	}
	// Invalid specs change nothing.
	err := e.d.Apply(context.Background(), []Spec{{Name: "events", Type: TypeWebhook, Webhook: &WebhookSpec{URL: "ftp://x"}}})
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("Apply(invalid) = %v, want a FieldError", err)
	}
	if hs := e.d.Health(); len(hs) != 1 {
		t.Errorf("invalid Apply changed the endpoints: %+v", hs)
	}
}

// Retention overtaking a dead endpoint is counted, and delivery goes on from the first retained
// record.
func TestRetentionOvertakesDeadEndpoint(t *testing.T) {
	e := newEnv(t, telemetry.Options{Partitions: 1, SegmentBytes: 4096, MaxBytes: 8192, RetentionInterval: time.Hour})
	rc := newReceiver(t, "s3cret")
	rc.seq.gaps = true
	rc.fail.Store(true)
	ts, ca := tlsServer(t, rc)
	e.apply(webhookSpec("hook", ts.URL, ca, false))
	e.send(200, []string{"hook"}, "a")
	waitFor(t, 5*time.Second, "failing", func() bool { return e.health("hook").State != StateUnknown })
	if err := e.log.EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	info, _ := e.log.Info(0)
	if info.First == 0 {
		t.Fatal("retention removed nothing; test setup is wrong")
	}
	rc.fail.Store(false)
	waitFor(t, 10*time.Second, "catch-up", func() bool { h := e.health("hook"); return h.Lag == 0 })
	h := e.health("hook")
	if h.Lost == 0 {
		t.Errorf("health = %+v, want lost records counted", h)
	}
	rc.mu.Lock()
	got := len(rc.bodies)
	rc.mu.Unlock()
	// The batch read before retention ran (up to 100 records) is delivered, then from First on.
	if int64(got)+h.Lost < 200 {
		t.Errorf("delivered %d + lost %d < 200", got, h.Lost)
	}
	if want := 200 - info.First; int64(got) < want {
		t.Errorf("delivered %d, want at least the %d retained", got, want)
	}
}

func TestSpecValidate(t *testing.T) {
	ok := Spec{Name: "a.b-c_1", Type: TypeStorage, Storage: &StorageSpec{Directory: "/tmp/x"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	cases := []struct {
		spec  Spec
		field string
	}{
		{Spec{Name: "events", Type: TypeWebhook, Webhook: &WebhookSpec{URL: "https://x"}}, "name"},
		{Spec{Name: "FileNotifications", Type: TypeWebhook, Webhook: &WebhookSpec{URL: "https://x"}}, "name"},
		{Spec{Name: "$default", Type: TypeWebhook, Webhook: &WebhookSpec{URL: "https://x"}}, "name"},
		{Spec{Name: strings.Repeat("a", 65), Type: TypeWebhook, Webhook: &WebhookSpec{URL: "https://x"}}, "name"},
		{Spec{Name: "a b", Type: TypeWebhook, Webhook: &WebhookSpec{URL: "https://x"}}, "name"},
		{Spec{Name: "a", Type: "kafka"}, "type"},
		{Spec{Name: "a", Type: TypeWebhook}, "webhook"},
		{Spec{Name: "a", Type: TypeWebhook, Webhook: &WebhookSpec{URL: "https://x"}, NATS: &NATSSpec{URL: "nats://x"}}, "nats"},
		{Spec{Name: "a", Type: TypeWebhook, Webhook: &WebhookSpec{URL: "ftp://x"}}, "webhook.url"},
		{Spec{Name: "a", Type: TypeWebhook, Webhook: &WebhookSpec{URL: "https://x", Headers: map[string]string{"a b": "c"}}}, "webhook.headers"},
		{Spec{Name: "a", Type: TypeStorage, Storage: &StorageSpec{Directory: "/x", FileNameFormat: "{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}"}}, "storage.fileNameFormat"},
		{Spec{Name: "a", Type: TypeStorage, Storage: &StorageSpec{Directory: "/x", BatchFrequencyInSeconds: 10}}, "storage.batchFrequencyInSeconds"},
		{Spec{Name: "a", Type: TypeStorage, Storage: &StorageSpec{Directory: "/x", MaxChunkSizeInBytes: 100}}, "storage.maxChunkSizeInBytes"},
		{Spec{Name: "a", Type: TypeStorage, Storage: &StorageSpec{Directory: "/x", Encoding: "parquet"}}, "storage.encoding"},
		{Spec{Name: "a", Type: TypeNATS, NATS: &NATSSpec{URL: "nats://x", Subject: "a.>"}}, "nats.subject"},
		{Spec{Name: "a", Type: TypePostgres, Postgres: &PostgresSpec{ConnectionString: "x", Table: "Drop Table"}}, "postgres.table"},
		{Spec{Name: "a", Type: TypeWebhook, Webhook: &WebhookSpec{URL: "https://x"}, Retry: &RetrySpec{InitialInterval: Duration(time.Minute), MaxInterval: Duration(time.Second)}}, "retry.maxInterval"},
	}
	for _, c := range cases {
		err := c.spec.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("Validate(%+v) = %v, want an error on %s", c.spec, err, c.field)
		}
	}
	// Beyond IoT Hub's ranges on request.
	small := Spec{Name: "s", Type: TypeStorage, Storage: &StorageSpec{Directory: "/x", BatchFrequencyInSeconds: 1, MaxChunkSizeInBytes: 100, BeyondIoTHub: true}}
	if err := small.Validate(); err != nil {
		t.Errorf("beyondIoTHub: %v", err)
	}
	dup := []Spec{ok, ok}
	dup[1].Name = "A.B-C_1"
	if err := ValidateAll(dup); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("ValidateAll(duplicates) = %v", err)
	}
}

func TestSpecJSONAndYAML(t *testing.T) {
	const y = `
name: hook
type: webhook
webhook:
  url: https://example.com/in
  batch: true
  timeout: 10s
retry:
  initialInterval: 500ms
  maxInterval: 2m
`
	var fromYAML Spec
	if err := yaml.Unmarshal([]byte(y), &fromYAML); err != nil {
		t.Fatal(err)
	}
	const j = `{"name":"hook","type":"webhook","webhook":{"url":"https://example.com/in","batch":true,"timeout":"10s"},
		"retry":{"initialInterval":"500ms","maxInterval":"2m"}}`
	var fromJSON Spec
	if err := json.Unmarshal([]byte(j), &fromJSON); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromYAML, fromJSON) || time.Duration(fromJSON.Webhook.Timeout) != 10*time.Second ||
		time.Duration(fromJSON.Retry.MaxInterval) != 2*time.Minute {
		t.Errorf("YAML %+v\nJSON %+v", fromYAML, fromJSON)
	}
	if err := fromJSON.Validate(); err != nil {
		t.Error(err)
	}
	out, _ := json.Marshal(fromJSON)
	var back Spec
	if err := json.Unmarshal(out, &back); err != nil || !reflect.DeepEqual(back, fromJSON) {
		t.Errorf("round trip %s: %v", out, err)
	}
	if err := json.Unmarshal([]byte(`{"webhook":{"timeout":"soon"}}`), &fromJSON); err == nil {
		t.Error("bad duration accepted")
	}
}
