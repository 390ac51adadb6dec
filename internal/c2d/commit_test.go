package c2d

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"go.etcd.io/bbolt"
)

// TestGroupCommitIsolation runs operations in one group: a clean failure only fails its own
// operation; a failure after writing (or a panic) aborts the shared transaction, and the
// retry alone commits everyone else's writes and none of the culprit's.
func TestGroupCommitIsolation(t *testing.T) {
	e := newEnv(t, nil)
	testBucket := []byte("c2d.test")
	put := func(key string) func(*txn) error {
		return func(t *txn) error {
			t.changed = true
			b, err := t.tx.CreateBucketIfNotExists(testBucket)
			if err != nil {
				return err
			}
			return b.Put([]byte(key), []byte("x"))
		}
	}
	then := func(fn func(*txn) error, err error) func(*txn) error {
		return func(t *txn) error {
			if e := fn(t); e != nil {
				return e
			}
			return err
		}
	}
	storageErr := errors.New("disk on fire")
	tests := []struct {
		name    string
		culprit func(*txn) error
		want    error
		written bool
	}{
		{"clean lock lost", func(*txn) error { return ErrLockLost }, ErrLockLost, false},
		{"lock lost after a write", then(put("culprit"), ErrLockLost), ErrLockLost, false},
		{"storage error after a write", then(put("culprit"), storageErr), storageErr, false},
		{"clean storage error", func(*txn) error { return storageErr }, storageErr, false},
		{"panic", func(*txn) error { panic("boom") }, nil, false},
		{"success", put("culprit"), nil, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &op{fn: put(fmt.Sprint("a", i)), done: make(chan bool, 1)}
			c := &op{fn: tt.culprit, done: make(chan bool, 1)}
			b := &op{fn: put(fmt.Sprint("b", i)), done: make(chan bool, 1)}
			e.s.commit([]*op{a, c, b})
			if a.err != nil || b.err != nil {
				t.Fatalf("innocent ops failed: %v, %v", a.err, b.err)
			}
			if tt.want != nil && !errors.Is(c.err, tt.want) || tt.want == nil && tt.name == "panic" && c.err == nil {
				t.Fatalf("culprit err = %v, want %v", c.err, tt.want)
			}
			e.db.View(func(tx *bbolt.Tx) error {
				bk := tx.Bucket(testBucket)
				if bk.Get([]byte(fmt.Sprint("a", i))) == nil || bk.Get([]byte(fmt.Sprint("b", i))) == nil {
					t.Fatal("innocent writes lost")
				}
				if got := bk.Get([]byte("culprit")) != nil; got != tt.written {
					t.Fatalf("culprit's write committed = %v", got)
				}
				return nil
			})
		})
	}
}

// TestGroupCommitConcurrent checks that concurrent callers all get their own results.
func TestGroupCommitConcurrent(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Settings.MaxQueueDepth = 10 })
	var wg sync.WaitGroup
	var mu sync.Mutex
	full, seqs := 0, map[uint64]bool{}
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := e.s.Send(ctx, "d", Message{})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrQueueFull):
				full++
			case err != nil:
				t.Error(err)
			default:
				seqs[m.SequenceNumber] = true
			}
		}()
	}
	wg.Wait()
	if full != 30 || len(seqs) != 10 {
		t.Fatalf("%d refused, %d distinct sequence numbers", full, len(seqs))
	}
	e.checkInvariants()
}
