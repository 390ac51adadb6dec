package endpoint

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/telemetry"
)

// persistInterval bounds how often a deliverer saves a cursor that moved only over records that
// were not for its endpoint (delivered batches are saved at once).
const persistInterval = time.Second

// stopCommitTimeout bounds the final commit of a staged chunk when an endpoint stops.
const stopCommitTimeout = 5 * time.Second

// deliverer is the state of one (endpoint, partition) delivery loop.
type deliverer struct {
	r           *runner
	p           int
	ps          *partState
	staged      stagedSink
	readPos     int64 // next record to read
	stagedEnd   int64 // with a staged chunk open: the cursor its commit establishes
	lastPersist time.Time
}

// run delivers partition p from its cursor until ctx ends. It is the only writer of its
// partState's cursor fields.
func (r *runner) run(ctx context.Context, p int) {
	dl := &deliverer{r: r, p: p, ps: r.parts[p], lastPersist: r.d.cfg.Now()}
	dl.staged, _ = r.sink.(stagedSink)
	dl.readPos = dl.committed()
	defer dl.finish()
	for ctx.Err() == nil {
		dl.step(ctx)
	}
}

func (dl *deliverer) committed() int64 {
	dl.ps.mu.Lock()
	defer dl.ps.mu.Unlock()
	return dl.ps.committed
}

func (dl *deliverer) setCommitted(seq int64) {
	dl.ps.mu.Lock()
	dl.ps.committed = seq
	dl.ps.mu.Unlock()
}

// persist saves the cursor if it moved (always when force, else at most every persistInterval).
func (dl *deliverer) persist(force bool) {
	dl.ps.mu.Lock()
	c, saved := dl.ps.committed, dl.ps.persisted
	dl.ps.mu.Unlock()
	now := dl.r.d.cfg.Now()
	if c == saved || (!force && now.Sub(dl.lastPersist) < persistInterval) {
		return
	}
	if err := dl.r.d.cursors.save(dl.r.spec.Name, map[int]int64{dl.p: c}); err != nil {
		dl.r.d.log.Error("endpoint cursor not saved", "endpoint", dl.r.spec.Name, "partition", dl.p, "err", err)
		return
	}
	dl.lastPersist = now
	dl.ps.mu.Lock()
	dl.ps.persisted = c
	dl.ps.mu.Unlock()
}

// finish runs when the deliverer stops: it commits a staged chunk if it can and saves the cursor.
func (dl *deliverer) finish() {
	if dl.staged != nil {
		if open, _ := dl.staged.Due(dl.p); open {
			ctx, cancel := context.WithTimeout(context.Background(), stopCommitTimeout)
			if err := dl.staged.Commit(ctx, dl.p); err != nil {
				dl.r.d.log.Warn("endpoint: staged messages not committed at stop; they will be delivered again",
					"endpoint", dl.r.spec.Name, "partition", dl.p, "err", err)
			} else {
				dl.setCommitted(dl.stagedEnd)
			}
			cancel()
		}
	}
	dl.persist(true)
}

// step does one read-deliver round.
func (dl *deliverer) step(ctx context.Context) {
	r, p := dl.r, dl.p
	log := r.d.cfg.Log
	if dl.staged != nil {
		if open, at := dl.staged.Due(p); open && !r.d.cfg.Now().Before(at) {
			if !dl.commit(ctx, dl.stagedEnd) {
				return
			}
		}
	}
	// Subscribe before reading so an append between the read and the wait is not missed.
	notify := log.Notify(p)
	recs, err := log.Read(p, dl.readPos, r.limits.records, r.limits.bytes)
	if errors.Is(err, telemetry.ErrBeforeRetained) {
		dl.overtaken()
		return
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		dl.failed(ctx, err)
		return
	}
	if len(recs) == 0 {
		dl.persist(true)
		var timer <-chan time.Time
		if dl.staged != nil {
			if open, at := dl.staged.Due(p); open {
				t := time.NewTimer(max(at.Sub(r.d.cfg.Now()), time.Millisecond))
				defer t.Stop()
				timer = t.C
			}
		}
		select {
		case <-notify:
		case <-timer:
		case <-ctx.Done():
		}
		return
	}
	end := recs[len(recs)-1].Sequence + 1
	batch := dl.decode(recs)
	if dl.staged != nil {
		dl.stage(ctx, batch, end)
		return
	}
	if len(batch) == 0 {
		dl.readPos = end
		dl.setCommitted(end)
		dl.persist(false)
		return
	}
	for len(batch) > 0 {
		err := r.sink.Deliver(ctx, batch)
		if err == nil {
			dl.succeeded(len(batch))
			break
		}
		var pe *PartialError
		if errors.As(err, &pe) && pe.Done > 0 && pe.Done <= len(batch) {
			dl.succeeded(pe.Done)
			batch = batch[pe.Done:]
			if len(batch) == 0 {
				break
			}
			// Everything before the first undelivered message is delivered or not ours.
			dl.setCommitted(batch[0].Sequence)
		}
		if ctx.Err() != nil {
			// Stopping: what is left is delivered again from the cursor next time.
			return
		}
		dl.failed(ctx, err)
		if ctx.Err() != nil {
			return
		}
	}
	dl.readPos = end
	dl.setCommitted(end)
	dl.persist(true)
}

// stage hands a batch to a staged sink, committing chunks that fill up.
func (dl *deliverer) stage(ctx context.Context, batch []Delivery, end int64) {
	open, _ := dl.staged.Due(dl.p)
	for len(batch) > 0 {
		err := dl.staged.Deliver(ctx, batch)
		if err == nil {
			break
		}
		var pe *PartialError
		if errors.As(err, &pe) && errors.Is(err, errChunkFull) && pe.Done < len(batch) {
			if !dl.commit(ctx, batch[pe.Done].Sequence) {
				return
			}
			batch = batch[pe.Done:]
			continue
		}
		dl.staged.Discard(dl.p)
		dl.readPos = dl.committed()
		if ctx.Err() == nil {
			dl.failed(ctx, err)
		}
		return
	}
	dl.readPos = end
	if o, _ := dl.staged.Due(dl.p); o || open {
		dl.stagedEnd = end
		return
	}
	// Nothing staged: the records were not for this endpoint.
	dl.setCommitted(end)
	dl.persist(false)
}

// commit makes a staged chunk durable and moves the cursor to cursor; on failure it rewinds the
// read position to the cursor (the chunk was discarded) and backs off.
func (dl *deliverer) commit(ctx context.Context, cursor int64) bool {
	if err := dl.staged.Commit(ctx, dl.p); err != nil {
		dl.readPos = dl.committed()
		if ctx.Err() == nil {
			dl.failed(ctx, err)
		}
		return false
	}
	dl.setCommitted(cursor)
	dl.persist(true)
	dl.succeeded(0)
	return true
}

// decode keeps the records routed to this endpoint, decoded, enriched, within IoT Hub's size.
func (dl *deliverer) decode(recs []telemetry.Record) []Delivery {
	r := dl.r
	name := r.spec.Name
	batch := make([]Delivery, 0, len(recs))
	for _, rec := range recs {
		m := new(message.Message)
		if err := m.UnmarshalBinary(rec.Data); err != nil {
			r.dropped.Add(1)
			r.d.log.Error("endpoint: undecodable record skipped", "endpoint", name, "partition", rec.Partition, "sequence", rec.Sequence, "err", err)
			continue
		}
		if !m.ToEndpoint(name) {
			continue
		}
		if r.d.cfg.Enrich != nil {
			r.d.cfg.Enrich(name, m)
		}
		if size := m.Size(); size > message.MaxD2CSize {
			r.dropped.Add(1)
			r.d.log.Warn("endpoint: message over 256 KB after enrichment dropped, as IoT Hub does", "endpoint", name,
				"partition", rec.Partition, "sequence", rec.Sequence, "size", size)
			continue
		}
		batch = append(batch, Delivery{Partition: rec.Partition, Sequence: rec.Sequence, Message: m})
	}
	return batch
}

// overtaken handles a cursor that retention overtook: the records are gone; say so loudly, count
// them and go on from the first retained record.
func (dl *deliverer) overtaken() {
	r := dl.r
	info, err := r.d.cfg.Log.Info(dl.p)
	if err != nil || info.First <= dl.readPos {
		return
	}
	lost := info.First - dl.readPos
	r.lost.Add(lost)
	r.d.log.Error("endpoint fell behind retention: records were removed before they were delivered",
		"endpoint", r.spec.Name, "partition", dl.p, "from", dl.readPos, "to", info.First-1, "lost", lost)
	dl.readPos = info.First
	if open, _ := dl.stagedOpen(); open {
		dl.stagedEnd = info.First
		return
	}
	dl.setCommitted(info.First)
	dl.persist(true)
}

func (dl *deliverer) stagedOpen() (bool, time.Time) {
	if dl.staged == nil {
		return false, time.Time{}
	}
	return dl.staged.Due(dl.p)
}

// succeeded records delivered messages (n may be 0 for a commit).
func (dl *deliverer) succeeded(n int) {
	r := dl.r
	r.delivered.Add(int64(n))
	ps := dl.ps
	ps.mu.Lock()
	prev := ps.state(r.d.cfg.Now(), &r.d.cfg)
	ps.failures = 0
	ps.lastSuccess = r.d.cfg.Now()
	ps.mu.Unlock()
	if prev != StateHealthy && prev != StateUnknown {
		r.d.log.Info("endpoint recovered", "endpoint", r.spec.Name, "partition", dl.p, "was", prev)
	}
}

// failed records a failure and waits the backoff.
func (dl *deliverer) failed(ctx context.Context, err error) {
	r := dl.r
	cfg := &r.d.cfg
	now := cfg.Now()
	ps := dl.ps
	ps.mu.Lock()
	prev := ps.state(now, cfg)
	if ps.failures == 0 {
		ps.failSince = now
	}
	ps.failures++
	ps.lastErr = err.Error()
	ps.lastErrAt = now
	st := ps.state(now, cfg)
	failures := ps.failures
	ps.mu.Unlock()
	wait := r.retryInitial
	for i := 1; i < failures && wait < r.retryMax; i++ {
		wait *= 2
	}
	wait = min(wait, r.retryMax)
	if st == StateDead {
		wait = max(cfg.DeadRetryInterval, r.retryMax)
	}
	// ±10% jitter so partitions and endpoints do not retry in lockstep.
	wait += time.Duration((rand.Float64()*0.2 - 0.1) * float64(wait))
	if st != prev {
		lvl := r.d.log.Warn
		if st == StateDead || st == StateUnhealthy {
			lvl = r.d.log.Error
		}
		lvl("endpoint health changed", "endpoint", r.spec.Name, "partition", dl.p, "state", st, "err", err, "retryIn", wait)
	} else {
		r.d.log.Debug("endpoint delivery failed", "endpoint", r.spec.Name, "partition", dl.p, "err", err, "retryIn", wait)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
