package endpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/telemetry"
)

// LogReader is what the dispatcher needs of the telemetry log (*telemetry.Log implements it).
type LogReader interface {
	Partitions() int
	Read(partition int, from int64, max, maxBytes int) ([]telemetry.Record, error)
	Notify(partition int) <-chan struct{}
	Info(partition int) (telemetry.PartitionInfo, error)
}

// Defaults of the health thresholds (Config).
const (
	DefaultUnhealthyAfter    = time.Minute
	DefaultDeadAfter         = 15 * time.Minute
	DefaultDeadRetryInterval = 5 * time.Minute
	DefaultInitialBackoff    = time.Second
	DefaultMaxBackoff        = time.Minute
)

// Config configures a Dispatcher. Log and DB are required.
type Config struct {
	Log LogReader
	// DB is the hub's metadata database; the dispatcher keeps its cursors in its own bucket.
	DB *bbolt.DB
	// Enrich, if set, adds the endpoint's enrichments to a message (a private copy) just before
	// delivery.
	Enrich  func(endpoint string, m *message.Message)
	HubName string
	Logger  *slog.Logger     // nil: discard
	Now     func() time.Time // nil: time.Now

	// Health thresholds (zero: defaults). A partition of an endpoint that keeps failing is
	// degraded, then unhealthy after UnhealthyAfter of failures, then dead after DeadAfter; a
	// dead endpoint is retried every DeadRetryInterval (or its spec's retry.maxInterval if
	// longer), so it catches up when it comes back.
	UnhealthyAfter    time.Duration
	DeadAfter         time.Duration
	DeadRetryInterval time.Duration
}

// State is an endpoint's health, with IoT Hub's names.
type State string

// Health states.
const (
	StateUnknown   State = "unknown"
	StateHealthy   State = "healthy"
	StateDegraded  State = "degraded"
	StateUnhealthy State = "unhealthy"
	StateDead      State = "dead"
)

func (s State) rank() int {
	switch s {
	case StateHealthy:
		return 1
	case StateDegraded:
		return 2
	case StateUnhealthy:
		return 3
	case StateDead:
		return 4
	}
	return 0
}

// EndpointHealth describes one custom endpoint.
type EndpointHealth struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	State State  `json:"state"`
	// LastError is the most recent delivery error of any partition (empty if none yet).
	LastError     string    `json:"lastError,omitempty"`
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
	// LastSuccess is when a delivery last succeeded.
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	// Lag is the number of log records (of any endpoint) behind the cursors, all partitions.
	Lag int64 `json:"lag"`
	// Delivered counts messages delivered since the endpoint started (redeliveries included).
	Delivered int64 `json:"delivered"`
	// Lost counts records that retention removed before the endpoint delivered them.
	Lost int64 `json:"lost"`
	// Dropped counts messages not delivered on purpose: undecodable records and messages over
	// 256 KB after enrichment (as IoT Hub drops them).
	Dropped int64 `json:"dropped"`
}

// Dispatcher delivers routed messages to the custom endpoints.
type Dispatcher struct {
	cfg     Config
	log     *slog.Logger
	cursors *cursorStore
	ctx     context.Context
	cancel  context.CancelFunc

	applyMu sync.Mutex // serialises Apply and Close
	mu      sync.Mutex // guards eps, closed
	eps     map[string]*runner
	closed  bool
}

// NewDispatcher returns a dispatcher with no endpoints; Apply starts them.
func NewDispatcher(c Config) (*Dispatcher, error) {
	if c.Log == nil || c.DB == nil {
		return nil, errors.New("endpoint dispatcher: Log and DB are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.UnhealthyAfter <= 0 {
		c.UnhealthyAfter = DefaultUnhealthyAfter
	}
	if c.DeadAfter <= 0 {
		c.DeadAfter = DefaultDeadAfter
	}
	if c.DeadRetryInterval <= 0 {
		c.DeadRetryInterval = DefaultDeadRetryInterval
	}
	cs, err := newCursorStore(c.DB)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Dispatcher{cfg: c, log: c.Logger, cursors: cs, ctx: ctx, cancel: cancel, eps: map[string]*runner{}}, nil
}

// Apply makes the running endpoints those of specs, which is the complete desired set. A new
// endpoint starts at the log's current end (or where its persisted cursor is, after a restart);
// an endpoint no longer in specs is stopped and its cursors deleted; an endpoint whose spec
// changed is restarted from its cursor. Apply validates everything and opens the new sinks
// before changing anything: on error nothing changed. Endpoints that are down do not fail Apply:
// sinks connect on first delivery.
func (d *Dispatcher) Apply(ctx context.Context, specs []Spec) error {
	if err := ValidateAll(specs); err != nil {
		return err
	}
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return errors.New("endpoint dispatcher closed")
	}
	current := make(map[string]*runner, len(d.eps))
	for k, v := range d.eps {
		current[k] = v
	}
	d.mu.Unlock()

	desired := make(map[string]Spec, len(specs))
	for _, s := range specs {
		desired[s.Name] = s
	}
	// Open the sinks of new and changed endpoints first.
	type opened struct {
		spec   Spec
		sink   Sink
		limits batchLimits
	}
	var starts []opened
	env := sinkEnv{hub: d.cfg.HubName, now: d.cfg.Now, log: d.log}
	for _, s := range specs {
		if r, ok := current[s.Name]; ok && reflect.DeepEqual(r.spec, s) {
			continue
		}
		sink, limits, err := openSink(s, env)
		if err != nil {
			for _, o := range starts {
				o.sink.Close()
			}
			return err
		}
		starts = append(starts, opened{s, sink, limits})
	}
	var errs []error
	// Stop removed and changed endpoints.
	for name, r := range current {
		s, keep := desired[name]
		if keep && reflect.DeepEqual(r.spec, s) {
			continue
		}
		d.stop(ctx, r)
		d.mu.Lock()
		delete(d.eps, name)
		d.mu.Unlock()
		if !keep {
			if err := d.cursors.remove(name); err != nil {
				errs = append(errs, err)
			}
			d.log.Info("endpoint removed", "endpoint", name)
		}
	}
	// Cursors of endpoints removed while the hub was not running.
	if names, err := d.cursors.names(); err == nil {
		for _, name := range names {
			if _, ok := desired[name]; !ok {
				if err := d.cursors.remove(name); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	for _, o := range starts {
		r, err := d.start(o.spec, o.sink, o.limits)
		if err != nil {
			o.sink.Close()
			errs = append(errs, err)
			continue
		}
		d.mu.Lock()
		d.eps[o.spec.Name] = r
		d.mu.Unlock()
	}
	return errors.Join(errs...)
}

// start loads or creates the endpoint's cursors and starts one deliverer per partition.
func (d *Dispatcher) start(s Spec, sink Sink, limits batchLimits) (*runner, error) {
	n := d.cfg.Log.Partitions()
	cursors, existed, err := d.cursors.load(s.Name)
	if err != nil {
		return nil, err
	}
	if cursors == nil {
		cursors = map[int]int64{}
	}
	fresh := map[int]int64{}
	for p := range n {
		info, err := d.cfg.Log.Info(p)
		if err != nil {
			return nil, fmt.Errorf("endpoint %q: %w", s.Name, err)
		}
		end := info.Last + 1
		seq, ok := cursors[p]
		switch {
		case !ok:
			fresh[p] = end
		case seq > end:
			d.log.Warn("endpoint cursor is beyond the end of the log (was the log replaced?): starting at the end",
				"endpoint", s.Name, "partition", p, "cursor", seq, "end", end)
			fresh[p] = end
		}
	}
	if len(fresh) > 0 {
		if err := d.cursors.save(s.Name, fresh); err != nil {
			return nil, err
		}
		for p, seq := range fresh {
			cursors[p] = seq
		}
	}
	ctx, cancel := context.WithCancel(d.ctx)
	r := &runner{d: d, spec: s, sink: sink, limits: limits, cancel: cancel, parts: make([]*partState, n)}
	r.retryInitial, r.retryMax = DefaultInitialBackoff, DefaultMaxBackoff
	if s.Retry != nil {
		if s.Retry.InitialInterval > 0 {
			r.retryInitial = time.Duration(s.Retry.InitialInterval)
		}
		if s.Retry.MaxInterval > 0 {
			r.retryMax = time.Duration(s.Retry.MaxInterval)
		}
		if r.retryMax < r.retryInitial {
			r.retryMax = r.retryInitial
		}
	}
	for p := range n {
		r.parts[p] = &partState{committed: cursors[p], persisted: cursors[p]}
	}
	if existed {
		d.log.Info("endpoint started from its cursors", "endpoint", s.Name, "type", s.Type)
	} else {
		d.log.Info("endpoint started at the end of the log", "endpoint", s.Name, "type", s.Type)
	}
	for p := range n {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.run(ctx, p)
		}()
	}
	return r, nil
}

// stop cancels the endpoint's deliverers, waits for them (they commit what they can and persist
// their cursors) and closes its sink.
func (d *Dispatcher) stop(ctx context.Context, r *runner) {
	r.cancel()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		d.log.Warn("endpoint still stopping", "endpoint", r.spec.Name)
		<-done
	}
	if err := r.sink.Close(); err != nil {
		d.log.Warn("endpoint close", "endpoint", r.spec.Name, "err", err)
	}
}

// Health reports every endpoint, by name.
func (d *Dispatcher) Health() []EndpointHealth {
	d.mu.Lock()
	rs := make([]*runner, 0, len(d.eps))
	for _, r := range d.eps {
		rs = append(rs, r)
	}
	d.mu.Unlock()
	sort.Slice(rs, func(i, j int) bool { return rs[i].spec.Name < rs[j].spec.Name })
	now := d.cfg.Now()
	out := make([]EndpointHealth, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.health(now))
	}
	return out
}

// Close stops every endpoint (persisting cursors) and closes the sinks. The DB and the log stay
// open: they belong to the caller.
func (d *Dispatcher) Close() error {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	rs := d.eps
	d.eps = map[string]*runner{}
	d.mu.Unlock()
	d.cancel()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.stop(context.Background(), r)
		}()
	}
	wg.Wait()
	return nil
}

// runner is one running endpoint.
type runner struct {
	d            *Dispatcher
	spec         Spec
	sink         Sink
	limits       batchLimits
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	parts        []*partState
	retryInitial time.Duration
	retryMax     time.Duration

	delivered, lost, dropped atomic.Int64
}

// partState is one partition deliverer's cursor and health.
type partState struct {
	mu          sync.Mutex
	committed   int64 // next sequence to deliver: everything before is delivered
	persisted   int64 // committed as last saved
	failures    int   // consecutive failures
	failSince   time.Time
	lastErr     string
	lastErrAt   time.Time
	lastSuccess time.Time
}

func (ps *partState) state(now time.Time, c *Config) State {
	switch {
	case ps.failures > 0:
		since := now.Sub(ps.failSince)
		switch {
		case since >= c.DeadAfter:
			return StateDead
		case since >= c.UnhealthyAfter:
			return StateUnhealthy
		}
		return StateDegraded
	case !ps.lastSuccess.IsZero():
		return StateHealthy
	}
	return StateUnknown
}

func (r *runner) health(now time.Time) EndpointHealth {
	h := EndpointHealth{Name: r.spec.Name, Type: r.spec.Type, State: StateUnknown,
		Delivered: r.delivered.Load(), Lost: r.lost.Load(), Dropped: r.dropped.Load()}
	for p, ps := range r.parts {
		ps.mu.Lock()
		st := ps.state(now, &r.d.cfg)
		if st.rank() > h.State.rank() {
			h.State = st
		}
		if ps.lastErrAt.After(h.LastErrorTime) {
			h.LastError, h.LastErrorTime = ps.lastErr, ps.lastErrAt
		}
		if ps.lastSuccess.After(h.LastSuccess) {
			h.LastSuccess = ps.lastSuccess
		}
		committed := ps.committed
		ps.mu.Unlock()
		if info, err := r.d.cfg.Log.Info(p); err == nil && info.Last+1 > committed {
			h.Lag += info.Last + 1 - committed
		}
	}
	return h
}
