package server

import (
	"context"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/c2d"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/mqtt"
)

func TestC2DTopic(t *testing.T) {
	exp := time.Date(3237, 7, 19, 23, 6, 40, 0, time.UTC)
	m := c2d.Message{MessageID: "6b82-f7", CorrelationID: "cor id", UserID: "u", To: "/devices/dev1/messages/devicebound",
		ContentType: "application/json", ContentEncoding: "utf-8", ExpiryTime: exp, Ack: c2d.AckPositive,
		Properties: map[string]string{"path": "/a/b?c=d&e", "custom1": "value1", "empty": ""}}
	got := c2dTopic("dev1", m)
	want := "devices/dev1/messages/devicebound/" +
		"%24.mid=6b82-f7&%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound&%24.cid=cor%20id&%24.uid=u&%24.ct=application%2Fjson&%24.ce=utf-8" +
		"&%24.exp=3237-07-19T23%3A06%3A40.0000000Z&iothub-ack=positive&custom1=value1&empty=&path=%2Fa%2Fb%3Fc%3Dd%26e"
	if got != want {
		t.Fatalf("topic\n got %s\nwant %s", got, want)
	}
	// Parsed as the Node SDK does: the bag is segment 4, split on & and =, each side decoded.
	bag := strings.Split(got, "/")[4]
	props := map[string]string{}
	for _, kv := range strings.Split(bag, "&") {
		k, v, _ := strings.Cut(kv, "=")
		dk, _ := url.PathUnescape(k)
		dv, _ := url.PathUnescape(v)
		props[dk] = dv
	}
	if props["$.mid"] != "6b82-f7" || props["path"] != "/a/b?c=d&e" || props["$.exp"] != "3237-07-19T23:06:40.0000000Z" || props["$.cid"] != "cor id" {
		t.Fatalf("decoded %v", props)
	}
	// No properties at all: still $.to, and the trailing '/' the SDKs require.
	if got := c2dTopic("dev1", c2d.Message{}); got != "devices/dev1/messages/devicebound/%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound" {
		t.Fatalf("bare topic %s", got)
	}
}

// fakeOutbound records publishes; acks are driven by the test.
type fakeOutbound struct {
	mu     sync.Mutex
	pubs   []string // message ids
	acks   []func(error)
	closed bool
	got    chan struct{}
}

func (o *fakeOutbound) Publish(ctx context.Context, topic string, payload []byte, acked func(error)) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return mqtt.ErrConnectionClosed
	}
	o.pubs = append(o.pubs, string(payload))
	o.acks = append(o.acks, acked)
	select {
	case o.got <- struct{}{}:
	default:
	}
	return nil
}

// end simulates the connection ending: pending acks fail.
func (o *fakeOutbound) end() {
	o.mu.Lock()
	o.closed = true
	acks := o.acks
	o.acks = nil
	o.mu.Unlock()
	for _, a := range acks {
		if a != nil {
			a(mqtt.ErrConnectionClosed)
		}
	}
}

func (o *fakeOutbound) published() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.pubs...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMQTTC2DDeliveryCompletesAndReleases(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := c2d.Open(db, c2d.Options{HubName: "hub", SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	for i := range c2dInflight + 2 {
		if _, err := store.Send(ctx, "dev1", c2d.Message{Body: []byte{byte('a' + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	newDevice := func() *mqttDevice {
		return &mqttDevice{origin: hub.Origin{Identity: auth.DeviceIdentity{DeviceID: "dev1"}},
			c2d: store, logger: slog.New(slog.DiscardHandler)}
	}

	// First connection: c2dInflight publishes, no more until one is acknowledged.
	d := newDevice()
	out := &fakeOutbound{got: make(chan struct{}, 1)}
	d.C2DSubscribed(out)
	waitFor(t, "the in-flight window", func() bool { return len(out.published()) == c2dInflight })
	time.Sleep(50 * time.Millisecond)
	if n := len(out.published()); n != c2dInflight {
		t.Fatalf("%d publishes without acks, want %d", n, c2dInflight)
	}
	out.mu.Lock()
	first := out.acks[0]
	out.acks[0] = nil
	out.mu.Unlock()
	first(nil) // PUBACK of "a": complete
	waitFor(t, "the next publish", func() bool { return len(out.published()) == c2dInflight+1 })
	waitFor(t, "the completion", func() bool { return store.PendingCount("dev1") == c2dInflight+1 })
	// The connection ends with c2dInflight messages unacknowledged: they are released.
	out.end()
	d.endC2D()

	// A new connection gets them at once, in order, starting with "b".
	d2 := newDevice()
	out2 := &fakeOutbound{got: make(chan struct{}, 1)}
	d2.C2DSubscribed(out2)
	waitFor(t, "redelivery", func() bool { return len(out2.published()) == c2dInflight })
	if got := out2.published(); got[0] != "b" || got[1] != "c" {
		t.Fatalf("redelivered %v, want b, c, ... in order", got)
	}
	m, ok, err := store.Receive(ctx, "dev1")
	if err != nil || !ok || string(m.Body) != string(rune('a'+c2dInflight+1)) {
		t.Fatalf("the message beyond the window: %q %v %v", m.Body, ok, err)
	}
	// Unsubscribe stops the loop; the acks still complete.
	d2.C2DUnsubscribed()
	out2.mu.Lock()
	acks := out2.acks
	out2.mu.Unlock()
	for _, a := range acks {
		a(nil)
	}
	if err := store.Complete(ctx, "dev1", m.LockToken); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all completed", func() bool { return store.PendingCount("dev1") == 0 })
	d2.endC2D()
}
