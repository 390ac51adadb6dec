package c2d

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// completeN sends and completes n messages with positive ack, producing n Success records.
func (e *env) completeN(dev string, n int) {
	e.t.Helper()
	for i := range n {
		e.send(dev, Message{MessageID: fmt.Sprintf("%s-%d", dev, i), Ack: AckPositive})
		if err := e.s.Complete(ctx, dev, e.receive(dev).LockToken); err != nil {
			e.t.Fatal(err)
		}
	}
}

func TestFeedbackBatchBySize(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Settings.MaxQueueDepth = 200 })
	e.completeN("d", 63)
	if _, ok, _ := e.s.ReceiveFeedback(ctx); ok {
		t.Fatal("feedback message before 64 records")
	}
	e.completeN("e", 1) // the 64th record sends the batch at once
	fm, ok, err := e.s.ReceiveFeedback(ctx)
	if err != nil || !ok {
		t.Fatalf("no batch at 64: %v", err)
	}
	if len(fm.Records) != 64 || fm.Records[0].OriginalMessageID != "d-0" || fm.Records[63].OriginalMessageID != "e-0" {
		t.Fatalf("batch of %d: first %+v", len(fm.Records), fm.Records[0])
	}
	if fm.UserID != "testhub" || fm.ContentType != FeedbackContentType || !fm.EnqueuedTime.Equal(e.clock.Now()) ||
		!fm.ExpiryTime.Equal(e.clock.Now().Add(time.Hour)) || fm.DeliveryCount != 0 {
		t.Fatalf("feedback message %+v", fm)
	}
	var raw []map[string]any
	if err := json.Unmarshal(fm.Body, &raw); err != nil || len(raw) != 64 {
		t.Fatalf("body: %v", err)
	}
	if _, ok, _ := e.s.ReceiveFeedback(ctx); ok {
		t.Fatal("second batch")
	}
	e.checkInvariants()
}

func TestFeedbackBatchSizeSetting(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Settings.FeedbackBatchSize = 2 })
	e.completeN("d", 5)
	var sizes []int
	for {
		fm, ok, err := e.s.ReceiveFeedback(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		sizes = append(sizes, len(fm.Records))
	}
	if !reflect.DeepEqual(sizes, []int{2, 2}) {
		t.Fatalf("batches %v", sizes)
	}
	// FlushFeedback sends the remainder.
	if err := e.s.FlushFeedback(ctx); err != nil {
		t.Fatal(err)
	}
	if fm, ok, _ := e.s.ReceiveFeedback(ctx); !ok || len(fm.Records) != 1 {
		t.Fatalf("flushed %+v", fm)
	}
}

func TestFeedbackBatchByTime(t *testing.T) {
	e := newEnv(t, nil)
	e.completeN("d", 1)
	e.clock.Advance(10 * time.Second)
	e.completeN("e", 1)
	e.clock.Advance(5*time.Second - time.Millisecond)
	e.sweep()
	if _, ok, _ := e.s.ReceiveFeedback(ctx); ok {
		t.Fatal("batch before the oldest record is 15 s old")
	}
	e.clock.Advance(time.Millisecond)
	e.sweep()
	fm, ok, err := e.s.ReceiveFeedback(ctx)
	if err != nil || !ok || len(fm.Records) != 2 {
		t.Fatalf("batch at 15 s: %+v %v", fm, err)
	}
	start := e.clock.Now().Add(-15 * time.Second)
	if !fm.Records[0].EnqueuedTime.Equal(start) || !fm.Records[1].EnqueuedTime.Equal(start.Add(10*time.Second)) {
		t.Fatalf("record times %v %v", fm.Records[0].EnqueuedTime, fm.Records[1].EnqueuedTime)
	}
	e.sweep()
	if _, ok, _ := e.s.ReceiveFeedback(ctx); ok {
		t.Fatal("empty batch sent")
	}
}

func TestFeedbackSettle(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Settings.FeedbackMaxDeliveryCount = 2 })
	for i := range 2 {
		e.completeN(fmt.Sprint("d", i), 1)
		if err := e.s.FlushFeedback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	first, _, _ := e.s.ReceiveFeedback(ctx)
	second, _, _ := e.s.ReceiveFeedback(ctx)
	if first.Records[0].DeviceID != "d0" || second.Records[0].DeviceID != "d1" || first.LockToken == second.LockToken {
		t.Fatalf("got %+v then %+v", first, second)
	}
	if _, ok, _ := e.s.ReceiveFeedback(ctx); ok {
		t.Fatal("locked feedback delivered")
	}
	wantErr(t, e.s.CompleteFeedback(ctx, "bogus"), ErrLockLost)
	if err := e.s.AbandonFeedback(ctx, first.LockToken); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.s.CompleteFeedback(ctx, first.LockToken), ErrLockLost)
	again, ok, _ := e.s.ReceiveFeedback(ctx)
	if !ok || again.SequenceNumber != first.SequenceNumber || again.DeliveryCount != 1 {
		t.Fatalf("after abandon %+v", again)
	}
	// Second abandon reaches FeedbackMaxDeliveryCount: dropped.
	if err := e.s.AbandonFeedback(ctx, again.LockToken); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := e.s.ReceiveFeedback(ctx); ok {
		t.Fatal("dropped feedback delivered")
	}
	// Lock expiry returns the second one with its delivery count.
	e.clock.Advance(time.Minute)
	wantErr(t, e.s.CompleteFeedback(ctx, second.LockToken), ErrLockLost)
	e.sweep()
	re, ok, _ := e.s.ReceiveFeedback(ctx)
	if !ok || re.SequenceNumber != second.SequenceNumber || re.DeliveryCount != 0 {
		t.Fatalf("after lock expiry %+v", re)
	}
	if err := e.s.CompleteFeedback(ctx, re.LockToken); err != nil {
		t.Fatal(err)
	}
	e.checkInvariants()
}

func TestFeedbackTTL(t *testing.T) {
	e := newEnv(t, nil)
	e.completeN("d", 1)
	if err := e.s.FlushFeedback(ctx); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour - time.Second)
	e.sweep()
	e.clock.Advance(time.Second)
	e.completeN("e", 1)
	if err := e.s.FlushFeedback(ctx); err != nil {
		t.Fatal(err)
	}
	// The first expired unread, lazily at receive; the second is delivered.
	fm, ok, _ := e.s.ReceiveFeedback(ctx)
	if !ok || fm.Records[0].DeviceID != "e" {
		t.Fatalf("got %+v", fm)
	}
	e.clock.Advance(2 * time.Hour)
	e.sweep()
	e.checkInvariants()
	if n := e.s.PendingCount(""); n != 0 {
		t.Fatal("PendingCount exposes the feedback queue")
	}
	if _, ok, _ := e.s.ReceiveFeedback(ctx); ok {
		t.Fatal("expired feedback delivered")
	}
}

func TestFeedbackRecordJSON(t *testing.T) {
	r := FeedbackRecord{
		OriginalMessageID: "0987654321", DeviceID: "123", DeviceGenerationID: "abcdefghijklmnopqrstuvwxyz",
		EnqueuedTime: time.Date(2015, 7, 28, 16, 24, 48, 789_000_000, time.FixedZone("x", 0)),
		StatusCode:   StatusSuccess, Description: "Success",
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"originalMessageId":"0987654321","enqueuedTimeUtc":"2015-07-28T16:24:48.789Z","statusCode":"Success","description":"Success","deviceId":"123","deviceGenerationId":"abcdefghijklmnopqrstuvwxyz"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var back FeedbackRecord
	if err := json.Unmarshal(b, &back); err != nil || !back.EnqueuedTime.Equal(r.EnqueuedTime) || back.DeviceID != "123" {
		t.Fatalf("round trip %+v %v", back, err)
	}
	r.EnqueuedTime = time.Date(2015, 7, 28, 16, 24, 48, 0, time.UTC)
	b, _ = json.Marshal(r)
	if !json.Valid(b) || !strings.Contains(string(b), `"2015-07-28T16:24:48.000Z"`) {
		t.Fatalf("whole seconds: %s", b)
	}
}
