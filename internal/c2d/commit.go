package c2d

import (
	"errors"
	"fmt"

	"go.etcd.io/bbolt"
)

// Group commit. bbolt fsyncs every commit (twice), so one transaction per operation caps the
// store at a few thousand operations per second whatever the concurrency. Operations that
// arrive while a commit is running wait and then share the next transaction; a lone caller
// commits at once (bbolt's db.Batch would instead delay it by MaxBatchDelay, a setting of the
// shared db). The first waiting caller leads the next commit, so no goroutine is needed.

// maxGroup bounds the operations in one transaction, so one commit never holds everyone.
const maxGroup = 128

// errNoChange makes bbolt roll back a transaction that wrote nothing: a commit always fsyncs.
var errNoChange = errors.New("no change")

// op is one write operation waiting for a commit.
type op struct {
	fn   func(*txn) error
	err  error
	done chan bool // true: lead the next commit; false: finished, err is set
}

// update runs fn in a write transaction, possibly shared with concurrent operations, and once
// committed wakes the queues fn made visible. fn may run more than once (when a shared
// transaction fails it is retried alone), so it must set its results afresh on every run.
func (s *Store) update(fn func(*txn) error) error {
	o := &op{fn: fn, done: make(chan bool, 1)}
	s.gcMu.Lock()
	s.gcQueue = append(s.gcQueue, o)
	lead := !s.gcBusy
	s.gcBusy = true
	s.gcMu.Unlock()
	if !lead && !<-o.done {
		return o.err
	}
	s.gcMu.Lock()
	n := min(len(s.gcQueue), maxGroup)
	group := s.gcQueue[:n:n]
	s.gcQueue = s.gcQueue[n:]
	s.gcMu.Unlock()

	s.commit(group)

	s.gcMu.Lock()
	if len(s.gcQueue) > 0 {
		s.gcQueue[0].done <- true // hand over: it commits everyone who queued meanwhile
	} else {
		s.gcBusy = false
	}
	s.gcMu.Unlock()
	for _, g := range group {
		if g != o {
			g.done <- false
		}
	}
	return o.err
}

// commit runs a group in one transaction. An operation that fails with ErrLockLost or
// ErrQueueFull before writing anything just gets its error; any other failure aborts the
// shared transaction, and then every operation runs alone so only the culprit fails.
func (s *Store) commit(group []*op) {
	if len(group) > 1 {
		errs := make([]error, len(group))
		wakes := make([][]string, len(group))
		err := s.db.Update(func(tx *bbolt.Tx) error {
			changed := false
			for i, o := range group {
				t := &txn{s: s, tx: tx, now: s.now().UTC()}
				err := run(o.fn, t)
				if err != nil && (t.changed || !(errors.Is(err, ErrLockLost) || errors.Is(err, ErrQueueFull))) {
					return err
				}
				errs[i], wakes[i] = err, t.wake
				changed = changed || t.changed
			}
			if !changed {
				return errNoChange
			}
			return nil
		})
		if err == nil || errors.Is(err, errNoChange) {
			for i, o := range group {
				o.err = errs[i]
				if err == nil && errs[i] == nil {
					s.wake(wakes[i]...)
				}
			}
			return
		}
	}
	for _, o := range group {
		var wake []string
		err := s.db.Update(func(tx *bbolt.Tx) error {
			t := &txn{s: s, tx: tx, now: s.now().UTC()}
			if err := run(o.fn, t); err != nil {
				return err
			}
			if !t.changed {
				return errNoChange
			}
			wake = t.wake
			return nil
		})
		if errors.Is(err, errNoChange) {
			err = nil
		}
		if err == nil {
			s.wake(wake...)
		}
		o.err = err
	}
}

// run calls fn, turning a panic into an error so the other operations of a group, waiting on
// the leader, are still released.
func run(fn func(*txn) error, t *txn) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("c2d: panic in transaction: %v", r)
		}
	}()
	return fn(t)
}
