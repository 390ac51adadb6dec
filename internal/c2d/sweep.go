package c2d

import (
	"bytes"
	"context"
	"fmt"
	"time"
)

// sweepChunk bounds the timers one sweep transaction handles, so a backlog (after downtime)
// never builds one huge transaction that blocks every sender.
const sweepChunk = 256

// run is the background sweeper started by Open.
func (s *Store) run() {
	defer close(s.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		if err := s.Sweep(ctx); err != nil {
			s.log.Error("c2d: sweep", "err", err)
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// Sweep does the time-driven work: it dead-letters expired messages (with Expired feedback),
// returns messages whose lock expired to their queue (waking Notify), drops expired feedback
// messages, and sends the pending feedback batch once its oldest record is
// FeedbackBatchInterval old. The background sweeper calls it every SweepInterval; it is
// exported for tests and for callers that run their own schedule.
func (s *Store) Sweep(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		more := false
		err := s.update(func(t *txn) error {
			more = false
			n, err := t.fireTimers(sweepChunk)
			if err != nil {
				return err
			}
			more = n == sweepChunk
			if t.pendingDue() {
				return t.flushPending()
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("c2d: sweep: %w", err)
		}
		if !more {
			return nil
		}
	}
}

// fireTimers handles up to limit timers that are due and returns how many it handled.
func (t *txn) fireTimers(limit int) (int, error) {
	timers := t.tx.Bucket(timersBucket)
	var keys [][]byte
	c := timers.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < limit; k, _ = c.Next() {
		deadline, _, _, ok := parseTimerKey(k)
		if ok && deadline.After(t.now) {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		deadline, seq, id, ok := parseTimerKey(k)
		stale := func() error { // a timer without its message: never expected, but harmless
			t.changed = true
			t.s.log.Warn("c2d: dropping stale timer", "deviceId", id, "sequenceNumber", seq)
			return timers.Delete(k)
		}
		if !ok {
			if err := stale(); err != nil {
				return 0, err
			}
			continue
		}
		q, err := t.queue(id, false)
		if err != nil {
			return 0, err
		}
		if q == nil {
			if err := stale(); err != nil {
				return 0, err
			}
			continue
		}
		st, found, err := t.getState(q, seq)
		if err != nil {
			return 0, err
		}
		if !found || !st.deadline().Equal(deadline) {
			if err := stale(); err != nil {
				return 0, err
			}
			continue
		}
		if err := t.fire(q, seq, st); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}
