// Package bench is the engine of `tether bench`: it simulates devices publishing over MQTT
// 3.1.1 (TLS or plain TCP, QoS 0 or 1, a window of unacknowledged publishes per device, a fixed
// total rate or as fast as possible) and measures throughput, publish→PUBACK latency and,
// optionally, device→reader latency through the hub's built-in endpoint. It drives Tether, IoT
// Hub-shaped brokers, or any MQTT 3.1.1 broker (plain topic and credentials).
//
// Every device is one TCP connection served by two goroutines: a writer that publishes from a
// preallocated packet (rewriting only the packet id and a timestamp in place; consecutive
// publishes allowed by the window go out in one write) and a reader that matches PUBACKs to
// send times kept in a lock-free ring. The hot path allocates nothing and records latency into
// sharded log-linear histograms, so the tool costs little next to the broker it measures; its
// own CPU time is reported alongside.
//
// A run connects every device (optionally at a limited rate), starts all writers together,
// discards a warm-up period, measures for the configured duration, then stops publishing,
// waits a bounded time for outstanding acknowledgements and disconnects gracefully (DISCONNECT,
// half-close, wait for the broker to close), so the broker has read every publish before the
// tool exits. Everything stops by itself: there is no unbounded wait.
//
// QoS 1 throughput counts publishes of the measured period acknowledged. QoS 0 has no
// acknowledgement and socket buffers absorb hundreds of MB on loopback, so its throughput is
// every publish of the run over the time until the broker had read them all; the send rate is
// reported beside it.
//
// With Config.C2D set, a run measures cloud-to-device messaging instead (see c2d.go): the
// devices subscribe and acknowledge, the tool sends through the service API and measures
// send→API answer, send→device and send→completion (the device's PUBACK).
package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes a run. Devices and Addr are required; zero values elsewhere take defaults.
type Config struct {
	Addr    string      // host:port of the MQTT listener
	TLS     *tls.Config // nil: plain TCP
	Devices []Device

	QoS         int           // 0 or 1
	Window      int           // QoS 1 publishes in flight per device; default 1
	Size        int           // payload bytes; default 256
	Rate        float64       // total publishes per second over all devices; 0 = as fast as possible
	Duration    time.Duration // measured period; default 10 s
	Warmup      time.Duration // unmeasured period before it
	Drain       time.Duration // how long to wait for outstanding PUBACKs (and --e2e events) after the end; default 5 s
	ConnectRate float64       // connections per second while connecting; 0 = no limit

	// ConnectParallel bounds connection attempts in progress; default 64.
	ConnectParallel int
	ConnectTimeout  time.Duration // per connection: dial, TLS and CONNACK; default 10 s
	KeepAlive       time.Duration // MQTT keep-alive; default 60 s
	CleanSession    bool

	// Events, when set, turns on end-to-end measurement: messages read from it carrying a
	// payload timestamp of one of Devices give the device→reader latency. Needs Size >= 20.
	Events EventSource

	// C2D, when set, turns the run into the cloud-to-device mode (Tether only): the devices
	// subscribe to their devicebound topic and acknowledge, and messages are sent through C2D
	// at Rate (or as fast as Window messages outstanding per device allow). Needs Size >= 20.
	C2D C2DService
	// C2DParallel bounds the service API calls in progress at once; default 64.
	C2DParallel int

	// For the report only.
	Target string // e.g. the address and what it is
	Broker string // "tether" or "generic"
}

func (c *Config) setDefaults() error {
	if c.Addr == "" {
		return errors.New("bench: no broker address")
	}
	if len(c.Devices) == 0 {
		return errors.New("bench: no devices")
	}
	if c.QoS != 0 && c.QoS != 1 {
		return fmt.Errorf("bench: QoS %d: only 0 and 1 are supported", c.QoS)
	}
	if c.Window == 0 {
		c.Window = 1
	}
	if c.Window < 1 || c.Window > 16384 {
		return fmt.Errorf("bench: window %d is not between 1 and 16384", c.Window)
	}
	if c.Size == 0 {
		c.Size = 256
	}
	if c.Size < 0 || c.Size > 256<<20 {
		return fmt.Errorf("bench: message size %d is out of range", c.Size)
	}
	if c.C2D != nil {
		if err := c.c2dDefaults(); err != nil {
			return err
		}
	}
	if c.Events != nil && c.Size < stampLen {
		return fmt.Errorf("bench: end-to-end latency needs messages of at least %d bytes (the timestamp)", stampLen)
	}
	if c.Rate < 0 || c.ConnectRate < 0 {
		return errors.New("bench: rates cannot be negative")
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Duration < 0 || c.Warmup < 0 || c.Drain < 0 {
		return errors.New("bench: durations cannot be negative")
	}
	if c.Drain == 0 {
		c.Drain = 5 * time.Second
	}
	if c.ConnectParallel <= 0 {
		c.ConnectParallel = 64
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 60 * time.Second
	}
	if c.KeepAlive > 0xffff*time.Second {
		c.KeepAlive = 0xffff * time.Second
	}
	seen := make(map[string]bool, len(c.Devices))
	for _, d := range c.Devices {
		if d.ID == "" || d.Topic == "" {
			return errors.New("bench: every device needs a client id and a topic")
		}
		if seen[d.ID] {
			return fmt.Errorf("bench: client id %q appears twice", d.ID)
		}
		seen[d.ID] = true
	}
	return nil
}

// runner is the shared state of one run. The timeline fields are set before started is
// closed and only read after it (or after a slot written after it).
type runner struct {
	cfg      Config
	base     time.Time // monotonic origin of every ns timestamp in the run
	baseWall int64     // base as Unix ns
	interval int64     // ns between one device's publishes; 0 = as fast as possible

	t0, measureStart, sendEnd int64     // ns since base
	deadline                  time.Time // no write blocks past this
	started                   chan struct{}
	stopSend                  chan struct{} // closed at sendEnd, or when the run is cancelled
	drainDone                 chan struct{} // closed Drain after stopSend

	stopOnce  sync.Once
	stoppedAt atomic.Int64 // when stop ran, ns since base
	cpu       cpuWindow
}

// stop ends sending (at sendEnd, or early when the run is cancelled) and starts the drain.
func (r *runner) stop() {
	r.stopOnce.Do(func() {
		r.stoppedAt.Store(r.now())
		r.cpu.mark(false)
		close(r.stopSend)
		time.AfterFunc(r.cfg.Drain, func() { close(r.drainDone) })
	})
}

// startTimeline places warm-up, measurement and drain from now on.
func (r *runner) startTimeline() {
	r.t0 = r.now() + int64(10*time.Millisecond)
	r.measureStart = r.t0 + int64(r.cfg.Warmup)
	r.sendEnd = r.measureStart + int64(r.cfg.Duration)
	r.deadline = r.at(r.sendEnd).Add(r.cfg.Drain)
}

func (r *runner) now() int64            { return int64(time.Since(r.base)) }
func (r *runner) wall(now int64) int64  { return r.baseWall + now }
func (r *runner) at(ns int64) time.Time { return r.base.Add(time.Duration(ns)) }

// Run performs one run and returns its result. It returns an error only when nothing could
// be measured (invalid configuration, no device could connect); failures of some devices are
// reported in the result. Cancelling ctx ends the run early with what was measured so far.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if cfg.C2D != nil {
		return runC2D(ctx, cfg)
	}
	r := newRunner(cfg)
	defer r.stop()
	unwatch := context.AfterFunc(ctx, r.stop)
	defer unwatch()

	// Shards of the PUBACK histogram: a few per core, devices spread over them.
	shards := make([]*Histogram, min(4*runtime.GOMAXPROCS(0), len(cfg.Devices)))
	for i := range shards {
		shards[i] = NewHistogram()
	}

	res := newResult(cfg)

	// Connect every device; each starts its reader and writer at once (the writer keeps the
	// connection alive until the measurement starts).
	conns := make([]*conn, len(cfg.Devices))
	var work sync.WaitGroup
	res.Connect = connectDevices(ctx, r, func(i int, c *conn) error {
		c.h = shards[i%len(shards)]
		conns[i] = c
		work.Go(c.readLoop)
		work.Go(func() { c.writeLoop(i) })
		return nil
	})
	connected := res.Connect.Connected

	// The timeline.
	r.startTimeline()

	// The end-to-end reader starts before the publishers: the warm-up gives it time to attach.
	e2e := newE2E(r)
	if cfg.Events != nil && connected > 0 && ctx.Err() == nil {
		e2e.start(ctx)
	}

	if ctx.Err() != nil || connected == 0 {
		r.stop()
		work.Wait()
		e2e.stop()
		if connected == 0 {
			return res, fmt.Errorf("bench: no device could connect to %s: %s", cfg.Addr, res.Connect.FirstError)
		}
		res.Interrupted = true
		return res, ctx.Err()
	}

	measureTimer := time.AfterFunc(time.Until(r.at(r.measureStart)), func() { r.cpu.mark(true) })
	defer measureTimer.Stop()
	endTimer := time.AfterFunc(time.Until(r.at(r.sendEnd)), r.stop)
	defer endTimer.Stop()
	close(r.started)

	// A writer blocked past the deadline (a broker that stopped reading) is cut off.
	done := make(chan struct{})
	go func() { work.Wait(); close(done) }()
	var forced atomic.Int64
	select {
	case <-done:
	case <-time.After(time.Until(r.deadline) + 2*time.Second):
		for _, c := range conns {
			if c != nil {
				select {
				case <-c.dead:
				default:
					forced.Add(1)
					c.nc.Close()
				}
			}
		}
		<-done
	}
	r.stop() // no-op unless every writer ended before the end timer fired
	measuredEnd := r.sendEnd
	if ctx.Err() != nil {
		measuredEnd = min(r.stoppedAt.Load(), r.sendEnd)
		res.Interrupted = measuredEnd < r.sendEnd
	}
	measured := time.Duration(measuredEnd - r.measureStart)
	if measured < 0 {
		measured = 0
	}
	res.Measured = measured.Seconds()

	// Totals.
	var disconnects []error
	for _, c := range conns {
		if c == nil {
			continue
		}
		res.Sent += c.sent
		res.Acked += c.acked
		res.SentAll += c.sentAll
		res.AckedAll += c.ackedAll
		res.StrayAcks += c.strayAcks
		if err := c.disconnected(); err != nil {
			disconnects = append(disconnects, fmt.Errorf("%s: %w", c.dev.ID, err))
		}
	}
	res.Disconnects = len(disconnects)
	if len(disconnects) > 0 {
		res.FirstDisconnect = disconnects[0].Error()
	}
	res.Stuck = int(forced.Load())
	var lastClose int64
	for _, c := range conns {
		if c == nil {
			continue
		}
		if c.drained {
			lastClose = max(lastClose, c.closedAt)
		} else if c.disconnected() == nil {
			res.Undrained++
		}
	}
	if lastClose > 0 {
		res.DrainSec = max(time.Duration(lastClose-min(r.stoppedAt.Load(), r.sendEnd)), 0).Seconds()
	}
	if measured > 0 {
		res.SentPerSec = float64(res.Sent) / measured.Seconds()
	}
	// QoS 0 has no acknowledgement: what the broker took is every publish of the run, read by
	// the time it closed the last connection. The send rate alone would count what socket
	// buffers absorbed (hundreds of MB on loopback).
	qos0Accepted := cfg.QoS == 0 && res.Undrained == 0 && res.Disconnects == 0 && res.Stuck == 0 &&
		!res.Interrupted && lastClose > r.t0
	delivered := res.Sent
	if cfg.QoS == 1 {
		res.Unacked = res.Sent - res.Acked
		delivered = res.Acked
		merged := NewHistogram()
		for _, h := range shards {
			merged.Merge(h)
		}
		p := merged.Summary()
		res.Puback = &p
	}
	switch {
	case qos0Accepted:
		took := time.Duration(lastClose - r.t0).Seconds()
		res.MsgsPerSec = float64(res.SentAll) / took
		res.MBPerSec = float64(res.SentAll) * float64(cfg.Size) / took / 1e6
	case measured > 0:
		res.MsgsPerSec = float64(delivered) / measured.Seconds()
		res.MBPerSec = float64(delivered) * float64(cfg.Size) / measured.Seconds() / 1e6
	}
	if user, sys, ok := r.cpu.used(); ok {
		res.CPU = &CPUResult{User: user.Seconds(), System: sys.Seconds()}
		if measured > 0 {
			res.CPU.Cores = (user + sys).Seconds() / measured.Seconds()
		}
		if res.Sent > 0 {
			res.CPU.MicrosPerMsg = float64((user + sys).Microseconds()) / float64(res.Sent)
		}
	}

	// End to end: wait (bounded) for the reader to see what the broker accepted.
	if cfg.Events != nil {
		res.E2E = e2e.finish(ctx, delivered)
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

// cpuWindow is the process CPU time over the measured period.
type cpuWindow struct {
	mu         sync.Mutex
	start, end [2]time.Duration
	began, ok  bool
}

// mark records the start (begin) or the end of the period; an end before any start (a run
// interrupted during the warm-up) leaves nothing measured.
func (w *cpuWindow) mark(begin bool) {
	u, s, ok := cpuTime()
	w.mu.Lock()
	defer w.mu.Unlock()
	if begin {
		if !w.ok && ok {
			w.start, w.began = [2]time.Duration{u, s}, true
		}
		return
	}
	if w.began && ok && !w.ok {
		w.end, w.ok = [2]time.Duration{u, s}, true
	}
}

func (w *cpuWindow) used() (user, sys time.Duration, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.end[0] - w.start[0], w.end[1] - w.start[1], w.ok
}

func newRunner(cfg Config) *runner {
	r := &runner{
		cfg:       cfg,
		base:      time.Now(),
		interval:  intervalFor(cfg.Rate, len(cfg.Devices)),
		started:   make(chan struct{}),
		stopSend:  make(chan struct{}),
		drainDone: make(chan struct{}),
	}
	r.baseWall = r.base.UnixNano()
	return r
}

// newResult is a result with the run's conditions filled in.
func newResult(cfg Config) *Result {
	res := &Result{
		Target: cfg.Target, Broker: cfg.Broker, Transport: "tcp",
		Devices: len(cfg.Devices), QoS: cfg.QoS, Window: cfg.Window, Size: cfg.Size, Rate: cfg.Rate,
		Duration: cfg.Duration.Seconds(), Warmup: cfg.Warmup.Seconds(),
		GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(),
	}
	if cfg.TLS != nil {
		res.Transport = "tls"
	}
	return res
}

// connectDevices dials every device of r's config, paced by ConnectRate with at most
// ConnectParallel handshakes at once. ready is called (concurrently) with each connected device;
// an error from it counts the device as failed (ready closes what it opened).
func connectDevices(ctx context.Context, r *runner, ready func(i int, c *conn) error) ConnectResult {
	cfg := r.cfg
	connectHist := NewHistogram()
	var connectFailed atomic.Int64
	var firstConnectErr atomic.Pointer[string]
	var connecting sync.WaitGroup
	sem := make(chan struct{}, cfg.ConnectParallel)
	connectStart := r.now()
	cpacer := NewPacer(intervalFor(cfg.ConnectRate, 1), connectStart, 1)
connectLoop:
	for i, dev := range cfg.Devices {
		if wait := cpacer.Reserve(r.now()); wait > 0 {
			t := time.NewTimer(time.Duration(wait))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				break connectLoop
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break connectLoop
		}
		connecting.Go(func() {
			defer func() { <-sem }()
			c, took, err := dial(ctx, r, dev)
			if err == nil {
				err = ready(i, c)
			}
			if err != nil {
				connectFailed.Add(1)
				msg := fmt.Sprintf("%s: %v", dev.ID, err)
				firstConnectErr.CompareAndSwap(nil, &msg)
				return
			}
			connectHist.RecordDuration(took)
		})
	}
	connecting.Wait()
	connectEnd := r.now()
	connected := int(connectHist.Count())
	cr := ConnectResult{
		Attempted: len(cfg.Devices),
		Connected: connected,
		Failed:    int(connectFailed.Load()),
		Seconds:   time.Duration(connectEnd - connectStart).Seconds(),
		Latency:   connectHist.Summary(),
	}
	if cr.Seconds > 0 {
		cr.PerSec = float64(connected) / cr.Seconds
	}
	if p := firstConnectErr.Load(); p != nil {
		cr.FirstError = *p
	}
	return cr
}
