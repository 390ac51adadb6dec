package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// MQTT control packet types and the fixed packets the client sends.
const (
	typeConnack  = 2
	typePublish  = 3
	typePuback   = 4
	typePingresp = 13
)

var (
	pingreqPacket    = []byte{0xc0, 0}
	disconnectPacket = []byte{0xe0, 0}
)

// stampLen is the width of the wall-clock timestamp (Unix ns, decimal, zero-padded) at the
// start of every payload of at least that size: what --e2e measures from.
const stampLen = 20

// conn is one simulated device: a minimal MQTT 3.1.1 publisher. The writer goroutine (run)
// owns bw and the packet template; the reader goroutine (readLoop) owns br. The two meet only
// in the send-time slots (atomics) and the window channel.
type conn struct {
	r   *runner
	dev Device
	nc  net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	h   *Histogram // PUBACK latency shard

	pkt  []byte // PUBLISH template, rewritten in place per message
	idAt int    // offset of the packet id (QoS 1)
	tsAt int    // offset of the payload timestamp, -1 when the payload is too small

	// slots[id & mask] holds (sendTime << 16 | id) of an unacknowledged QoS 1 publish; 0 = free.
	// The ring is at least twice the window, so the writer always finds a free slot close by
	// even when a broker acknowledges out of order.
	slots  []atomic.Int64
	mask   uint16
	nextID uint16
	window chan struct{} // one token per publish that may be in flight

	dead     chan struct{} // closed when the reader stops
	closing  atomic.Bool   // the run ends the connection; reader errors are not disconnects
	readErr  error         // why the reader stopped, set before dead closes
	closedAt int64         // when the reader stopped (ns since base), set before dead closes
	drained  bool          // the broker closed after the DISCONNECT, within the drain period

	// Counters, each owned by one goroutine and read after both have ended.
	sent      int64 // writer: publishes sent in the measurement window
	sentAll   int64 // writer: all publishes
	writeErr  error // writer
	acked     int64 // reader: in-window publishes acknowledged
	ackedAll  int64 // reader
	strayAcks int64 // reader: PUBACKs matching no unacknowledged publish
}

// dial connects and completes CONNECT/CONNACK; it returns the time that took.
func dial(ctx context.Context, r *runner, dev Device) (*conn, time.Duration, error) {
	cfg := &r.cfg
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	d := net.Dialer{}
	nc, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, 0, err
	}
	if cfg.TLS != nil {
		tc := tls.Client(nc, cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, 0, fmt.Errorf("TLS handshake: %w", err)
		}
		nc = tc
	}
	c := &conn{
		r:    r,
		dev:  dev,
		nc:   nc,
		br:   bufio.NewReaderSize(nc, 4<<10),
		bw:   bufio.NewWriterSize(nc, writeBufferSize(cfg)),
		dead: make(chan struct{}),
	}
	if err := c.handshake(ctx); err != nil {
		nc.Close()
		return nil, 0, err
	}
	elapsed := time.Since(start)
	if err := c.prepare(); err != nil {
		nc.Close()
		return nil, 0, err
	}
	return c, elapsed, nil
}

func writeBufferSize(cfg *Config) int {
	return min(max(16<<10, 2*(cfg.Size+len("devices//messages/events/")+256)), 256<<10)
}

func (c *conn) handshake(ctx context.Context) error {
	cfg := &c.r.cfg
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: c.dev.ID,
			Keepalive:        uint16(cfg.KeepAlive / time.Second),
			Clean:            cfg.CleanSession,
		},
	}
	if c.dev.Username != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(c.dev.Username)
	}
	if c.dev.Password != "" {
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(c.dev.Password)
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		return fmt.Errorf("encode CONNECT: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(dl)
		defer c.nc.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.nc.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("send CONNECT: %w", err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(c.br, ack[:]); err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	if ack[0]>>4 != typeConnack || ack[1] != 2 {
		return fmt.Errorf("expected CONNACK, got % x", ack)
	}
	if rc := ack[3]; rc != 0 {
		return &ConnackError{Code: rc}
	}
	return nil
}

// ConnackError is a refused CONNECT.
type ConnackError struct{ Code byte }

func (e *ConnackError) Error() string {
	text := map[byte]string{1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
		4: "bad user name or password", 5: "not authorized"}[e.Code]
	return fmt.Sprintf("CONNACK 0x%02x (%s)", e.Code, text)
}

// prepare builds the PUBLISH template and the window.
func (c *conn) prepare() error {
	cfg := &c.r.cfg
	payload := bytes.Repeat([]byte{'x'}, cfg.Size)
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: byte(cfg.QoS)},
		TopicName:   c.dev.Topic, Payload: payload, ProtocolVersion: 4,
	}
	if cfg.QoS == 1 {
		pk.PacketID = 0xffff // placeholder, rewritten per message
	}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		return fmt.Errorf("encode PUBLISH: %w", err)
	}
	c.pkt = buf.Bytes()
	payloadAt := len(c.pkt) - cfg.Size
	c.idAt = payloadAt - 2
	c.tsAt = -1
	if cfg.Size >= stampLen {
		c.tsAt = payloadAt
	}
	if cfg.QoS == 1 {
		ring := 2
		for ring < 2*cfg.Window {
			ring *= 2
		}
		c.slots = make([]atomic.Int64, ring)
		c.mask = uint16(ring - 1)
		c.window = make(chan struct{}, cfg.Window)
		for range cfg.Window {
			c.window <- struct{}{}
		}
	}
	return nil
}

// takeID returns a packet id whose slot is free.
func (c *conn) takeID() uint16 {
	for {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if c.slots[c.nextID&c.mask].Load() == 0 {
			return c.nextID
		}
	}
}

// stamp writes the wall clock into the payload.
func (c *conn) stamp(wall int64) {
	if c.tsAt < 0 {
		return
	}
	b := c.pkt[c.tsAt : c.tsAt+stampLen]
	for i := stampLen - 1; i >= 0; i-- {
		b[i] = byte('0' + wall%10)
		wall /= 10
	}
}

// parseStamp reads the timestamp at the start of a payload.
func parseStamp(body string) (int64, bool) {
	if len(body) < stampLen {
		return 0, false
	}
	v, err := strconv.ParseInt(body[:stampLen], 10, 64)
	return v, err == nil && v > 0
}

// awaitPinging waits for ready while keeping the connection alive with ping; false once the
// send period is stopped, the reader is dead or a ping fails.
func awaitPinging[T any](ready <-chan T, keepAlive <-chan time.Time, ping func() bool, stop, dead <-chan struct{}) bool {
	for {
		select {
		case <-ready:
			return true
		case <-keepAlive:
			if !ping() {
				return false
			}
		case <-stop:
			return false
		case <-dead:
			return false
		}
	}
}

// maxBatch bounds how many publishes go into one write.
const maxBatch = 64

// writeLoop publishes until the end of the run, then waits for the outstanding
// acknowledgements and disconnects.
func (c *conn) writeLoop(idx int) {
	r := c.r
	cfg := &r.cfg
	defer c.finish()
	if !c.awaitStart() {
		return
	}

	var pacer *Pacer
	if r.interval > 0 {
		// Stagger the connections over one interval so they do not publish in lockstep.
		offset := r.interval * int64(idx) / int64(max(len(cfg.Devices), 1))
		pacer = NewPacer(r.interval, r.t0+offset, max(1, int64(cfg.Window)))
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	keepAlive := time.NewTicker(max(cfg.KeepAlive/2, time.Second))
	defer keepAlive.Stop()
	// A broker that stops reading must not hold the writer past the end of the run.
	c.nc.SetWriteDeadline(r.deadline)
	lastWrite := r.now()
	// ping keeps the connection alive while nothing is published (low rates, a full window).
	ping := func() bool {
		if r.now()-lastWrite < int64(cfg.KeepAlive/2) {
			return true
		}
		lastWrite = r.now()
		return c.write(pingreqPacket)
	}

	for {
		now := r.now()
		if now >= r.sendEnd {
			return
		}
		select {
		case <-r.stopSend:
			return
		default:
		}
		if pacer != nil {
			if wait := pacer.Reserve(now); wait > 0 {
				timer.Reset(time.Duration(min(wait, r.sendEnd-now)))
				if !awaitPinging(timer.C, keepAlive.C, ping, r.stopSend, c.dead) {
					return
				}
				if r.now() >= r.sendEnd {
					return
				}
			}
		}
		n := 1
		if cfg.QoS == 1 {
			if !awaitPinging(c.window, keepAlive.C, ping, r.stopSend, c.dead) {
				return
			}
			if pacer == nil {
			more:
				for n < maxBatch {
					select {
					case <-c.window:
						n++
					default:
						break more
					}
				}
			}
		} else if pacer == nil {
			n = maxBatch / 4
		}

		now = r.now()
		if now >= r.sendEnd {
			// The window opened too late: the measured period is over.
			if cfg.QoS == 1 {
				for range n {
					c.window <- struct{}{}
				}
			}
			return
		}
		wall := r.wall(now)
		for range n {
			if cfg.QoS == 1 {
				id := c.takeID()
				c.pkt[c.idAt], c.pkt[c.idAt+1] = byte(id>>8), byte(id)
				c.slots[id&c.mask].Store(now<<16 | int64(id))
			}
			c.stamp(wall)
			c.bw.Write(c.pkt) // errors surface in Flush
		}
		if err := c.bw.Flush(); err != nil {
			if !c.closing.Load() {
				c.writeErr = err
			}
			return
		}
		lastWrite = now
		c.sentAll += int64(n)
		if now >= r.measureStart {
			c.sent += int64(n)
		}
	}
}

// awaitStart waits for the measurement to begin (the other connections are still connecting),
// keeping the connection alive meanwhile. It returns false if the run ends first.
func (c *conn) awaitStart() bool {
	r := c.r
	ka := r.cfg.KeepAlive / 2
	t := time.NewTicker(max(ka, time.Second))
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-r.started:
			return true
		case <-r.stopSend:
			return false
		case <-c.dead:
			return false
		case <-t.C:
			if time.Since(last) >= ka {
				last = time.Now()
				c.nc.SetWriteDeadline(last.Add(r.cfg.ConnectTimeout))
				if !c.write(pingreqPacket) {
					return false
				}
			}
		}
	}
}

// write sends a control packet through the buffer.
func (c *conn) write(p []byte) bool {
	c.bw.Write(p)
	if err := c.bw.Flush(); err != nil {
		if !c.closing.Load() {
			c.writeErr = err
		}
		return false
	}
	return true
}

// finish waits (bounded) for the outstanding acknowledgements, then ends the connection the
// graceful way: DISCONNECT, half-close, and wait for the broker to close its side, which proves
// it has read everything sent (a QoS 0 backlog can be large: closing at once and exiting can
// leave it in an orphaned socket the kernel may reset). Everything is bounded by the drain
// period.
func (c *conn) finish() {
	r := c.r
	if c.r.cfg.QoS == 1 && c.writeErr == nil {
		// Every token back in hand means nothing is in flight.
	drain:
		for range c.r.cfg.Window {
			select {
			case <-c.window:
			case <-r.drainDone:
				break drain
			case <-c.dead:
				break drain
			}
		}
	}
	c.closing.Store(true)
	if c.writeErr == nil {
		// Not r.deadline: a run cancelled while connecting gets here before it is set.
		c.nc.SetWriteDeadline(time.Now().Add(r.cfg.Drain))
		if c.write(disconnectPacket) {
			if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			select {
			case <-c.dead:
				c.drained = true
			case <-r.drainDone:
			}
		}
	}
	c.nc.Close()
	<-c.dead
}

// readLoop reads PUBACKs (and whatever else the broker sends) until the connection closes.
func (c *conn) readLoop() {
	r := c.r
	defer close(c.dead)
	defer func() { c.closedAt = r.now() }()
	br := c.br
	for {
		b, n, err := readFixedHeader(br)
		if err != nil {
			c.readErr = err
			return
		}
		if b>>4 == typePuback && n == 2 {
			hi, err1 := br.ReadByte()
			lo, err2 := br.ReadByte()
			if err := errors.Join(err1, err2); err != nil {
				c.readErr = err
				return
			}
			c.acknowledged(r, uint16(hi)<<8|uint16(lo))
			continue
		}
		if _, err := br.Discard(n); err != nil {
			c.readErr = err
			return
		}
	}
}

func (c *conn) acknowledged(r *runner, id uint16) {
	if c.slots == nil {
		c.strayAcks++
		return
	}
	slot := &c.slots[id&c.mask]
	v := slot.Load()
	if v == 0 || uint16(v) != id || !slot.CompareAndSwap(v, 0) {
		c.strayAcks++
		return
	}
	now := r.now()
	c.window <- struct{}{}
	c.ackedAll++
	if sentAt := v >> 16; sentAt >= r.measureStart && sentAt < r.sendEnd {
		c.acked++
		c.h.Record(now - sentAt)
	}
}

// readFixedHeader reads a packet's fixed header: its first byte (type and flags) and its
// variable-length remaining length.
func readFixedHeader(br *bufio.Reader) (first byte, remaining int, err error) {
	if first, err = br.ReadByte(); err != nil {
		return 0, 0, err
	}
	for i := 0; i < 4; i++ {
		b, err := br.ReadByte()
		if err != nil {
			return 0, 0, err
		}
		remaining |= int(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			return first, remaining, nil
		}
	}
	return 0, 0, errors.New("malformed remaining length")
}

// disconnected reports why the connection ended when the run did not end it.
func (c *conn) disconnected() error {
	if c.writeErr != nil {
		return c.writeErr
	}
	if c.closing.Load() {
		return nil
	}
	if c.readErr == nil || errors.Is(c.readErr, io.EOF) {
		return errors.New("closed by the broker")
	}
	return c.readErr
}
