package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// e2eReader measures device→reader latency: the wall-clock timestamp a device wrote into the
// payload against the time the message comes out of the event source.
type e2eReader struct {
	r        *runner
	ids      map[string]struct{}
	lo, hi   int64 // wall-clock window of the measured sends
	hist     *Histogram
	received atomic.Int64
	cancel   context.CancelFunc
	done     chan struct{}
	err      error // set before done closes
}

func newE2E(r *runner) *e2eReader {
	ids := make(map[string]struct{}, len(r.cfg.Devices))
	for _, d := range r.cfg.Devices {
		ids[d.ID] = struct{}{}
	}
	return &e2eReader{r: r, ids: ids, hist: NewHistogram()}
}

func (e *e2eReader) start(ctx context.Context) {
	e.lo, e.hi = e.r.wall(e.r.measureStart), e.r.wall(e.r.sendEnd)
	ctx, e.cancel = context.WithCancel(ctx)
	e.done = make(chan struct{})
	go func() {
		defer close(e.done)
		e.err = e.r.cfg.Events(ctx, e.event)
	}()
}

func (e *e2eReader) event(deviceID, body string) {
	if _, ok := e.ids[deviceID]; !ok {
		return
	}
	ts, ok := parseStamp(body)
	if !ok || ts < e.lo || ts >= e.hi {
		return
	}
	e.hist.Record(e.r.wall(e.r.now()) - ts)
	e.received.Add(1)
}

func (e *e2eReader) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
	}
}

// finish waits until the reader has seen expected messages, the drain deadline passes or the
// stream ends, then stops it.
func (e *e2eReader) finish(ctx context.Context, expected int64) *E2EResult {
	if e.cancel == nil {
		return nil
	}
	deadline := time.Now().Add(time.Second)
	if e.r.deadline.After(deadline) {
		deadline = e.r.deadline
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for e.received.Load() < expected && time.Now().Before(deadline) {
		select {
		case <-tick.C:
		case <-e.done:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	// An error is the stream's own only if it ended before being cancelled here: a cancelled
	// stream can also fail on the truncated last line (client.ReadEvents reports it as a
	// decode error, not as the cancellation).
	ended := false
	select {
	case <-e.done:
		ended = true
	default:
	}
	e.stop()
	res := &E2EResult{Expected: expected, Received: e.received.Load(), Latency: e.hist.Summary()}
	if ended && e.err != nil && !errors.Is(e.err, context.Canceled) {
		res.Error = e.err.Error()
	}
	return res
}
