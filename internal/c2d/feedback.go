package c2d

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

// FeedbackStatus is a feedback record's statusCode (spec 7.4).
type FeedbackStatus string

// Feedback statuses, in the order of the .NET SDK's enum.
const (
	StatusSuccess               FeedbackStatus = "Success"
	StatusExpired               FeedbackStatus = "Expired"
	StatusDeliveryCountExceeded FeedbackStatus = "DeliveryCountExceeded"
	StatusRejected              FeedbackStatus = "Rejected"
	StatusPurged                FeedbackStatus = "Purged"
)

// description is the record's human text. IoT Hub's sample only shows "Success" for Success;
// the others are ours.
func (st FeedbackStatus) description() string {
	switch st {
	case StatusSuccess:
		return "Success"
	case StatusExpired:
		return "Message expired"
	case StatusDeliveryCountExceeded:
		return "Message delivery count exceeded"
	case StatusRejected:
		return "Message rejected"
	case StatusPurged:
		return "Message purged"
	}
	return string(st)
}

// FeedbackRecord is one message outcome, in the JSON form IoT Hub puts in feedback messages.
type FeedbackRecord struct {
	OriginalMessageID  string
	DeviceID           string
	DeviceGenerationID string
	EnqueuedTime       time.Time // when the outcome happened
	StatusCode         FeedbackStatus
	Description        string
}

// feedbackTimeLayout is RFC 3339 in UTC with milliseconds, as in IoT Hub's sample.
const feedbackTimeLayout = "2006-01-02T15:04:05.000Z"

type feedbackJSON struct {
	OriginalMessageID  string         `json:"originalMessageId"`
	EnqueuedTimeUTC    string         `json:"enqueuedTimeUtc"`
	StatusCode         FeedbackStatus `json:"statusCode"`
	Description        string         `json:"description"`
	DeviceID           string         `json:"deviceId"`
	DeviceGenerationID string         `json:"deviceGenerationId"`
}

// MarshalJSON writes IoT Hub's field names in its sample's order.
func (r FeedbackRecord) MarshalJSON() ([]byte, error) {
	return json.Marshal(feedbackJSON{
		OriginalMessageID:  r.OriginalMessageID,
		EnqueuedTimeUTC:    r.EnqueuedTime.UTC().Format(feedbackTimeLayout),
		StatusCode:         r.StatusCode,
		Description:        r.Description,
		DeviceID:           r.DeviceID,
		DeviceGenerationID: r.DeviceGenerationID,
	})
}

// UnmarshalJSON accepts any RFC 3339 time.
func (r *FeedbackRecord) UnmarshalJSON(b []byte) error {
	var j feedbackJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, j.EnqueuedTimeUTC)
	if err != nil {
		return fmt.Errorf("enqueuedTimeUtc: %w", err)
	}
	*r = FeedbackRecord{
		OriginalMessageID: j.OriginalMessageID, DeviceID: j.DeviceID, DeviceGenerationID: j.DeviceGenerationID,
		EnqueuedTime: t.UTC(), StatusCode: j.StatusCode, Description: j.Description,
	}
	return nil
}

// FeedbackMessage is one batch of feedback records as the service receives it.
type FeedbackMessage struct {
	SequenceNumber uint64
	LockToken      string
	LockedUntil    time.Time
	EnqueuedTime   time.Time
	ExpiryTime     time.Time
	DeliveryCount  int
	UserID         string // the hub name
	ContentType    string // FeedbackContentType
	Records        []FeedbackRecord
	Body           []byte // Records as the JSON array IoT Hub sends
}

// Pending records (c2d.pending) are keyed by a bucket sequence, so key order is arrival order;
// each value is the outcome time (8 bytes, unix nanos) and the record's JSON.

// addFeedback queues a record for the next feedback message and sends the batch once full.
func (t *txn) addFeedback(r FeedbackRecord) error {
	j, err := json.Marshal(r)
	if err != nil {
		return err
	}
	t.changed = true
	b := t.tx.Bucket(pendingBucket)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(j)), uint64(unixNano(r.EnqueuedTime)))
	if err := b.Put(u64(seq), append(v, j...)); err != nil {
		return err
	}
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil && n < t.s.set.FeedbackBatchSize; k, _ = c.Next() {
		n++
	}
	if n >= t.s.set.FeedbackBatchSize {
		return t.flushPending()
	}
	return nil
}

// pendingDue reports whether the oldest pending record is FeedbackBatchInterval old.
func (t *txn) pendingDue() bool {
	_, v := t.tx.Bucket(pendingBucket).Cursor().First()
	if len(v) < 8 {
		return v != nil // unreadable: flush it out rather than keep it forever
	}
	oldest := fromNano(int64(binary.BigEndian.Uint64(v)))
	return !t.now.Before(oldest.Add(t.s.set.FeedbackBatchInterval))
}

// flushPending turns every pending record into feedback messages of up to FeedbackBatchSize
// records, oldest first.
func (t *txn) flushPending() error {
	b := t.tx.Bucket(pendingBucket)
	var keys, recs [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		keys = append(keys, bytes.Clone(k))
		if len(v) > 8 {
			recs = append(recs, bytes.Clone(v[8:]))
		}
	}
	if len(keys) > 0 {
		t.changed = true
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	q, err := t.queue("", false)
	if err != nil {
		return err
	}
	size := t.s.set.FeedbackBatchSize
	for len(recs) > 0 {
		n := min(size, len(recs))
		body := append([]byte{'['}, bytes.Join(recs[:n], []byte{','})...)
		body = append(body, ']')
		recs = recs[n:]
		c := content{UserID: t.s.hubName, ContentType: FeedbackContentType, Enqueued: t.now, Body: body}
		if _, err := t.enqueue(q, &c, state{Expiry: t.now.Add(t.s.set.FeedbackTTL)}); err != nil {
			return err
		}
	}
	return nil
}

// dropPending removes a device's pending records.
func (t *txn) dropPending(deviceID string) error {
	b := t.tx.Bucket(pendingBucket)
	var keys [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var r struct {
			DeviceID string `json:"deviceId"`
		}
		if len(v) > 8 && json.Unmarshal(v[8:], &r) == nil && r.DeviceID == deviceID {
			keys = append(keys, bytes.Clone(k))
		}
	}
	for _, k := range keys {
		t.changed = true
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// ReceiveFeedback locks the oldest visible feedback message for FeedbackLockDuration and
// returns it. Expired feedback messages met on the way are dropped. ok is false when there
// is none.
func (s *Store) ReceiveFeedback(ctx context.Context) (FeedbackMessage, bool, error) {
	if err := ctx.Err(); err != nil {
		return FeedbackMessage{}, false, err
	}
	var (
		fm FeedbackMessage
		ok bool
	)
	err := s.update(func(t *txn) error {
		fm, ok = FeedbackMessage{}, false
		q, err := t.queue("", false)
		if err != nil {
			return err
		}
		seq, st, found, err := t.receive(q, s.set.FeedbackLockDuration)
		if err != nil || !found {
			return err
		}
		c, err := t.getContent(q, seq)
		if err != nil {
			return err
		}
		fm = FeedbackMessage{
			SequenceNumber: seq, LockToken: st.LockToken, LockedUntil: st.LockedUntil,
			EnqueuedTime: c.Enqueued, ExpiryTime: st.Expiry, DeliveryCount: st.DeliveryCount,
			UserID: c.UserID, ContentType: c.ContentType, Body: c.Body,
		}
		if err := json.Unmarshal(c.Body, &fm.Records); err != nil {
			return fmt.Errorf("decode feedback message %d: %w", seq, err)
		}
		ok = true
		return nil
	})
	if err != nil {
		return FeedbackMessage{}, false, fmt.Errorf("c2d: receive feedback: %w", err)
	}
	return fm, ok, nil
}

// CompleteFeedback removes a locked feedback message. Errors: ErrLockLost.
func (s *Store) CompleteFeedback(ctx context.Context, lockToken string) error {
	return s.settleFeedback(ctx, lockToken, complete)
}

// AbandonFeedback returns a locked feedback message to the queue with its delivery count + 1;
// reaching FeedbackMaxDeliveryCount drops it. Errors: ErrLockLost.
func (s *Store) AbandonFeedback(ctx context.Context, lockToken string) error {
	return s.settleFeedback(ctx, lockToken, abandon)
}

func (s *Store) settleFeedback(ctx context.Context, lockToken string, v verdict) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.update(func(t *txn) error {
		q, err := t.queue("", false)
		if err != nil {
			return err
		}
		return t.settle(q, lockToken, v, s.set.FeedbackMaxDeliveryCount)
	})
	if err != nil {
		return fmt.Errorf("c2d: %s feedback: %w", v, err)
	}
	return nil
}

// FlushFeedback sends the pending feedback records now instead of waiting for a full batch
// or the batch interval (tests, shutdown).
func (s *Store) FlushFeedback(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.update((*txn).flushPending); err != nil {
		return fmt.Errorf("c2d: flush feedback: %w", err)
	}
	return nil
}
