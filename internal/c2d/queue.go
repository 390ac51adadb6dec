package c2d

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// txn is one operation's view of a write transaction and the effects to apply after it
// commits. Several txns may share one bbolt transaction (see commit.go).
type txn struct {
	s    *Store
	tx   *bbolt.Tx
	now  time.Time
	wake []string // queues to notify; "" is the feedback queue
	// changed records whether the operation wrote anything. Mutators set it before their
	// first write, so an operation that fails with changed false left the transaction as
	// it found it.
	changed bool
}

// queue is one device queue, or the feedback queue when id is "".
type queue struct {
	id string
	b  *bbolt.Bucket
}

func (q *queue) feedback() bool { return q.id == "" }

// queue returns a device's queue (nil if it has none and create is false), or the feedback
// queue for id "".
func (t *txn) queue(id string, create bool) (*queue, error) {
	if id == "" {
		return &queue{b: t.tx.Bucket(feedbackBucket)}, nil
	}
	qs := t.tx.Bucket(queuesBucket)
	b := qs.Bucket([]byte(id))
	if b == nil && create {
		t.changed = true
		var err error
		if b, err = qs.CreateBucket([]byte(id)); err != nil {
			return nil, err
		}
	}
	if b == nil {
		return nil, nil
	}
	return &queue{id: id, b: b}, nil
}

func (q *queue) count() uint64 { return getU64(q.b.Get([]byte(countKey))) }

func (t *txn) addCount(q *queue, delta int) error {
	n := int64(q.count()) + int64(delta)
	if n < 0 {
		n = 0 // never wrap on a corrupt count
	}
	return q.b.Put([]byte(countKey), u64(uint64(n)))
}

// nextSeq returns the queue's next sequence number. Device numbers live in c2d.seq, outside
// the queue bucket, so purge and delete never reset them.
func (t *txn) nextSeq(q *queue) (uint64, error) {
	if q.feedback() {
		return q.b.NextSequence()
	}
	b := t.tx.Bucket(seqBucket)
	n := getU64(b.Get([]byte(q.id))) + 1
	return n, b.Put([]byte(q.id), u64(n))
}

func (t *txn) getState(q *queue, seq uint64) (state, bool, error) {
	v := q.b.Get(seqKey(prefixStat, seq))
	if v == nil {
		return state{}, false, nil
	}
	st, err := decodeState(v)
	if err != nil {
		return state{}, false, fmt.Errorf("decode state %d: %w", seq, err)
	}
	return st, true, nil
}

func (t *txn) getContent(q *queue, seq uint64) (content, error) {
	v := q.b.Get(seqKey(prefixMsg, seq))
	if v == nil {
		return content{}, fmt.Errorf("%w: message %d has state but no content", errCorrupt, seq)
	}
	c, err := decodeContent(v)
	if err != nil {
		return content{}, fmt.Errorf("decode message %d: %w", seq, err)
	}
	return c, nil
}

// putState writes st and moves the message's timer from old's deadline to st's.
func (t *txn) putState(q *queue, seq uint64, old *state, st state) error {
	t.changed = true
	timers := t.tx.Bucket(timersBucket)
	if old != nil {
		if err := timers.Delete(timerKey(old.deadline(), seq, q.id)); err != nil {
			return err
		}
		if old.LockToken != "" && old.LockToken != st.LockToken {
			if err := q.b.Delete(lockKey(old.LockToken)); err != nil {
				return err
			}
		}
	}
	if st.LockToken != "" && (old == nil || old.LockToken != st.LockToken) {
		if err := q.b.Put(lockKey(st.LockToken), u64(seq)); err != nil {
			return err
		}
	}
	if err := timers.Put(timerKey(st.deadline(), seq, q.id), nil); err != nil {
		return err
	}
	return q.b.Put(seqKey(prefixStat, seq), st.encode())
}

// enqueue stores a new message and returns its sequence number.
func (t *txn) enqueue(q *queue, c *content, st state) (uint64, error) {
	t.changed = true
	seq, err := t.nextSeq(q)
	if err != nil {
		return 0, err
	}
	if err := q.b.Put(seqKey(prefixMsg, seq), c.encode()); err != nil {
		return 0, err
	}
	if err := t.putState(q, seq, nil, st); err != nil {
		return 0, err
	}
	if err := t.addCount(q, 1); err != nil {
		return 0, err
	}
	t.wake = append(t.wake, q.id)
	return seq, nil
}

// remove deletes a message with its lock and timer.
func (t *txn) remove(q *queue, seq uint64, st state) error {
	t.changed = true
	if err := t.tx.Bucket(timersBucket).Delete(timerKey(st.deadline(), seq, q.id)); err != nil {
		return err
	}
	if st.LockToken != "" {
		if err := q.b.Delete(lockKey(st.LockToken)); err != nil {
			return err
		}
	}
	for _, p := range []byte{prefixMsg, prefixStat} {
		if err := q.b.Delete(seqKey(p, seq)); err != nil {
			return err
		}
	}
	return t.addCount(q, -1)
}

// finish removes a message with the given outcome, producing the feedback its ack mode asks
// for. Feedback messages that die are only logged.
func (t *txn) finish(q *queue, seq uint64, st state, status FeedbackStatus) error {
	c, err := t.getContent(q, seq)
	if err != nil {
		return err
	}
	if err := t.remove(q, seq, st); err != nil {
		return err
	}
	if q.feedback() {
		if status != StatusSuccess {
			t.s.log.Warn("c2d: feedback message dropped", "sequenceNumber", seq, "reason", status,
				"deliveryCount", st.DeliveryCount, "enqueuedTime", c.Enqueued)
		}
		return nil
	}
	if status != StatusSuccess {
		t.s.log.Debug("c2d: message dead-lettered", "deviceId", q.id, "sequenceNumber", seq,
			"messageId", c.MessageID, "reason", status, "deliveryCount", st.DeliveryCount)
	}
	if !c.Ack.wants(status) {
		return nil
	}
	return t.addFeedback(FeedbackRecord{
		OriginalMessageID:  c.MessageID,
		DeviceID:           q.id,
		DeviceGenerationID: c.GenerationID,
		EnqueuedTime:       t.now,
		StatusCode:         status,
		Description:        status.description(),
	})
}

// receive locks the first visible message of q, dead-lettering expired ones on the way.
func (t *txn) receive(q *queue, lock time.Duration) (seq uint64, st state, ok bool, err error) {
	type item struct {
		seq uint64
		st  state
	}
	var expired []item
	c := q.b.Cursor()
	prefix := []byte{prefixStat}
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		cur, err := decodeState(v)
		if err != nil {
			return 0, state{}, false, fmt.Errorf("decode state %x: %w", k, err)
		}
		if cur.lockValid(t.now) {
			continue // like IoT Hub: a locked message is skipped, not waited for
		}
		s := getU64(k[1:])
		if !t.now.Before(cur.Expiry) {
			expired = append(expired, item{s, cur})
			continue
		}
		seq, st, ok = s, cur, true
		break
	}
	for _, e := range expired { // not while iterating: bbolt cursors skip keys after a delete
		if err := t.finish(q, e.seq, e.st, StatusExpired); err != nil {
			return 0, state{}, false, err
		}
	}
	if !ok {
		return 0, state{}, false, nil
	}
	old := st
	st.LockToken = newLockToken()
	st.LockedUntil = t.now.Add(lock)
	if err := t.putState(q, seq, &old, st); err != nil {
		return 0, state{}, false, err
	}
	return seq, st, true, nil
}

// locked finds the message a lock token holds. Errors: ErrLockLost if the token is unknown or
// its lock expired (the sweeper returns such messages to the queue).
func (t *txn) locked(q *queue, token string) (uint64, state, error) {
	if q == nil || token == "" {
		return 0, state{}, ErrLockLost
	}
	v := q.b.Get(lockKey(token))
	if v == nil {
		return 0, state{}, ErrLockLost
	}
	seq := getU64(v)
	st, ok, err := t.getState(q, seq)
	if err != nil {
		return 0, state{}, err
	}
	if !ok || st.LockToken != token || !st.lockValid(t.now) {
		return 0, state{}, ErrLockLost
	}
	return seq, st, nil
}

// verdict is how a receiver settles a locked message.
type verdict int

const (
	complete verdict = iota
	abandon
	reject
	release // back to the queue without counting a delivery (Release)
)

func (v verdict) String() string {
	return [...]string{"complete", "abandon", "reject", "release"}[v]
}

// settle applies a receiver's verdict to the message a lock token holds.
func (t *txn) settle(q *queue, token string, v verdict, maxDelivery int) error {
	seq, st, err := t.locked(q, token)
	if err != nil {
		return err
	}
	switch v {
	case complete:
		return t.finish(q, seq, st, StatusSuccess)
	case reject:
		return t.finish(q, seq, st, StatusRejected)
	}
	if v == release {
		if !t.now.Before(st.Expiry) {
			return t.finish(q, seq, st, StatusExpired)
		}
		old := st
		st.LockToken, st.LockedUntil = "", time.Time{}
		t.wake = append(t.wake, q.id)
		return t.putState(q, seq, &old, st)
	}
	old := st
	st.DeliveryCount++ // same lock and deadline as old, so finish finds its timer
	if st.DeliveryCount >= maxDelivery {
		return t.finish(q, seq, st, StatusDeliveryCountExceeded)
	}
	if !t.now.Before(st.Expiry) {
		return t.finish(q, seq, st, StatusExpired)
	}
	st.LockToken, st.LockedUntil = "", time.Time{}
	t.wake = append(t.wake, q.id)
	return t.putState(q, seq, &old, st)
}

// fire handles a message whose timer fired: a lapsed lock returns it to the queue with
// its delivery count unchanged (spec 7.1); a passed expiry dead-letters it.
func (t *txn) fire(q *queue, seq uint64, st state) error {
	if st.lockValid(t.now) {
		return nil
	}
	if !t.now.Before(st.Expiry) {
		return t.finish(q, seq, st, StatusExpired)
	}
	if !st.locked() {
		return nil
	}
	old := st
	st.LockToken, st.LockedUntil = "", time.Time{}
	t.wake = append(t.wake, q.id)
	return t.putState(q, seq, &old, st)
}

// states lists a queue's messages in sequence order.
func (t *txn) states(q *queue) ([]uint64, []state, error) {
	var seqs []uint64
	var sts []state
	c := q.b.Cursor()
	prefix := []byte{prefixStat}
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		st, err := decodeState(v)
		if err != nil {
			return nil, nil, fmt.Errorf("decode state %x: %w", k, err)
		}
		seqs = append(seqs, getU64(k[1:]))
		sts = append(sts, st)
	}
	return seqs, sts, nil
}

// newLockToken returns a random GUID-shaped token, like IoT Hub's.
func newLockToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics instead)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

func checkDevice(deviceID string) error {
	if deviceID == "" {
		return fmt.Errorf("%w: empty device id", ErrInvalid)
	}
	return nil
}

// Send enqueues a message for a device and returns it as stored (sequence number, enqueued
// and expiry time, to, ack filled in). A zero ExpiryTime means now + DefaultTTL; an expiry
// beyond now + MaxTTL is capped to it; an expiry already past is accepted and dead-lettered
// by the next sweep (with Expired feedback if asked for). Errors: ErrInvalid, ErrTooLarge,
// ErrDeviceNotFound, ErrQueueFull.
func (s *Store) Send(ctx context.Context, deviceID string, m Message) (Message, error) {
	if err := ctx.Err(); err != nil {
		return Message{}, err
	}
	if err := checkDevice(deviceID); err != nil {
		return Message{}, fmt.Errorf("c2d: send: %w", err)
	}
	if err := m.normalize(); err != nil {
		return Message{}, fmt.Errorf("c2d: send to %s: %w", deviceID, err)
	}
	gen, err := s.lookup(ctx, deviceID)
	if err != nil {
		return Message{}, fmt.Errorf("c2d: send to %s: %w", deviceID, err)
	}
	now := s.now().UTC()
	if m.ExpiryTime.IsZero() {
		m.ExpiryTime = now.Add(s.set.DefaultTTL)
	} else if limit := now.Add(s.set.MaxTTL); m.ExpiryTime.After(limit) {
		m.ExpiryTime = limit
	}
	m.ExpiryTime = m.ExpiryTime.UTC()
	m.To = DeviceboundPath(deviceID)
	m.EnqueuedTime = now
	m.DeliveryCount, m.LockToken, m.LockedUntil = 0, "", time.Time{}
	c := content{
		MessageID: m.MessageID, CorrelationID: m.CorrelationID, UserID: m.UserID,
		ContentType: m.ContentType, ContentEncoding: m.ContentEncoding, Ack: m.Ack,
		GenerationID: gen, Enqueued: now, Properties: m.Properties, Body: m.Body,
	}
	err = s.update(func(t *txn) error {
		t.now = now // the times stamped on m above
		q, err := t.queue(deviceID, true)
		if err != nil {
			return err
		}
		if q.count() >= uint64(s.set.MaxQueueDepth) {
			// The sweeper may not have caught up with expired messages yet.
			if err := t.expireAll(q); err != nil {
				return err
			}
			if q.count() >= uint64(s.set.MaxQueueDepth) {
				return fmt.Errorf("%w: %d messages pending, the limit is %d", ErrQueueFull, q.count(), s.set.MaxQueueDepth)
			}
		}
		m.SequenceNumber, err = t.enqueue(q, &c, state{Expiry: m.ExpiryTime})
		return err
	})
	if err != nil {
		return Message{}, fmt.Errorf("c2d: send to %s: %w", deviceID, err)
	}
	if err := s.recheck(ctx, deviceID, gen, m.SequenceNumber); err != nil {
		return Message{}, fmt.Errorf("c2d: send to %s: %w", deviceID, err)
	}
	return m, nil
}

// lookup returns the device's generation id, or ErrDeviceNotFound.
func (s *Store) lookup(ctx context.Context, deviceID string) (string, error) {
	if s.exists == nil {
		return "", nil
	}
	gen, ok, err := s.exists(ctx, deviceID)
	if err != nil {
		return "", fmt.Errorf("look up device: %w", err)
	}
	if !ok {
		return "", ErrDeviceNotFound
	}
	return gen, nil
}

// recheck closes the race between Send's lookup and a concurrent device delete: the
// registry's delete hook calls DeleteDevice after its commit, which can run before our
// enqueue and leave a message for a device that no longer exists (or was re-created). Looking
// again after our commit catches every order: if the delete committed before this look, we
// see it; if after, its hook runs after our commit and drops the queue.
func (s *Store) recheck(ctx context.Context, deviceID, gen string, seq uint64) error {
	if s.exists == nil {
		return nil
	}
	now, ok, err := s.exists(context.WithoutCancel(ctx), deviceID)
	if err == nil && ok && now == gen {
		return nil
	}
	if err != nil {
		// Keep the message: a transient lookup failure must not lose a committed send.
		s.log.Warn("c2d: could not recheck device after send", "deviceId", deviceID, "err", err)
		return nil
	}
	derr := s.update(func(t *txn) error {
		q, err := t.queue(deviceID, false)
		if err != nil || q == nil {
			return err
		}
		st, found, err := t.getState(q, seq)
		if err != nil || !found {
			return err
		}
		return t.remove(q, seq, st)
	})
	if derr != nil {
		return fmt.Errorf("drop message for deleted device: %w", derr)
	}
	return ErrDeviceNotFound
}

// expireAll dead-letters every expired, unlocked message of q.
func (t *txn) expireAll(q *queue) error {
	seqs, sts, err := t.states(q)
	if err != nil {
		return err
	}
	for i, st := range sts {
		if !st.lockValid(t.now) && !t.now.Before(st.Expiry) {
			if err := t.finish(q, seqs[i], st, StatusExpired); err != nil {
				return err
			}
		}
	}
	return nil
}

// Receive locks the next visible message of the device's queue (the lowest sequence number
// that is not locked) under a new lock token for LockDuration and returns it. It changes no
// delivery count. Expired messages met on the way are dead-lettered. ok is false when nothing
// is visible.
func (s *Store) Receive(ctx context.Context, deviceID string) (Message, bool, error) {
	if err := ctx.Err(); err != nil {
		return Message{}, false, err
	}
	if err := checkDevice(deviceID); err != nil {
		return Message{}, false, fmt.Errorf("c2d: receive: %w", err)
	}
	var (
		m  Message
		ok bool
	)
	err := s.update(func(t *txn) error {
		m, ok = Message{}, false
		q, err := t.queue(deviceID, false)
		if err != nil || q == nil {
			return err
		}
		seq, st, found, err := t.receive(q, s.set.LockDuration)
		if err != nil || !found {
			return err
		}
		c, err := t.getContent(q, seq)
		if err != nil {
			return err
		}
		m, ok = c.message(deviceID, seq, st), true
		return nil
	})
	if err != nil {
		return Message{}, false, fmt.Errorf("c2d: receive for %s: %w", deviceID, err)
	}
	return m, ok, nil
}

func (c *content) message(deviceID string, seq uint64, st state) Message {
	return Message{
		SequenceNumber:  seq,
		MessageID:       c.MessageID,
		CorrelationID:   c.CorrelationID,
		UserID:          c.UserID,
		To:              DeviceboundPath(deviceID),
		ContentType:     c.ContentType,
		ContentEncoding: c.ContentEncoding,
		ExpiryTime:      st.Expiry,
		Ack:             c.Ack,
		Properties:      c.Properties,
		Body:            c.Body,
		EnqueuedTime:    c.Enqueued,
		DeliveryCount:   st.DeliveryCount,
		LockToken:       st.LockToken,
		LockedUntil:     st.LockedUntil,
	}
}

// Complete removes a locked message (Success feedback if asked for). Errors: ErrLockLost if
// the token is unknown or its lock expired. A message whose expiry passed while it was
// locked still completes: the device has it.
func (s *Store) Complete(ctx context.Context, deviceID, lockToken string) error {
	return s.settleDevice(ctx, deviceID, lockToken, complete)
}

// Abandon returns a locked message to the queue with its delivery count + 1; reaching
// MaxDeliveryCount dead-letters it (DeliveryCountExceeded), and so does an expiry that passed
// while it was locked (Expired). Errors: ErrLockLost.
func (s *Store) Abandon(ctx context.Context, deviceID, lockToken string) error {
	return s.settleDevice(ctx, deviceID, lockToken, abandon)
}

// Reject dead-letters a locked message (Rejected feedback if asked for). Errors: ErrLockLost.
func (s *Store) Reject(ctx context.Context, deviceID, lockToken string) error {
	return s.settleDevice(ctx, deviceID, lockToken, reject)
}

// Release returns a locked message to the queue at once, as if its lock had expired: the
// delivery count is unchanged and receivers are woken. It is for a transport that loses its
// connection with a delivery unacknowledged (MQTT: no PUBACK before the connection ended), so
// the message is redelivered on reconnect instead of after the lock duration. An expiry that
// passed while the message was locked dead-letters it (Expired). Errors: ErrLockLost.
func (s *Store) Release(ctx context.Context, deviceID, lockToken string) error {
	return s.settleDevice(ctx, deviceID, lockToken, release)
}

func (s *Store) settleDevice(ctx context.Context, deviceID, lockToken string, v verdict) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkDevice(deviceID); err != nil {
		return fmt.Errorf("c2d: %s: %w", v, err)
	}
	err := s.update(func(t *txn) error {
		q, err := t.queue(deviceID, false)
		if err != nil {
			return err
		}
		return t.settle(q, lockToken, v, s.set.MaxDeliveryCount)
	})
	if err != nil {
		return fmt.Errorf("c2d: %s message of %s: %w", v, deviceID, err)
	}
	return nil
}

// Purge removes every message of the device's queue, locked or not, and returns how many
// there were. Messages that asked for negative or full ack produce Purged feedback. The
// sequence numbers are not reset. Errors: ErrDeviceNotFound (when Options.DeviceExists is
// set).
func (s *Store) Purge(ctx context.Context, deviceID string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkDevice(deviceID); err != nil {
		return 0, fmt.Errorf("c2d: purge: %w", err)
	}
	if _, err := s.lookup(ctx, deviceID); err != nil {
		return 0, fmt.Errorf("c2d: purge %s: %w", deviceID, err)
	}
	var n int
	err := s.update(func(t *txn) error {
		n = 0
		q, err := t.queue(deviceID, false)
		if err != nil || q == nil {
			return err
		}
		seqs, sts, err := t.states(q)
		if err != nil {
			return err
		}
		for i := range seqs {
			if err := t.finish(q, seqs[i], sts[i], StatusPurged); err != nil {
				return err
			}
		}
		n = len(seqs)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("c2d: purge %s: %w", deviceID, err)
	}
	return n, nil
}

// DeleteDevice drops a device's queue and its feedback records not yet batched into a
// feedback message, without feedback (IoT Hub: feedback for a deleted device is lost). The
// sequence counter is kept, so a re-created device continues numbering. Receivers waiting on
// Notify are woken. Deleting a device without a queue is not an error.
func (s *Store) DeleteDevice(ctx context.Context, deviceID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkDevice(deviceID); err != nil {
		return fmt.Errorf("c2d: delete device: %w", err)
	}
	err := s.update(func(t *txn) error {
		q, err := t.queue(deviceID, false)
		if err != nil {
			return err
		}
		if q != nil {
			seqs, sts, err := t.states(q)
			if err != nil {
				return err
			}
			t.changed = true
			timers := t.tx.Bucket(timersBucket)
			for i := range seqs {
				if err := timers.Delete(timerKey(sts[i].deadline(), seqs[i], deviceID)); err != nil {
					return err
				}
			}
			if err := t.tx.Bucket(queuesBucket).DeleteBucket([]byte(deviceID)); err != nil {
				return err
			}
		}
		t.wake = append(t.wake, deviceID)
		return t.dropPending(deviceID)
	})
	if err != nil {
		return fmt.Errorf("c2d: delete device %s: %w", deviceID, err)
	}
	s.wake(deviceID) // also when nothing changed: a waiter should re-check
	return nil
}

// PendingCount returns the device's Enqueued + Invisible messages (the registry's
// cloudToDeviceMessageCount): one read transaction, no write. Expired messages count until
// the sweeper removes them. On a storage error it returns 0.
func (s *Store) PendingCount(deviceID string) int {
	var n uint64
	err := s.db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(queuesBucket).Bucket([]byte(deviceID)); b != nil && deviceID != "" {
			n = getU64(b.Get([]byte(countKey)))
		}
		return nil
	})
	if err != nil {
		s.log.Error("c2d: pending count", "deviceId", deviceID, "err", err)
		return 0
	}
	return int(n)
}
