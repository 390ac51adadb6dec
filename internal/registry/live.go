package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// liveState is what transports report about an identity at runtime. It is
// kept in memory because it changes on every publish; Flush persists the
// timestamps. The connection state itself is never persisted: after a
// restart nothing is connected, whatever the database said.
type liveState struct {
	connected    bool
	stateUpdated time.Time
	lastActivity time.Time
	dirty        bool
}

// SetConnectionState records that an identity connected or disconnected at
// at. Connecting also counts as activity. It only touches memory.
func (r *Registry) SetConnectionState(ctx context.Context, deviceID, moduleID string, connected bool, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	at = at.UTC()
	r.liveMu.Lock()
	s := r.liveFor(credKey{device: deviceID, module: moduleID})
	s.connected = connected
	s.stateUpdated = at
	if connected && at.After(s.lastActivity) {
		s.lastActivity = at
	}
	s.dirty = true
	r.liveMu.Unlock()
	return nil
}

// RecordActivity notes that an identity sent or received something at at.
// It is cheap enough to call per message: a map lookup under a mutex, no
// I/O and, after the first call for an identity, no allocation.
func (r *Registry) RecordActivity(deviceID, moduleID string, at time.Time) {
	r.liveMu.Lock()
	s := r.liveFor(credKey{device: deviceID, module: moduleID})
	if at.After(s.lastActivity) {
		s.lastActivity = at.UTC()
		s.dirty = true
	}
	r.liveMu.Unlock()
}

// liveFor returns k's state, creating it. r.liveMu must be held.
func (r *Registry) liveFor(k credKey) *liveState {
	s := r.live[k]
	if s == nil {
		s = &liveState{}
		r.live[k] = s
	}
	return s
}

// overlay applies runtime state to an identity read from the database.
func (r *Registry) overlay(k credKey, state *ConnectionState, stateUpdated, lastActivity *time.Time) {
	*state = Disconnected
	r.liveMu.Lock()
	s := r.live[k]
	if s != nil {
		if s.connected {
			*state = Connected
		}
		if s.stateUpdated.After(*stateUpdated) {
			*stateUpdated = s.stateUpdated
		}
		if s.lastActivity.After(*lastActivity) {
			*lastActivity = s.lastActivity
		}
	}
	r.liveMu.Unlock()
}

// forget drops runtime state of deleted identities.
func (r *Registry) forget(keys ...credKey) {
	r.liveMu.Lock()
	for _, k := range keys {
		delete(r.live, k)
	}
	r.liveMu.Unlock()
}

// Flush persists connectionStateUpdatedTime and lastActivityTime of every
// identity that changed since the last flush, in one write transaction.
// It does not change etags: these fields are not part of the identity.
func (r *Registry) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	type item struct {
		k            credKey
		stateUpdated time.Time
		lastActivity time.Time
	}
	var items []item
	r.liveMu.Lock()
	for k, s := range r.live {
		if s.dirty {
			items = append(items, item{k, s.stateUpdated, s.lastActivity})
			s.dirty = false
		}
	}
	r.liveMu.Unlock()
	if len(items) == 0 {
		return nil
	}
	var gone []credKey
	err := r.db.Update(func(tx *bbolt.Tx) error {
		gone = gone[:0]
		for _, it := range items {
			err := patchTimes(tx, it.k, it.stateUpdated, it.lastActivity)
			if errors.Is(err, ErrDeviceNotFound) || errors.Is(err, ErrModuleNotFound) {
				gone = append(gone, it.k) // deleted meanwhile
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Retry at the next flush.
		r.liveMu.Lock()
		for _, it := range items {
			if s := r.live[it.k]; s != nil {
				s.dirty = true
			}
		}
		r.liveMu.Unlock()
		return fmt.Errorf("registry: flush activity: %w", err)
	}
	r.liveMu.Lock()
	for _, k := range gone {
		if s := r.live[k]; s != nil && !s.dirty && !s.connected {
			delete(r.live, k)
		}
	}
	r.liveMu.Unlock()
	return nil
}

// patchTimes moves the stored timestamps of k forward to the given ones.
func patchTimes(tx *bbolt.Tx, k credKey, stateUpdated, lastActivity time.Time) error {
	later := func(dst *time.Time, t time.Time) {
		if t.After(*dst) {
			*dst = t
		}
	}
	if k.module == "" {
		d, err := getDevice(tx, k.device)
		if err != nil {
			return err
		}
		later(&d.ConnectionStateUpdatedTime, stateUpdated)
		later(&d.LastActivityTime, lastActivity)
		return putJSON(tx.Bucket(devicesBucket), []byte(k.device), d)
	}
	m, err := getModule(tx, k.device, k.module)
	if err != nil {
		return err
	}
	later(&m.ConnectionStateUpdatedTime, stateUpdated)
	later(&m.LastActivityTime, lastActivity)
	return putJSON(tx.Bucket(modulesBucket), moduleKey(k.device, k.module), m)
}

// Run flushes every interval until ctx is done, then once more. A failed
// flush keeps its entries for the next one and is reported to onErr (which
// may be nil).
func (r *Registry) Run(ctx context.Context, interval time.Duration, onErr func(error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return r.Flush(context.WithoutCancel(ctx))
		case <-t.C:
			if err := r.Flush(ctx); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}
}
