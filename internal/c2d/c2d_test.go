package c2d

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSendReceiveCompleteFIFO(t *testing.T) {
	e := newEnv(t, nil)
	var sent []Message
	for i := range 3 {
		sent = append(sent, e.send("dev1", Message{
			MessageID:       fmt.Sprintf("m%d", i),
			CorrelationID:   "corr",
			UserID:          "svc",
			ContentType:     "application/json",
			ContentEncoding: "utf-8",
			Ack:             AckFull,
			Properties:      map[string]string{"k": fmt.Sprint(i), "x-y": "a.b"},
			Body:            []byte(fmt.Sprintf(`{"n":%d}`, i)),
		}))
	}
	if e.s.PendingCount("dev1") != 3 {
		t.Fatalf("pending = %d", e.s.PendingCount("dev1"))
	}
	for i, want := range sent {
		if want.SequenceNumber != uint64(i+1) {
			t.Fatalf("seq %d = %d", i, want.SequenceNumber)
		}
		got := e.receive("dev1")
		if got.LockToken == "" || !got.LockedUntil.Equal(e.clock.Now().Add(time.Minute)) {
			t.Fatalf("lock = %q until %v", got.LockToken, got.LockedUntil)
		}
		want.LockToken, want.LockedUntil = got.LockToken, got.LockedUntil
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("received\n%+v\nwant\n%+v", got, want)
		}
		if got.To != "/devices/dev1/messages/devicebound" || !got.ExpiryTime.Equal(e.clock.Now().Add(time.Hour)) {
			t.Fatalf("to %q expiry %v", got.To, got.ExpiryTime)
		}
		if err := e.s.Complete(ctx, "dev1", got.LockToken); err != nil {
			t.Fatal(err)
		}
	}
	e.receiveNone("dev1")
	if n := e.s.PendingCount("dev1"); n != 0 {
		t.Fatalf("pending = %d", n)
	}
	recs := e.feedback()
	if len(recs) != 3 {
		t.Fatalf("feedback %v", recs)
	}
	for i, r := range recs {
		want := FeedbackRecord{OriginalMessageID: fmt.Sprintf("m%d", i), DeviceID: "dev1",
			EnqueuedTime: e.clock.Now(), StatusCode: StatusSuccess, Description: "Success"}
		if !reflect.DeepEqual(r, want) {
			t.Fatalf("record %d = %+v, want %+v", i, r, want)
		}
	}
	e.checkInvariants()
}

func TestReceiveSkipsLocked(t *testing.T) {
	e := newEnv(t, nil)
	e.send("d", Message{MessageID: "a"})
	e.send("d", Message{MessageID: "b"})
	a := e.receive("d")
	b := e.receive("d")
	if a.MessageID != "a" || b.MessageID != "b" {
		t.Fatalf("got %s, %s", a.MessageID, b.MessageID)
	}
	e.receiveNone("d")
	// Abandoning b first does not reorder: a stays locked, b comes back.
	if err := e.s.Abandon(ctx, "d", b.LockToken); err != nil {
		t.Fatal(err)
	}
	if m := e.receive("d"); m.MessageID != "b" || m.DeliveryCount != 1 {
		t.Fatalf("got %s count %d", m.MessageID, m.DeliveryCount)
	}
	e.checkInvariants()
}

func TestQueueDepth(t *testing.T) {
	for _, depth := range []int{0, 3} {
		t.Run(fmt.Sprint(depth), func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.Settings.MaxQueueDepth = depth })
			limit := e.s.Settings().MaxQueueDepth
			if depth == 0 && limit != 50 {
				t.Fatalf("default depth %d", limit)
			}
			for range limit {
				e.send("d", Message{})
			}
			// Locked messages count too.
			m := e.receive("d")
			_, err := e.s.Send(ctx, "d", Message{})
			wantErr(t, err, ErrQueueFull)
			if n := e.s.PendingCount("d"); n != limit {
				t.Fatalf("pending %d", n)
			}
			if err := e.s.Complete(ctx, "d", m.LockToken); err != nil {
				t.Fatal(err)
			}
			e.send("d", Message{})
			// Other devices have their own queue.
			e.send("other", Message{})
			// Expired messages the sweeper has not removed yet do not hold the queue full.
			e.clock.Advance(time.Hour)
			e.send("d", Message{})
			if n := e.s.PendingCount("d"); n != 1 {
				t.Fatalf("pending after lazy expiry %d", n)
			}
			e.checkInvariants()
		})
	}
}

func TestExpiryProducesFeedbackWithoutReceive(t *testing.T) {
	e := newEnv(t, nil)
	e.send("d", Message{MessageID: "short", Ack: AckNegative, ExpiryTime: e.clock.Now().Add(2 * time.Minute)})
	e.send("d", Message{MessageID: "default", Ack: AckFull})
	e.send("d", Message{MessageID: "quiet", Ack: AckPositive, ExpiryTime: e.clock.Now().Add(time.Minute)})

	e.clock.Advance(2*time.Minute - time.Nanosecond)
	e.sweep()
	if n := e.s.PendingCount("d"); n != 2 {
		t.Fatalf("pending %d after 2 min - 1 ns, want 2", n)
	}
	e.clock.Advance(time.Nanosecond)
	e.sweep()
	if n := e.s.PendingCount("d"); n != 1 {
		t.Fatalf("pending %d at 2 min", n)
	}
	recs := e.feedback()
	if len(recs) != 1 || recs[0].OriginalMessageID != "short" || recs[0].StatusCode != StatusExpired ||
		!recs[0].EnqueuedTime.Equal(e.clock.Now()) {
		t.Fatalf("feedback %+v", recs)
	}
	e.clock.Advance(time.Hour)
	e.sweep()
	if got := statuses(e.feedback()); !reflect.DeepEqual(got, []FeedbackStatus{StatusExpired}) {
		t.Fatalf("feedback %v", got)
	}
	e.receiveNone("d")
	e.checkInvariants()
}

func TestExpiryAtReceive(t *testing.T) {
	e := newEnv(t, nil)
	e.send("d", Message{MessageID: "old", Ack: AckFull, ExpiryTime: e.clock.Now().Add(time.Minute)})
	e.send("d", Message{MessageID: "new", ExpiryTime: e.clock.Now().Add(time.Hour)})
	e.clock.Advance(time.Minute)
	if m := e.receive("d"); m.MessageID != "new" {
		t.Fatalf("got %s", m.MessageID)
	}
	if got := statuses(e.feedback()); !reflect.DeepEqual(got, []FeedbackStatus{StatusExpired}) {
		t.Fatalf("feedback %v", got)
	}
	e.checkInvariants()
}

func TestExpiryDefaultsAndCap(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Settings.DefaultTTL = 10 * time.Minute })
	now := e.clock.Now()
	tests := []struct {
		name   string
		expiry time.Time
		want   time.Time
	}{
		{"zero takes default TTL", time.Time{}, now.Add(10 * time.Minute)},
		{"kept", now.Add(36 * time.Hour), now.Add(36 * time.Hour)},
		{"capped to MaxTTL", time.Date(3237, 7, 19, 23, 6, 40, 0, time.UTC), now.Add(48 * time.Hour)},
		{"zone converted", now.Add(time.Hour).In(time.FixedZone("x", 3600)), now.Add(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := e.send("d", Message{ExpiryTime: tt.expiry})
			if !m.ExpiryTime.Equal(tt.want) || m.ExpiryTime.Location() != time.UTC {
				t.Fatalf("expiry %v, want %v", m.ExpiryTime, tt.want)
			}
		})
	}
	// A past expiry is accepted and dead-lettered by the next sweep.
	e.send("p", Message{Ack: AckNegative, ExpiryTime: now.Add(-time.Second)})
	e.sweep()
	if got := statuses(e.feedback()); !reflect.DeepEqual(got, []FeedbackStatus{StatusExpired}) {
		t.Fatalf("feedback %v", got)
	}
}

func TestLockExpiryRedelivers(t *testing.T) {
	for _, lazy := range []bool{false, true} {
		t.Run(fmt.Sprintf("lazy=%v", lazy), func(t *testing.T) {
			e := newEnv(t, nil)
			e.send("d", Message{MessageID: "a", Ack: AckFull})
			first := e.receive("d")
			e.receiveNone("d")
			e.clock.Advance(time.Minute - time.Millisecond)
			e.sweep()
			e.receiveNone("d") // still locked
			e.clock.Advance(time.Millisecond)
			ch := e.s.Notify("d")
			if !lazy {
				e.sweep()
				if !fired(ch) {
					t.Fatal("lock expiry did not notify")
				}
			}
			wantErr(t, e.s.Complete(ctx, "d", first.LockToken), ErrLockLost)
			again := e.receive("d")
			if again.SequenceNumber != first.SequenceNumber || again.DeliveryCount != 0 || again.LockToken == first.LockToken {
				t.Fatalf("redelivered %+v after %+v", again, first)
			}
			wantErr(t, e.s.Complete(ctx, "d", first.LockToken), ErrLockLost)
			if err := e.s.Complete(ctx, "d", again.LockToken); err != nil {
				t.Fatal(err)
			}
			if got := statuses(e.feedback()); !reflect.DeepEqual(got, []FeedbackStatus{StatusSuccess}) {
				t.Fatalf("feedback %v", got)
			}
			e.checkInvariants()
		})
	}
}

func TestLockedMessageExpiresAfterLock(t *testing.T) {
	e := newEnv(t, nil)
	e.send("d", Message{MessageID: "a", Ack: AckNegative, ExpiryTime: e.clock.Now().Add(70 * time.Second)})
	first := e.receive("d")
	e.clock.Advance(30 * time.Second)
	if err := e.s.Abandon(ctx, "d", first.LockToken); err != nil {
		t.Fatal(err)
	}
	m := e.receive("d")               // locked until 90 s
	e.clock.Advance(50 * time.Second) // expiry (70 s) passes while locked: the lock still holds
	e.sweep()
	if n := e.s.PendingCount("d"); n != 1 {
		t.Fatalf("pending %d", n)
	}
	e.clock.Advance(10 * time.Second) // lock ends after expiry: dead-lettered, not redelivered
	e.sweep()
	e.receiveNone("d")
	wantErr(t, e.s.Complete(ctx, "d", m.LockToken), ErrLockLost)
	if got := statuses(e.feedback()); !reflect.DeepEqual(got, []FeedbackStatus{StatusExpired}) {
		t.Fatalf("feedback %v", got)
	}
	e.checkInvariants()
}

func TestCompleteAfterExpiryWithinLock(t *testing.T) {
	e := newEnv(t, nil)
	e.send("d", Message{Ack: AckFull, ExpiryTime: e.clock.Now().Add(time.Minute + time.Second)})
	e.clock.Advance(time.Second)
	m := e.receive("d")
	e.clock.Advance(50 * time.Second)
	if err := e.s.Complete(ctx, "d", m.LockToken); err != nil {
		t.Fatal(err)
	}
	if got := statuses(e.feedback()); !reflect.DeepEqual(got, []FeedbackStatus{StatusSuccess}) {
		t.Fatalf("feedback %v", got)
	}
}

func TestAbandonUntilMaxDeliveryCount(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Settings.MaxDeliveryCount = 3 })
	e.send("d", Message{MessageID: "a", Ack: AckFull})
	for want := range 3 {
		m := e.receive("d")
		if m.DeliveryCount != want {
			t.Fatalf("delivery count %d, want %d", m.DeliveryCount, want)
		}
		ch := e.s.Notify("d")
		if err := e.s.Abandon(ctx, "d", m.LockToken); err != nil {
			t.Fatal(err)
		}
		if want < 2 && !fired(ch) {
			t.Fatal("abandon did not notify")
		}
		wantErr(t, e.s.Abandon(ctx, "d", m.LockToken), ErrLockLost)
	}
	e.receiveNone("d")
	recs := e.feedback()
	if got := statuses(recs); !reflect.DeepEqual(got, []FeedbackStatus{StatusDeliveryCountExceeded}) {
		t.Fatalf("feedback %v", got)
	}
	if recs[0].Description != "Message delivery count exceeded" {
		t.Fatalf("description %q", recs[0].Description)
	}
	e.checkInvariants()
}

func TestReject(t *testing.T) {
	e := newEnv(t, nil)
	e.send("d", Message{MessageID: "a", Ack: AckFull})
	e.send("d", Message{MessageID: "b"})
	m := e.receive("d")
	if err := e.s.Reject(ctx, "d", m.LockToken); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.s.Reject(ctx, "d", m.LockToken), ErrLockLost)
	wantErr(t, e.s.Complete(ctx, "d", "no-such-token"), ErrLockLost)
	wantErr(t, e.s.Complete(ctx, "unknown-device", m.LockToken), ErrLockLost)
	if m := e.receive("d"); m.MessageID != "b" {
		t.Fatalf("got %s", m.MessageID)
	}
	if got := statuses(e.feedback()); !reflect.DeepEqual(got, []FeedbackStatus{StatusRejected}) {
		t.Fatalf("feedback %v", got)
	}
	e.checkInvariants()
}

func TestLockTokenIsPerDevice(t *testing.T) {
	e := newEnv(t, nil)
	e.send("a", Message{})
	e.send("b", Message{})
	m := e.receive("a")
	wantErr(t, e.s.Complete(ctx, "b", m.LockToken), ErrLockLost)
	if err := e.s.Complete(ctx, "a", m.LockToken); err != nil {
		t.Fatal(err)
	}
}

func TestPurge(t *testing.T) {
	e := newEnv(t, nil)
	acks := []AckMode{AckNone, AckPositive, AckNegative, AckFull}
	for _, a := range acks {
		e.send("d", Message{MessageID: string(a), Ack: a})
	}
	e.send("other", Message{})
	e.receive("d") // a locked message is purged too
	n, err := e.s.Purge(ctx, "d")
	if err != nil || n != 4 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	e.receiveNone("d")
	if e.s.PendingCount("d") != 0 || e.s.PendingCount("other") != 1 {
		t.Fatal("wrong pending counts after purge")
	}
	recs := e.feedback()
	var ids []string
	for _, r := range recs {
		if r.StatusCode != StatusPurged || r.Description != "Message purged" {
			t.Fatalf("record %+v", r)
		}
		ids = append(ids, r.OriginalMessageID)
	}
	if !reflect.DeepEqual(ids, []string{"negative", "full"}) {
		t.Fatalf("purged feedback for %v", ids)
	}
	if n, err := e.s.Purge(ctx, "d"); n != 0 || err != nil {
		t.Fatalf("second purge = %d, %v", n, err)
	}
	if n, err := e.s.Purge(ctx, "never-had-a-queue"); n != 0 || err != nil {
		t.Fatalf("purge empty = %d, %v", n, err)
	}
	// Sequence numbers are not reused after a purge.
	if m := e.send("d", Message{}); m.SequenceNumber != 5 {
		t.Fatalf("seq after purge = %d", m.SequenceNumber)
	}
	e.checkInvariants()
}

func TestAckModes(t *testing.T) {
	outcomes := []struct {
		name   string
		status FeedbackStatus
		do     func(e *env, m Message)
	}{
		{"complete", StatusSuccess, func(e *env, m Message) { e.s.Complete(ctx, "d", m.LockToken) }},
		{"reject", StatusRejected, func(e *env, m Message) { e.s.Reject(ctx, "d", m.LockToken) }},
		{"expire", StatusExpired, func(e *env, m Message) {
			e.s.Abandon(ctx, "d", m.LockToken)
			e.clock.Advance(2 * time.Hour)
			e.sweep()
		}},
		{"purge", StatusPurged, func(e *env, m Message) { e.s.Purge(ctx, "d") }},
	}
	tests := []struct {
		ack  AckMode
		want map[FeedbackStatus]bool
	}{
		{"", nil},
		{AckNone, nil},
		{AckPositive, map[FeedbackStatus]bool{StatusSuccess: true}},
		{AckNegative, map[FeedbackStatus]bool{StatusRejected: true, StatusExpired: true, StatusPurged: true}},
		{AckFull, map[FeedbackStatus]bool{StatusSuccess: true, StatusRejected: true, StatusExpired: true, StatusPurged: true}},
	}
	for _, tt := range tests {
		for _, o := range outcomes {
			t.Run(fmt.Sprintf("%s/%s", tt.ack, o.name), func(t *testing.T) {
				e := newEnv(t, nil)
				e.send("d", Message{MessageID: "m", Ack: tt.ack})
				o.do(e, e.receive("d"))
				if n := e.s.PendingCount("d"); n != 0 {
					t.Fatalf("pending %d", n)
				}
				got := statuses(e.feedback())
				want := []FeedbackStatus{}
				if tt.want[o.status] {
					want = append(want, o.status)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("feedback %v, want %v", got, want)
				}
			})
		}
	}
}

func TestNotify(t *testing.T) {
	e := newEnv(t, nil)
	ch := e.s.Notify("d")
	if fired(ch) {
		t.Fatal("fired before anything happened")
	}
	other := e.s.Notify("other")
	e.send("d", Message{})
	if !fired(ch) || fired(other) {
		t.Fatal("send: wrong notifications")
	}
	ch = e.s.Notify("d")
	m := e.receive("d")
	e.receiveNone("d")
	if fired(ch) {
		t.Fatal("receive notified")
	}
	if err := e.s.Complete(ctx, "d", m.LockToken); err != nil {
		t.Fatal(err)
	}
	if fired(ch) {
		t.Fatal("complete notified")
	}
	_, err := e.s.Send(ctx, "", Message{}) // refused sends notify nobody
	wantErr(t, err, ErrInvalid)
	if fired(ch) {
		t.Fatal("failed send notified")
	}
	if err := e.s.DeleteDevice(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if !fired(ch) {
		t.Fatal("delete did not wake the waiter")
	}

	// A waiter blocked on Notify is woken by a send from another goroutine.
	ch = e.s.Notify("w")
	go e.s.Send(context.Background(), "w", Message{})
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken")
	}
	fb := e.s.NotifyFeedback()
	e.send("f", Message{Ack: AckPositive})
	e.s.Complete(ctx, "f", e.receive("f").LockToken)
	if fired(fb) {
		t.Fatal("feedback notified before a batch")
	}
	if err := e.s.FlushFeedback(ctx); err != nil {
		t.Fatal(err)
	}
	if !fired(fb) {
		t.Fatal("feedback batch did not notify")
	}
}

func TestDeleteDevice(t *testing.T) {
	e := newEnv(t, nil)
	e.send("d", Message{MessageID: "a", Ack: AckFull})
	e.send("d", Message{MessageID: "b", Ack: AckFull})
	e.send("keep", Message{MessageID: "k", Ack: AckFull})
	m := e.receive("d")
	if err := e.s.Complete(ctx, "d", m.LockToken); err != nil { // pending Success record for d
		t.Fatal(err)
	}
	e.s.Complete(ctx, "keep", e.receive("keep").LockToken)
	locked := e.receive("d")
	if err := e.s.DeleteDevice(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if n := e.s.PendingCount("d"); n != 0 {
		t.Fatalf("pending %d", n)
	}
	e.receiveNone("d")
	wantErr(t, e.s.Complete(ctx, "d", locked.LockToken), ErrLockLost)
	recs := e.feedback()
	if len(recs) != 1 || recs[0].DeviceID != "keep" {
		t.Fatalf("feedback %+v", recs)
	}
	if err := e.s.DeleteDevice(ctx, "never"); err != nil {
		t.Fatal(err)
	}
	// A re-created device keeps counting.
	if m := e.send("d", Message{}); m.SequenceNumber != 3 {
		t.Fatalf("seq %d", m.SequenceNumber)
	}
	e.checkInvariants()
}

func TestUnknownDeviceAndGenerationID(t *testing.T) {
	var mu sync.Mutex
	devices := map[string]string{"d": "636930642531278483"}
	e := newEnv(t, func(o *Options) {
		o.DeviceExists = func(_ context.Context, id string) (string, bool, error) {
			mu.Lock()
			defer mu.Unlock()
			g, ok := devices[id]
			return g, ok, nil
		}
	})
	_, err := e.s.Send(ctx, "nope", Message{})
	wantErr(t, err, ErrDeviceNotFound)
	_, err = e.s.Purge(ctx, "nope")
	wantErr(t, err, ErrDeviceNotFound)
	if e.s.PendingCount("nope") != 0 {
		t.Fatal("queue created for unknown device")
	}
	e.send("d", Message{MessageID: "a", Ack: AckPositive})
	e.s.Complete(ctx, "d", e.receive("d").LockToken)
	recs := e.feedback()
	if len(recs) != 1 || recs[0].DeviceGenerationID != "636930642531278483" {
		t.Fatalf("feedback %+v", recs)
	}

	lookupErr := errors.New("registry down")
	e.s.exists = func(context.Context, string) (string, bool, error) { return "", false, lookupErr }
	_, err = e.s.Send(ctx, "d", Message{})
	wantErr(t, err, lookupErr)
}

// TestSendRacesDelete: the device is deleted (or re-created) between Send's lookup and its
// commit, after the registry's delete hook ran. Send must not leave the message behind.
func TestSendRacesDelete(t *testing.T) {
	for _, recreated := range []bool{false, true} {
		t.Run(fmt.Sprintf("recreated=%v", recreated), func(t *testing.T) {
			var calls atomic.Int32
			e := newEnv(t, func(o *Options) {
				o.DeviceExists = func(context.Context, string) (string, bool, error) {
					if calls.Add(1) == 1 {
						return "gen1", true, nil
					}
					return "gen2", recreated, nil
				}
			})
			_, err := e.s.Send(ctx, "d", Message{})
			wantErr(t, err, ErrDeviceNotFound)
			if n := e.s.PendingCount("d"); n != 0 {
				t.Fatalf("pending %d", n)
			}
			e.checkInvariants()
		})
	}
}

func TestSendValidation(t *testing.T) {
	big := func(n int) []byte { return bytes.Repeat([]byte{'x'}, n) }
	tests := []struct {
		name string
		dev  string
		m    Message
		err  error
	}{
		{"ok", "d", Message{MessageID: "a-b:c.d+e%f_g#h*i?j!k(l)m,n=o@p;q$r'"}, nil},
		{"body at the limit", "d", Message{Body: big(MaxMessageSize)}, nil},
		{"body over the limit", "d", Message{Body: big(MaxMessageSize + 1)}, ErrTooLarge},
		{"properties count", "d", Message{Body: big(MaxMessageSize - 4), Properties: map[string]string{"ab": "cd"}}, nil},
		{"properties count over", "d", Message{Body: big(MaxMessageSize - 4), Properties: map[string]string{"ab": "cde"}}, ErrTooLarge},
		{"system properties count", "d", Message{Body: big(MaxMessageSize - 2), MessageID: "abc"}, ErrTooLarge},
		{"ack counts", "d", Message{Body: big(MaxMessageSize - 3), Ack: AckFull}, ErrTooLarge},
		{"message id too long", "d", Message{MessageID: strings.Repeat("a", 129)}, ErrInvalid},
		{"message id 128", "d", Message{MessageID: strings.Repeat("a", 128)}, nil},
		{"message id charset", "d", Message{MessageID: "a b"}, ErrInvalid},
		{"message id slash", "d", Message{MessageID: "a/b"}, ErrInvalid},
		{"correlation id too long", "d", Message{CorrelationID: strings.Repeat("a", 129)}, ErrInvalid},
		{"property tchar", "d", Message{Properties: map[string]string{"!#$%&'*+-.^_|~`": "!#$%&'*+-.^_|~`Az9"}}, nil},
		{"property empty value", "d", Message{Properties: map[string]string{"k": ""}}, nil},
		{"property empty name", "d", Message{Properties: map[string]string{"": "v"}}, ErrInvalid},
		{"property name space", "d", Message{Properties: map[string]string{"a b": "v"}}, ErrInvalid},
		{"property value slash", "d", Message{Properties: map[string]string{"k": "a/b"}}, ErrInvalid},
		{"property value non-ascii", "d", Message{Properties: map[string]string{"k": "é"}}, ErrInvalid},
		{"bad ack", "d", Message{Ack: "always"}, ErrInvalid},
		{"ack property bad", "d", Message{Properties: map[string]string{"iothub-ack": "maybe"}}, ErrInvalid},
		{"ack property conflicts", "d", Message{Ack: AckFull, Properties: map[string]string{"iothub-ack": "none"}}, ErrInvalid},
		{"empty device", "", Message{}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			_, err := e.s.Send(ctx, tt.dev, tt.m)
			if tt.err == nil && err != nil || tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			want := 0
			if tt.err == nil {
				want = 1
			}
			if n := e.s.PendingCount(tt.dev); n != want {
				t.Fatalf("pending %d", n)
			}
		})
	}
}

func TestAckPropertyMovesToAck(t *testing.T) {
	e := newEnv(t, nil)
	m := e.send("d", Message{Properties: map[string]string{"IoTHub-Ack": "Full", "k": "v"}})
	if m.Ack != AckFull || !reflect.DeepEqual(m.Properties, map[string]string{"k": "v"}) {
		t.Fatalf("ack %q props %v", m.Ack, m.Properties)
	}
	r := e.receive("d")
	if r.Ack != AckFull || !reflect.DeepEqual(r.Properties, map[string]string{"k": "v"}) {
		t.Fatalf("received ack %q props %v", r.Ack, r.Properties)
	}
}

func TestParseAck(t *testing.T) {
	tests := []struct {
		in   string
		want AckMode
		ok   bool
	}{
		{"", AckNone, true}, {"none", AckNone, true}, {"positive", AckPositive, true},
		{"negative", AckNegative, true}, {"full", AckFull, true}, {"FULL", AckFull, true},
		{"yes", "", false}, {" full", "", false},
	}
	for _, tt := range tests {
		got, err := ParseAck(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseAck(%q) = %q, %v", tt.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseAck(%q) error %v is not ErrInvalid", tt.in, err)
		}
	}
}

func TestSettings(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Settings)
		ok   bool
	}{
		{"defaults", func(*Settings) {}, true},
		{"ttl too short", func(s *Settings) { s.DefaultTTL = 59 * time.Second }, false},
		{"ttl beyond 2 days", func(s *Settings) { s.DefaultTTL = 49 * time.Hour }, false},
		{"ttl beyond 2 days with raised max", func(s *Settings) { s.DefaultTTL = 49 * time.Hour; s.MaxTTL = 72 * time.Hour }, true},
		{"max ttl over a year", func(s *Settings) { s.MaxTTL = 366 * 24 * time.Hour }, false},
		{"delivery 100", func(s *Settings) { s.MaxDeliveryCount = 100 }, true},
		{"delivery 101", func(s *Settings) { s.MaxDeliveryCount = 101 }, false},
		{"delivery negative", func(s *Settings) { s.MaxDeliveryCount = -1 }, false},
		{"depth raised", func(s *Settings) { s.MaxQueueDepth = 5000 }, true},
		{"lock too short", func(s *Settings) { s.LockDuration = time.Second }, false},
		{"feedback lock too long", func(s *Settings) { s.FeedbackLockDuration = 301 * time.Second }, false},
		{"feedback batch", func(s *Settings) { s.FeedbackBatchSize = 1001 }, false},
		{"feedback ttl", func(s *Settings) { s.FeedbackTTL = time.Second }, false},
		{"feedback delivery", func(s *Settings) { s.FeedbackMaxDeliveryCount = 101 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Settings
			tt.mod(&s)
			s.EnsureDefaults()
			err := s.Validate()
			if (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrInvalidSetting) {
				t.Fatalf("Validate = %v", err)
			}
		})
	}
	var s Settings
	s.EnsureDefaults()
	want := Settings{time.Hour, 48 * time.Hour, 10, time.Minute, 50, 64, 15 * time.Second, time.Hour, time.Minute, 10}
	if s != want {
		t.Fatalf("defaults %+v", s)
	}
	_, err := Open(nil, Options{Settings: Settings{MaxDeliveryCount: 1000}, HubName: "h"})
	wantErr(t, err, ErrInvalidSetting)
	_, err = Open(nil, Options{})
	wantErr(t, err, ErrInvalidSetting)
}

func TestDurableAcrossReopen(t *testing.T) {
	e := newEnv(t, nil)
	e.send("d", Message{MessageID: "a", Ack: AckFull, Properties: map[string]string{"p": "1"}, Body: []byte("A")})
	e.send("d", Message{MessageID: "b", Ack: AckFull})
	e.send("d", Message{MessageID: "c", Ack: AckFull})
	a := e.receive("d")
	b := e.receive("d")
	if err := e.s.Abandon(ctx, "d", b.LockToken); err != nil {
		t.Fatal(err)
	}
	e.send("x", Message{MessageID: "x", Ack: AckPositive})
	e.s.Complete(ctx, "x", e.receive("x").LockToken) // one pending feedback record

	e.reopen()
	if n := e.s.PendingCount("d"); n != 3 {
		t.Fatalf("pending %d", n)
	}
	// a is still locked: the next receive gets b, with its delivery count.
	if m := e.receive("d"); m.MessageID != "b" || m.DeliveryCount != 1 {
		t.Fatalf("got %s count %d", m.MessageID, m.DeliveryCount)
	}
	if err := e.s.Complete(ctx, "d", a.LockToken); err != nil {
		t.Fatalf("lock taken before restart: %v", err)
	}
	if m := e.send("d", Message{}); m.SequenceNumber != 4 {
		t.Fatalf("seq %d", m.SequenceNumber)
	}
	n, _ := e.s.Purge(ctx, "d")
	e.reopen()
	if m := e.send("d", Message{}); m.SequenceNumber != 5 {
		t.Fatalf("seq after purge and restart %d (purged %d)", m.SequenceNumber, n)
	}
	// Feedback pending before the restart is still there; b and c were purged.
	recs := e.feedback()
	var got []string
	for _, r := range recs {
		got = append(got, r.OriginalMessageID+":"+string(r.StatusCode))
	}
	want := []string{"x:Success", "a:Success", "b:Purged", "c:Purged"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("feedback %v, want %v", got, want)
	}

	// A lock taken before a restart expires after it, with the sweeper catching up.
	m := e.receive("d")
	e.reopen()
	e.clock.Advance(time.Minute)
	e.sweep()
	if r := e.receive("d"); r.SequenceNumber != m.SequenceNumber || r.DeliveryCount != 0 {
		t.Fatalf("after restart: %+v", r)
	}
	e.checkInvariants()
}

func TestBackgroundSweeper(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.SweepInterval = 5 * time.Millisecond })
	e.send("d", Message{MessageID: "a", Ack: AckNegative, ExpiryTime: e.clock.Now().Add(time.Minute)})
	fb := e.s.NotifyFeedback()
	e.clock.Advance(time.Minute)
	deadline := time.After(5 * time.Second)
	for e.s.PendingCount("d") != 0 {
		select {
		case <-deadline:
			t.Fatal("sweeper did not expire the message")
		case <-time.After(time.Millisecond):
		}
	}
	e.clock.Advance(15 * time.Second) // the batch interval
	select {
	case <-fb:
	case <-deadline:
		t.Fatal("sweeper did not send the feedback batch")
	}
	fm, ok, err := e.s.ReceiveFeedback(ctx)
	if err != nil || !ok || len(fm.Records) != 1 || fm.Records[0].StatusCode != StatusExpired {
		t.Fatalf("feedback %+v %v %v", fm, ok, err)
	}
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s.Close() // idempotent
}

func TestConcurrent(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Settings.MaxQueueDepth = 1000 })
	const devices, perDevice = 4, 25
	var wg sync.WaitGroup
	var completed sync.Map
	var dup atomic.Int32
	giveUp := time.Now().Add(20 * time.Second) // fail, not hang, if messages get lost
	for d := range devices {
		dev := fmt.Sprintf("dev%d", d)
		wg.Add(3)
		go func() { // sender
			defer wg.Done()
			for i := range perDevice {
				if _, err := e.s.Send(ctx, dev, Message{MessageID: fmt.Sprintf("%s-%d", dev, i), Ack: AckPositive}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		for range 2 { // two competing receivers per device
			go func() {
				defer wg.Done()
				got := 0
				for got < perDevice {
					ch := e.s.Notify(dev)
					m, ok, err := e.s.Receive(ctx, dev)
					if err != nil {
						t.Error(err)
						return
					}
					if !ok {
						if e.count(dev, &completed) == perDevice {
							return
						}
						if time.Now().After(giveUp) {
							t.Errorf("%s: gave up with %d completed", dev, e.count(dev, &completed))
							return
						}
						select {
						case <-ch:
						case <-time.After(20 * time.Millisecond):
						}
						continue
					}
					if err := e.s.Complete(ctx, dev, m.LockToken); err != nil {
						t.Error(err)
						return
					}
					if _, loaded := completed.LoadOrStore(m.MessageID, true); loaded {
						dup.Add(1)
					}
					got++
				}
			}()
		}
	}
	wg.Wait()
	if dup.Load() != 0 {
		t.Fatalf("%d messages completed twice", dup.Load())
	}
	for d := range devices {
		dev := fmt.Sprintf("dev%d", d)
		if n := e.count(dev, &completed); n != perDevice {
			t.Fatalf("%s: %d completed", dev, n)
		}
		if n := e.s.PendingCount(dev); n != 0 {
			t.Fatalf("%s: %d pending", dev, n)
		}
	}
	if recs := e.feedback(); len(recs) != devices*perDevice {
		t.Fatalf("%d feedback records", len(recs))
	}
	e.checkInvariants()
}

func (e *env) count(dev string, m *sync.Map) int {
	n := 0
	m.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), dev+"-") {
			n++
		}
		return true
	})
	return n
}

func TestCanceledContext(t *testing.T) {
	e := newEnv(t, nil)
	c, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.s.Send(c, "d", Message{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("send: %v", err)
	}
	if _, _, err := e.s.Receive(c, "d"); !errors.Is(err, context.Canceled) {
		t.Fatalf("receive: %v", err)
	}
	if err := e.s.Sweep(c); !errors.Is(err, context.Canceled) {
		t.Fatalf("sweep: %v", err)
	}
}

func TestRelease(t *testing.T) {
	e := newEnv(t, nil)
	e.send("d", Message{MessageID: "a", Ack: AckFull})
	e.send("d", Message{MessageID: "b", Ack: AckFull, ExpiryTime: e.clock.Now().Add(30 * time.Second)})
	a := e.receive("d")
	b := e.receive("d")
	ch := e.s.Notify("d")
	if err := e.s.Release(ctx, "d", a.LockToken); err != nil {
		t.Fatal(err)
	}
	if !fired(ch) {
		t.Fatal("release did not notify")
	}
	wantErr(t, e.s.Release(ctx, "d", a.LockToken), ErrLockLost)
	wantErr(t, e.s.Complete(ctx, "d", a.LockToken), ErrLockLost)
	again := e.receive("d")
	if again.SequenceNumber != a.SequenceNumber || again.DeliveryCount != 0 || again.LockToken == a.LockToken {
		t.Fatalf("after release got %+v, want message a again with delivery count 0", again)
	}
	if err := e.s.Complete(ctx, "d", again.LockToken); err != nil {
		t.Fatal(err)
	}
	// A message whose expiry passed while it was locked dies on release.
	e.clock.Advance(45 * time.Second)
	if err := e.s.Release(ctx, "d", b.LockToken); err != nil {
		t.Fatal(err)
	}
	e.receiveNone("d")
	if got := statuses(e.feedback()); !reflect.DeepEqual(got, []FeedbackStatus{StatusSuccess, StatusExpired}) {
		t.Fatalf("feedback %v", got)
	}
	if n := e.s.PendingCount("d"); n != 0 {
		t.Fatalf("pending %d", n)
	}
	e.checkInvariants()
}
