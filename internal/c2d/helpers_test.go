package c2d

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

var ctx = context.Background()

// clock is a fake clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a store on a bbolt file that a test can close and reopen.
type env struct {
	t     testing.TB
	path  string
	db    *bbolt.DB
	s     *Store
	clock *clock
	opts  Options
	// noSync skips fsync (benchmarks of the CPU cost only).
	noSync bool
}

// newEnv opens a store with a fake clock and no background sweeper; mod adjusts options.
func newEnv(t testing.TB, mod func(*Options)) *env {
	t.Helper()
	return newEnvSync(t, mod, false)
}

func newEnvSync(t testing.TB, mod func(*Options), noSync bool) *env {
	t.Helper()
	e := &env{t: t, path: filepath.Join(t.TempDir(), "meta.db"), clock: newClock(), noSync: noSync}
	e.opts = Options{HubName: "testhub", Now: e.clock.Now, SweepInterval: -1}
	if mod != nil {
		mod(&e.opts)
	}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	e.t.Helper()
	db, err := bbolt.Open(e.path, 0o600, &bbolt.Options{Timeout: time.Second, NoSync: e.noSync})
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := Open(db, e.opts)
	if err != nil {
		db.Close()
		e.t.Fatal(err)
	}
	e.db, e.s = db, s
}

func (e *env) close() {
	if e.s != nil {
		e.s.Close()
		e.db.Close()
		e.s, e.db = nil, nil
	}
}

func (e *env) reopen() {
	e.t.Helper()
	e.close()
	e.open()
}

func (e *env) send(dev string, m Message) Message {
	e.t.Helper()
	out, err := e.s.Send(ctx, dev, m)
	if err != nil {
		e.t.Fatalf("send to %s: %v", dev, err)
	}
	return out
}

func (e *env) receive(dev string) Message {
	e.t.Helper()
	m, ok, err := e.s.Receive(ctx, dev)
	if err != nil || !ok {
		e.t.Fatalf("receive for %s: ok=%v err=%v", dev, ok, err)
	}
	return m
}

func (e *env) receiveNone(dev string) {
	e.t.Helper()
	m, ok, err := e.s.Receive(ctx, dev)
	if err != nil || ok {
		e.t.Fatalf("receive for %s: want nothing, got ok=%v seq=%d err=%v", dev, ok, m.SequenceNumber, err)
	}
}

func (e *env) sweep() {
	e.t.Helper()
	if err := e.s.Sweep(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// feedback flushes pending records and drains every feedback message, completing them.
func (e *env) feedback() []FeedbackRecord {
	e.t.Helper()
	if err := e.s.FlushFeedback(ctx); err != nil {
		e.t.Fatal(err)
	}
	var out []FeedbackRecord
	for {
		fm, ok, err := e.s.ReceiveFeedback(ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, fm.Records...)
		if err := e.s.CompleteFeedback(ctx, fm.LockToken); err != nil {
			e.t.Fatal(err)
		}
	}
}

func statuses(recs []FeedbackRecord) []FeedbackStatus {
	out := []FeedbackStatus{}
	for _, r := range recs {
		out = append(out, r.StatusCode)
	}
	return out
}

func fired(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
}

// checkInvariants verifies the storage bookkeeping: every message has state and content, one
// timer at its deadline, a lock index entry iff locked, and the stored count matches; no
// timer or lock entry is left over.
func (e *env) checkInvariants() {
	e.t.Helper()
	err := e.db.View(func(tx *bbolt.Tx) error {
		timers := map[string]bool{}
		tx.Bucket(timersBucket).ForEach(func(k, _ []byte) error {
			timers[string(k)] = true
			return nil
		})
		check := func(id string, b *bbolt.Bucket) {
			var n uint64
			locks := map[string]bool{}
			b.ForEach(func(k, v []byte) error {
				if len(k) > 0 && k[0] == prefixLock {
					locks[string(k[1:])] = true
				}
				return nil
			})
			prefix := []byte{prefixStat}
			c := b.Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				n++
				seq := getU64(k[1:])
				st, err := decodeState(v)
				if err != nil {
					e.t.Errorf("queue %q seq %d: %v", id, seq, err)
					continue
				}
				if b.Get(seqKey(prefixMsg, seq)) == nil {
					e.t.Errorf("queue %q seq %d: no content", id, seq)
				}
				tk := string(timerKey(st.deadline(), seq, id))
				if !timers[tk] {
					e.t.Errorf("queue %q seq %d: no timer", id, seq)
				}
				delete(timers, tk)
				if st.locked() != (st.LockToken != "") {
					e.t.Errorf("queue %q seq %d: lock fields disagree: %+v", id, seq, st)
				}
				if st.LockToken != "" {
					if !locks[st.LockToken] {
						e.t.Errorf("queue %q seq %d: lock %s not indexed", id, seq, st.LockToken)
					}
					delete(locks, st.LockToken)
				}
			}
			if len(locks) != 0 {
				e.t.Errorf("queue %q: stale lock entries %v", id, locks)
			}
			if id != "" || b.Get([]byte(countKey)) != nil {
				if got := getU64(b.Get([]byte(countKey))); got != n {
					e.t.Errorf("queue %q: count %d, %d messages", id, got, n)
				}
			}
		}
		tx.Bucket(queuesBucket).ForEachBucket(func(k []byte) error {
			check(string(k), tx.Bucket(queuesBucket).Bucket(k))
			return nil
		})
		check("", tx.Bucket(feedbackBucket))
		if len(timers) != 0 {
			e.t.Errorf("%d stale timers", len(timers))
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}
