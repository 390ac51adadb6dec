package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
)

// Cloud-to-device mode (Config.C2D): the devices connect, subscribe to
// devices/{id}/messages/devicebound/# with QoS 1 as the Azure IoT SDKs do, and answer every
// PUBLISH with a PUBACK at once, which is completion in IoT Hub's MQTT semantics (the hub
// completes the message when the device acknowledges it). The tool sends the messages through
// the service API (POST /devices/{id}/commands), spread evenly over the devices, at Rate per
// second in total or, with Rate 0, as fast as the window allows, with at most C2DParallel
// service API calls in progress at once (as a back-end with a pool of connections would send):
// at most Window messages per device are outstanding (sent and not yet acknowledged by the device), so a device's queue
// (depth limit 50 by default, as in IoT Hub) does not overflow. Each payload starts with the
// message's per-device sequence number (c2dIDLen digits), which the device matches to the send.
// (Tether publishes at most 8 messages per connection awaiting their PUBACK; with a larger
// window the rest wait in the queue, which shows in the to-device latency.)
//
// Three latencies are measured from the moment the service API call starts (before the HTTP
// request is written):
//   - send API: until the call returned success; Tether answers once the message is durable in
//     the queue store (bbolt, group commit)
//   - to device: until the device has read the PUBLISH from its connection
//   - to completion: until the device has written its PUBACK to the connection. The hub
//     completes the message (a bbolt commit) after it reads the PUBACK; that last step is not
//     timed, but after the run every device's queue is checked (cloudToDeviceMessageCount),
//     so a message the hub did not complete is reported (and purged).
//
// Messages whose send started in the measured period are counted; warm-up ones are sent and
// acknowledged but not counted.

// C2DService is what the C2D mode needs from the hub's service API; *client.Client
// implements it.
type C2DService interface {
	SendC2D(ctx context.Context, deviceID string, m api.C2DMessage) (api.C2DSendResult, error)
	PurgeC2D(ctx context.Context, deviceID string) (int, error)
	GetDevice(ctx context.Context, id string) (api.Device, error)
}

// c2dIDLen is the width of the sequence number at the start of each C2D payload.
const c2dIDLen = 20

// c2dSendTimeout bounds one service API call.
const c2dSendTimeout = 30 * time.Second

// C2DResult is what the C2D mode measured; counts cover messages whose send started in the
// measured period.
type C2DResult struct {
	Parallel  int   `json:"parallel"`  // service API calls in progress at most
	Sent      int64 `json:"sent"`      // service API calls started
	Accepted  int64 `json:"accepted"`  // answered with success: durable in the device's queue
	Failed    int64 `json:"failed"`    // answered with an error or not at all (see Errors)
	Received  int64 `json:"received"`  // PUBLISHed to their device within the drain period
	Completed int64 `json:"completed"` // PUBACKed by their device within the drain period
	// Unexpected counts PUBLISHes that match no outstanding message of the run (a redelivery of
	// a completed message, something queued by someone else).
	Unexpected int64 `json:"unexpected"`
	// Errors counts failed sends by HTTP status and IoT Hub error code (e.g.
	// "403 DeviceMaximumQueueDepthExceeded", "429 ThrottlingException") or "transport".
	Errors     map[string]int64 `json:"errors,omitempty"`
	FirstError string           `json:"firstError,omitempty"`
	// PurgedBefore is how many messages were in the devices' queues before the run (purged).
	PurgedBefore int64 `json:"purgedBefore"`
	// LeftInQueues is how many messages the devices' queues still held after the run (the hub
	// did not complete them: sent after the device stopped, or not acknowledged in time); they
	// are purged. -1 when it could not be checked.
	LeftInQueues int64  `json:"leftInQueues"`
	CheckError   string `json:"checkError,omitempty"`

	SendAPI      Percentiles `json:"sendApiLatency"`      // call start → success returned (durable)
	ToDevice     Percentiles `json:"toDeviceLatency"`     // call start → PUBLISH read by the device
	ToCompletion Percentiles `json:"toCompletionLatency"` // call start → device's PUBACK written
}

// c2dSlot tracks one outstanding message of a device. Every field is atomic: the sender and
// the device's reader meet only through the hub.
type c2dSlot struct {
	key      atomic.Uint64 // sequence number of the message in the slot; 0 = free
	sentAt   atomic.Int64  // ns since base when its send started
	received atomic.Bool
}

// c2dRun is the state of one C2D run.
type c2dRun struct {
	r   *runner
	svc C2DService

	open    atomic.Int64  // slots in use over all devices
	calls   chan struct{} // one per service API call in progress
	filler  []byte
	sendCtx context.Context

	sent, sentAll, accepted, failed atomic.Int64
	received, completed, unexpected atomic.Int64

	apiHist, devHist, doneHist *Histogram

	errMu    sync.Mutex
	errs     map[string]int64
	firstErr string
}

// c2dDevice is one simulated device receiving C2D messages.
type c2dDevice struct {
	run *c2dRun
	idx int
	c   *conn // the MQTT connection; its reader is readLoop below, not conn.readLoop

	wmu       sync.Mutex // guards writes to c.bw
	lastWrite time.Time

	tokens  chan struct{} // one per message that may be outstanding
	slots   []c2dSlot
	mask    uint64
	nextSeq uint64 // the dispatcher's
	quit    chan struct{}
}

func (cfg *Config) c2dDefaults() error {
	if cfg.Events != nil {
		return errors.New("bench: end-to-end telemetry latency does not apply to the cloud-to-device mode")
	}
	if cfg.Size < c2dIDLen {
		return fmt.Errorf("bench: cloud-to-device messages need at least %d bytes (the message number)", c2dIDLen)
	}
	if cfg.Size > 64*1024 {
		return fmt.Errorf("bench: cloud-to-device messages are at most 64 KB (IoT Hub's limit); --size %d", cfg.Size)
	}
	cfg.QoS = 1 // the subscription's
	if cfg.C2DParallel <= 0 {
		cfg.C2DParallel = 64
	}
	return nil
}

// runC2D is Run for Config.C2D.
func runC2D(ctx context.Context, cfg Config) (*Result, error) {
	r := newRunner(cfg)
	defer r.stop()
	unwatch := context.AfterFunc(ctx, r.stop)
	defer unwatch()

	// Sends in flight finish (or fail) on their own when the run is interrupted, so that what
	// the hub accepted is accounted for; the drain period bounds them.
	sendCtx, cancelSends := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSends()
	run := &c2dRun{
		r: r, svc: cfg.C2D, sendCtx: sendCtx, calls: make(chan struct{}, cfg.C2DParallel),
		filler:  bytes.Repeat([]byte{'x'}, cfg.Size),
		apiHist: NewHistogram(), devHist: NewHistogram(), doneHist: NewHistogram(),
		errs: map[string]int64{},
	}
	res := newResult(cfg)
	res.Mode, res.QoS = "c2d", 1
	cr := &C2DResult{Parallel: cfg.C2DParallel, LeftInQueues: -1}
	res.C2D = cr

	// Empty the queues first: a message left by an earlier run would be delivered as well.
	var purged atomic.Int64
	if err := forEach(ctx, len(cfg.Devices), func(ctx context.Context, i int) error {
		n, err := cfg.C2D.PurgeC2D(ctx, cfg.Devices[i].ID)
		if err != nil {
			return fmt.Errorf("purge the cloud-to-device queue of %s: %w", cfg.Devices[i].ID, err)
		}
		purged.Add(int64(n))
		return nil
	}); err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	cr.PurgedBefore = purged.Load()

	// Connect and subscribe every device; each starts reading at once.
	devs := make([]*c2dDevice, len(cfg.Devices))
	var readers sync.WaitGroup
	res.Connect = connectDevices(ctx, r, func(i int, c *conn) error {
		if err := subscribeC2D(ctx, c); err != nil {
			c.nc.Close()
			return err
		}
		d := newC2DDevice(run, i, c)
		devs[i] = d
		readers.Go(d.readLoop)
		go d.keepAlive()
		return nil
	})
	connected := res.Connect.Connected

	r.startTimeline()

	var senders, dispatchers sync.WaitGroup
	if ctx.Err() == nil && connected > 0 {
		measureTimer := time.AfterFunc(time.Until(r.at(r.measureStart)), func() { r.cpu.mark(true) })
		defer measureTimer.Stop()
		endTimer := time.AfterFunc(time.Until(r.at(r.sendEnd)), r.stop)
		defer endTimer.Stop()
		for _, d := range devs {
			if d != nil {
				dispatchers.Go(func() { d.dispatch(&senders) })
			}
		}
		close(r.started)
	}
	stopped := false
	if connected == 0 || ctx.Err() != nil {
		r.stop()
		stopped = true
	}
	<-r.stopSend
	dispatchers.Wait()

	// Wait (bounded by the drain period) for every outstanding message to be completed or
	// its send to fail, then end the sends still in flight.
	tick := time.NewTicker(5 * time.Millisecond)
wait:
	for run.open.Load() > 0 {
		select {
		case <-tick.C:
		case <-r.drainDone:
			break wait
		}
	}
	tick.Stop()
	cancelSends()
	senders.Wait()

	// Disconnect gracefully: DISCONNECT, half-close, and wait for the hub to close.
	var closing sync.WaitGroup
	for _, d := range devs {
		if d != nil {
			closing.Go(d.finish)
		}
	}
	closing.Wait()
	readers.Wait()

	if connected == 0 {
		return res, fmt.Errorf("bench: no device could connect to %s: %s", cfg.Addr, res.Connect.FirstError)
	}

	// What the hub did not complete is still queued. Completion runs just after the PUBACK
	// is read, so give it a moment before counting.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	left, err := run.leftInQueues(cctx)
	cancel()
	cr.LeftInQueues = left
	if err != nil {
		cr.LeftInQueues = -1
		cr.CheckError = err.Error()
	}

	measuredEnd := r.sendEnd
	if stopped || ctx.Err() != nil {
		measuredEnd = min(r.stoppedAt.Load(), r.sendEnd)
		res.Interrupted = measuredEnd < r.sendEnd
	}
	measured := max(time.Duration(measuredEnd-r.measureStart), 0)
	res.Measured = measured.Seconds()

	cr.Sent, cr.Accepted, cr.Failed = run.sent.Load(), run.accepted.Load(), run.failed.Load()
	cr.Received, cr.Completed, cr.Unexpected = run.received.Load(), run.completed.Load(), run.unexpected.Load()
	run.errMu.Lock()
	if len(run.errs) > 0 {
		cr.Errors = run.errs
	}
	cr.FirstError = run.firstErr
	run.errMu.Unlock()
	cr.SendAPI, cr.ToDevice, cr.ToCompletion = run.apiHist.Summary(), run.devHist.Summary(), run.doneHist.Summary()
	res.Sent, res.SentAll = cr.Sent, run.sentAll.Load()

	var disconnects []error
	var lastClose int64
	for _, d := range devs {
		if d == nil {
			continue
		}
		if err := d.c.disconnected(); err != nil {
			disconnects = append(disconnects, fmt.Errorf("%s: %w", d.c.dev.ID, err))
		}
		if d.c.drained {
			lastClose = max(lastClose, d.c.closedAt)
		} else if d.c.disconnected() == nil {
			res.Undrained++
		}
	}
	res.Disconnects = len(disconnects)
	if len(disconnects) > 0 {
		res.FirstDisconnect = disconnects[0].Error()
	}
	if lastClose > 0 {
		res.DrainSec = max(time.Duration(lastClose-min(r.stoppedAt.Load(), r.sendEnd)), 0).Seconds()
	}
	if measured > 0 {
		res.SentPerSec = float64(cr.Sent) / measured.Seconds()
		res.MsgsPerSec = float64(cr.Completed) / measured.Seconds()
		res.MBPerSec = float64(cr.Completed) * float64(cfg.Size) / measured.Seconds() / 1e6
	}
	if user, sys, ok := r.cpu.used(); ok {
		res.CPU = &CPUResult{User: user.Seconds(), System: sys.Seconds()}
		if measured > 0 {
			res.CPU.Cores = (user + sys).Seconds() / measured.Seconds()
		}
		if cr.Sent > 0 {
			res.CPU.MicrosPerMsg = float64((user + sys).Microseconds()) / float64(cr.Sent)
		}
	}
	if ctx.Err() != nil {
		res.Interrupted = true
		return res, ctx.Err()
	}
	return res, nil
}

// subscribeC2D subscribes to the device's devicebound topic with QoS 1 and checks the grant.
func subscribeC2D(ctx context.Context, c *conn) error {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		ProtocolVersion: 4,
		PacketID:        1,
		Filters:         packets.Subscriptions{{Filter: "devices/" + c.dev.ID + "/messages/devicebound/#", Qos: 1}},
	}
	var buf bytes.Buffer
	if err := pk.SubscribeEncode(&buf); err != nil {
		return fmt.Errorf("encode SUBSCRIBE: %w", err)
	}
	dl := time.Now().Add(c.r.cfg.ConnectTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.nc.SetDeadline(dl)
	defer c.nc.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.nc.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("send SUBSCRIBE: %w", err)
	}
	for {
		b, n, err := readFixedHeader(c.br)
		if err != nil {
			return fmt.Errorf("read SUBACK: %w", err)
		}
		if b>>4 != typeSuback {
			if _, err := c.br.Discard(n); err != nil { // a PINGRESP, say
				return fmt.Errorf("read SUBACK: %w", err)
			}
			continue
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(c.br, body); err != nil {
			return fmt.Errorf("read SUBACK: %w", err)
		}
		if n != 3 || body[0] != 0 || body[1] != 1 {
			return fmt.Errorf("unexpected SUBACK % x", body)
		}
		if body[2] != 1 {
			return fmt.Errorf("devicebound subscription refused or downgraded: SUBACK code 0x%02x", body[2])
		}
		return nil
	}
}

const (
	typeSuback    = 9
	pubackPacket0 = 0x40
)

func newC2DDevice(run *c2dRun, idx int, c *conn) *c2dDevice {
	w := run.r.cfg.Window
	ring := 2
	for ring < 2*w {
		ring *= 2
	}
	d := &c2dDevice{
		run: run, idx: idx, c: c,
		tokens: make(chan struct{}, w),
		slots:  make([]c2dSlot, ring),
		mask:   uint64(ring - 1),
		quit:   make(chan struct{}),
	}
	d.lastWrite = time.Now()
	for range w {
		d.tokens <- struct{}{}
	}
	return d
}

// dispatch starts the device's sends: one each time the window has room and the pacer
// allows, until the end of the send period or the connection's end.
func (d *c2dDevice) dispatch(senders *sync.WaitGroup) {
	run := d.run
	r := run.r
	cfg := &r.cfg
	var pacer *Pacer
	if r.interval > 0 {
		offset := r.interval * int64(d.idx) / int64(max(len(cfg.Devices), 1))
		pacer = NewPacer(r.interval, r.t0+offset, max(1, int64(cfg.Window)))
	} else {
		// Everyone starts at t0.
		if wait := time.Until(r.at(r.t0)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-r.stopSend:
				t.Stop()
				return
			}
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-d.tokens:
		case <-r.stopSend:
			return
		case <-d.c.dead:
			return
		}
		now := r.now()
		if pacer != nil {
			if wait := pacer.Reserve(now); wait > 0 {
				timer.Reset(time.Duration(min(wait, max(r.sendEnd-now, 0))))
				select {
				case <-timer.C:
				case <-r.stopSend:
					return
				case <-d.c.dead:
					return
				}
				now = r.now()
			}
		}
		// A service API call slot; the latencies start once the call can start.
		select {
		case run.calls <- struct{}{}:
		case <-r.stopSend:
			return
		case <-d.c.dead:
			return
		}
		now = r.now()
		if now >= r.sendEnd {
			<-run.calls
			return
		}
		seq, slot := d.claim(now)
		senders.Go(func() {
			defer func() { <-run.calls }()
			d.send(seq, slot, now)
		})
	}
}

// claim takes the next sequence number whose slot is free. A window never fills more than
// half of the ring, so one is close.
func (d *c2dDevice) claim(now int64) (uint64, *c2dSlot) {
	for {
		d.nextSeq++
		s := &d.slots[d.nextSeq&d.mask]
		if s.key.Load() == 0 {
			s.sentAt.Store(now)
			s.received.Store(false)
			s.key.Store(d.nextSeq)
			d.run.open.Add(1)
			return d.nextSeq, s
		}
	}
}

// release frees the slot of seq and returns its window token; false if someone else did.
func (d *c2dDevice) release(seq uint64, s *c2dSlot) bool {
	if !s.key.CompareAndSwap(seq, 0) {
		return false
	}
	d.run.open.Add(-1)
	d.tokens <- struct{}{}
	return true
}

func (r *runner) measures(at int64) bool { return at >= r.measureStart && at < r.sendEnd }

// send sends message seq through the service API.
func (d *c2dDevice) send(seq uint64, s *c2dSlot, start int64) {
	run := d.run
	r := run.r
	body := make([]byte, r.cfg.Size)
	copy(body, run.filler)
	v := seq
	for i := c2dIDLen - 1; i >= 0; i-- {
		body[i] = byte('0' + v%10)
		v /= 10
	}
	measured := r.measures(start)
	if measured {
		run.sent.Add(1)
	}
	run.sentAll.Add(1)
	ctx, cancel := context.WithTimeout(run.sendCtx, c2dSendTimeout)
	_, err := run.svc.SendC2D(ctx, d.c.dev.ID, api.C2DMessage{Body: string(body)})
	cancel()
	took := r.now() - start
	if err != nil {
		if measured {
			run.failed.Add(1)
		}
		run.noteError(d.c.dev.ID, err, measured)
		d.release(seq, s)
		return
	}
	if measured {
		run.accepted.Add(1)
		run.apiHist.Record(took)
	}
}

// noteError counts a failed send (by status and code when measured) and keeps the first.
func (run *c2dRun) noteError(id string, err error, measured bool) {
	key := "transport"
	var e *client.Error
	if errors.As(err, &e) {
		key = strconv.Itoa(e.StatusCode)
		if e.Code != "" {
			key += " " + e.Code
		}
	} else if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		key = "timeout or cancelled"
	}
	run.errMu.Lock()
	defer run.errMu.Unlock()
	if measured {
		run.errs[key]++
	}
	if run.firstErr == "" {
		run.firstErr = id + ": " + err.Error()
	}
}

// readLoop reads the hub's packets: each PUBLISH is acknowledged at once and matched to its
// send.
func (d *c2dDevice) readLoop() {
	c := d.c
	r := d.run.r
	defer close(c.dead)
	defer func() { c.closedAt = r.now() }()
	br := c.br
	var buf []byte
	for {
		b, n, err := readFixedHeader(br)
		if err != nil {
			c.readErr = err
			return
		}
		if b>>4 != typePublish {
			if _, err := br.Discard(n); err != nil {
				c.readErr = err
				return
			}
			continue
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			c.readErr = err
			return
		}
		at := r.now()
		if err := d.publish(b, buf, at); err != nil {
			c.readErr = err
			return
		}
	}
}

// publish handles one PUBLISH (fixed header byte b, body p) read at time at.
func (d *c2dDevice) publish(b byte, p []byte, at int64) error {
	run := d.run
	r := run.r
	qos := (b >> 1) & 3
	if len(p) < 2 {
		return errors.New("malformed PUBLISH")
	}
	off := 2 + (int(p[0])<<8 | int(p[1]))
	var id uint16
	if qos > 0 {
		if len(p) < off+2 {
			return errors.New("malformed PUBLISH")
		}
		id = uint16(p[off])<<8 | uint16(p[off+1])
		off += 2
	}
	if len(p) < off {
		return errors.New("malformed PUBLISH")
	}
	payload := p[off:]
	acked := true
	done := at
	if qos > 0 {
		acked = d.write([]byte{pubackPacket0, 2, byte(id >> 8), byte(id)})
		done = r.now()
	}
	select {
	case <-r.started:
	default:
		run.unexpected.Add(1) // before the first send: not the run's (and the timeline is not set)
		return nil
	}
	seq, ok := parseSeq(payload)
	if !ok {
		run.unexpected.Add(1)
		return nil
	}
	s := &d.slots[seq&d.mask]
	if s.key.Load() != seq || !s.received.CompareAndSwap(false, true) {
		run.unexpected.Add(1)
		return nil
	}
	sentAt := s.sentAt.Load()
	measured := r.measures(sentAt)
	if measured {
		run.received.Add(1)
		run.devHist.Record(at - sentAt)
	}
	if acked && d.release(seq, s) && measured {
		run.completed.Add(1)
		run.doneHist.Record(done - sentAt)
	}
	return nil
}

// parseSeq reads the message number at the start of a payload.
func parseSeq(p []byte) (uint64, bool) {
	if len(p) < c2dIDLen {
		return 0, false
	}
	var v uint64
	for _, ch := range p[:c2dIDLen] {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		v = v*10 + uint64(ch-'0')
	}
	return v, v > 0
}

// write sends a packet now; false once the connection is being closed or broken.
func (d *c2dDevice) write(p []byte) bool {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.c.closing.Load() {
		return false
	}
	now := time.Now()
	d.c.nc.SetWriteDeadline(now.Add(d.run.r.cfg.ConnectTimeout))
	d.c.bw.Write(p)
	if err := d.c.bw.Flush(); err != nil {
		if d.c.writeErr == nil {
			d.c.writeErr = err
		}
		d.c.nc.Close()
		return false
	}
	d.lastWrite = now
	return true
}

// keepAlive sends PINGREQ when the device has written nothing for half the keep-alive.
func (d *c2dDevice) keepAlive() {
	ka := d.run.r.cfg.KeepAlive / 2
	t := time.NewTicker(max(ka/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			d.wmu.Lock()
			idle := time.Since(d.lastWrite) >= ka
			d.wmu.Unlock()
			if idle && !d.write(pingreqPacket) {
				return
			}
		case <-d.quit:
			return
		case <-d.c.dead:
			return
		}
	}
}

// finish ends the connection the graceful way, bounded by the drain period.
func (d *c2dDevice) finish() {
	c := d.c
	r := d.run.r
	close(d.quit)
	d.wmu.Lock()
	ok := !c.closing.Load() && c.writeErr == nil
	if ok {
		c.nc.SetWriteDeadline(time.Now().Add(r.cfg.Drain))
		c.bw.Write(disconnectPacket)
		ok = c.bw.Flush() == nil
	}
	c.closing.Store(true)
	d.wmu.Unlock()
	if ok {
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		t := time.NewTimer(r.cfg.Drain)
		select {
		case <-c.dead:
			c.drained = true
		case <-t.C:
		}
		t.Stop()
	}
	c.nc.Close()
	<-c.dead
}

// leftInQueues counts the messages still queued for the devices, and purges them. The hub
// completes a message just after it reads the PUBACK, so queues that are not empty yet are
// looked at again for up to a second.
func (run *c2dRun) leftInQueues(ctx context.Context) (int64, error) {
	devs := run.r.cfg.Devices
	pending := make([]int, len(devs))
	for i := range pending {
		pending[i] = i
	}
	deadline := time.Now().Add(time.Second)
	for {
		nonEmpty := make([]bool, len(pending))
		err := forEach(ctx, len(pending), func(ctx context.Context, k int) error {
			id := devs[pending[k]].ID
			dev, err := run.svc.GetDevice(ctx, id)
			if err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
			nonEmpty[k] = dev.CloudToDeviceMessageCount > 0
			return nil
		})
		if err != nil {
			return 0, err
		}
		next := pending[:0]
		for k, ne := range nonEmpty {
			if ne {
				next = append(next, pending[k])
			}
		}
		pending = next
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	var left atomic.Int64
	err := forEach(ctx, len(pending), func(ctx context.Context, k int) error {
		id := devs[pending[k]].ID
		n, err := run.svc.PurgeC2D(ctx, id)
		if err != nil {
			return fmt.Errorf("purge %s: %w", id, err)
		}
		left.Add(int64(n))
		return nil
	})
	return left.Load(), err
}

// writeC2DText prints a C2D result for people.
func (r *Result) writeC2DText(w io.Writer) error {
	var b strings.Builder
	cr := r.C2D
	rate := "as fast as the window allows"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%g msgs/s total", r.Rate)
	}
	fmt.Fprintf(&b, "target:       %s (%s, MQTT over %s)\n", r.Target, r.Broker, strings.ToUpper(r.Transport))
	b.WriteString("mode:         cloud-to-device: sent through the service API (answered once durable in the hub's store);\n" +
		"              devices subscribe to devicebound with QoS 1 and PUBACK each message (completion)\n")
	fmt.Fprintf(&b, "conditions:   %d devices, window %d outstanding per device, at most %d API calls at once, %d-byte payload, %s, %gs measured after %gs warm-up, GOMAXPROCS %d (%d CPUs)\n",
		r.Devices, r.Window, cr.Parallel, r.Size, rate, r.Duration, r.Warmup, r.GOMAXPROCS, r.NumCPU)
	r.writeConnectText(&b, "connected and subscribed")
	fmt.Fprintf(&b, "messages:     %d sent, %d accepted by the hub, %d failed; %d received and %d completed by the devices",
		cr.Sent, cr.Accepted, cr.Failed, cr.Received, cr.Completed)
	if cr.Unexpected > 0 {
		fmt.Fprintf(&b, "; %d unexpected deliveries", cr.Unexpected)
	}
	b.WriteString("\n")
	left := "unknown"
	if cr.LeftInQueues >= 0 {
		left = strconv.FormatInt(cr.LeftInQueues, 10)
	}
	fmt.Fprintf(&b, "queues:       %s messages left in the devices' queues after the run (not completed by the hub; purged), %d purged before\n",
		left, cr.PurgedBefore)
	if cr.CheckError != "" {
		fmt.Fprintf(&b, "              check failed: %s\n", cr.CheckError)
	}
	fmt.Fprintf(&b, "throughput:   %.0f msgs/s completed, %.2f MB/s payload; sends started at %.0f msgs/s\n",
		r.MsgsPerSec, r.MBPerSec, r.SentPerSec)
	b.WriteString("latency, from the start of the service API call:\n")
	fmt.Fprintf(&b, "  API answer: %s  (hub answered: durable)\n", formatPercentiles(cr.SendAPI))
	fmt.Fprintf(&b, "  device:     %s  (PUBLISH read by the device)\n", formatPercentiles(cr.ToDevice))
	fmt.Fprintf(&b, "  completion: %s  (device's PUBACK written)\n", formatPercentiles(cr.ToCompletion))
	fmt.Fprintf(&b, "drain:        the hub closed the last connection %.2fs after the end", r.DrainSec)
	if r.Undrained > 0 {
		fmt.Fprintf(&b, "; %d connections not closed within the drain period", r.Undrained)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "errors:       %d failed sends, %d disconnects, %d connect failures\n", cr.Failed, r.Disconnects, r.Connect.Failed)
	if len(cr.Errors) > 0 {
		keys := make([]string, 0, len(cr.Errors))
		for k := range cr.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "              %d × %s\n", cr.Errors[k], k)
		}
	}
	if cr.FirstError != "" {
		fmt.Fprintf(&b, "              first send error: %s\n", cr.FirstError)
	}
	return r.finishText(&b, w, "message sent")
}
