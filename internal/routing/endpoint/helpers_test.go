package endpoint

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/telemetry"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func openLog(t testing.TB, dir string, opts telemetry.Options) *telemetry.Log {
	t.Helper()
	opts.Dir = dir
	opts.NoSync = true
	if opts.Partitions == 0 {
		opts.Partitions = 2
	}
	l, err := telemetry.Open(opts)
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	return l
}

func openDB(t testing.TB, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second, NoSync: true})
	if err != nil {
		t.Fatalf("open db: %v", err)
	}
	return db
}

// env is a log, a metadata database and a dispatcher over them.
type env struct {
	t    testing.TB
	dir  string
	log  *telemetry.Log
	db   *bbolt.DB
	d    *Dispatcher
	cfg  Config
	mu   sync.Mutex
	sent map[string]int // per device: messages appended
}

func newEnv(t testing.TB, opts telemetry.Options) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, sent: map[string]int{}}
	e.log = openLog(t, filepath.Join(dir, "log"), opts)
	e.db = openDB(t, filepath.Join(dir, "meta.db"))
	e.cfg = Config{
		Log: e.log, DB: e.db, HubName: "testhub", Logger: testLogger(t),
		UnhealthyAfter: 300 * time.Millisecond, DeadAfter: 800 * time.Millisecond, DeadRetryInterval: 300 * time.Millisecond,
	}
	e.open()
	t.Cleanup(func() {
		if e.d != nil {
			e.d.Close()
		}
		e.db.Close()
		e.log.Close()
	})
	return e
}

func (e *env) open() {
	e.t.Helper()
	d, err := NewDispatcher(e.cfg)
	if err != nil {
		e.t.Fatalf("NewDispatcher: %v", err)
	}
	e.d = d
}

func (e *env) apply(specs ...Spec) {
	e.t.Helper()
	if err := e.d.Apply(context.Background(), specs); err != nil {
		e.t.Fatalf("Apply: %v", err)
	}
}

// send appends n messages per device routed to endpoints; message i of device dev has body
// {"device":dev,"n":i} and property n=i.
func (e *env) send(n int, endpoints []string, devices ...string) {
	e.t.Helper()
	ctx := context.Background()
	for range n {
		for _, dev := range devices {
			e.mu.Lock()
			i := e.sent[dev]
			e.sent[dev]++
			e.mu.Unlock()
			m := testMessage(dev, i, endpoints)
			data, err := m.MarshalBinary()
			if err != nil {
				e.t.Fatal(err)
			}
			if _, err := e.log.Append(ctx, dev, m.EnqueuedTime, data); err != nil {
				e.t.Fatalf("append: %v", err)
			}
		}
	}
}

func testMessage(dev string, i int, endpoints []string) *message.Message {
	m := &message.Message{
		MessageID:                  fmt.Sprintf("%s-%d", dev, i),
		ContentType:                "application/json",
		ContentEncoding:            "utf-8",
		ConnectionDeviceID:         dev,
		ConnectionAuthGenerationID: "636930642531278483",
		ConnectionAuthMethod:       `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`,
		EnqueuedTime:               time.Now().UTC(),
		Source:                     message.SourceTelemetry,
		Properties:                 map[string]string{"n": fmt.Sprint(i), "level": "storage"},
		Body:                       fmt.Appendf(nil, `{"device":%q,"n":%d}`, dev, i),
	}
	if endpoints != nil { // nil: stored before routing existed (built-in endpoint only)
		m.Routing = &message.Routing{Routes: []string{"r"}, Endpoints: endpoints}
	}
	return m
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) health(name string) EndpointHealth {
	for _, h := range e.d.Health() {
		if h.Name == name {
			return h
		}
	}
	e.t.Fatalf("no health for endpoint %q", name)
	return EndpointHealth{}
}

// fastRetry keeps test retries quick.
var fastRetry = &RetrySpec{InitialInterval: Duration(10 * time.Millisecond), MaxInterval: Duration(50 * time.Millisecond)}

// seqChecker checks per-device order: a device's n never goes backwards except by redelivery of
// an already seen prefix (at-least-once), and counts distinct messages.
type seqChecker struct {
	gaps bool // a receiver that starts mid-stream or after lost records: order only
	mu   sync.Mutex
	next map[string]int
	all  map[string][]int
}

func newSeqChecker() *seqChecker { return &seqChecker{next: map[string]int{}, all: map[string][]int{}} }

// add records message n of dev; it returns an error if n skips ahead (a gap: lost message).
func (c *seqChecker) add(dev string, n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all[dev] = append(c.all[dev], n)
	switch {
	case n == c.next[dev]:
		c.next[dev]++
	case n > c.next[dev] && c.gaps:
		c.next[dev] = n + 1
	case n > c.next[dev]:
		return fmt.Errorf("device %s: got message %d, expected %d (gap)", dev, n, c.next[dev])
	}
	return nil
}

func (c *seqChecker) count(dev string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next[dev]
}

// seen returns a copy of everything received from dev, redeliveries included.
func (c *seqChecker) seen(dev string) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.all[dev]...)
}
