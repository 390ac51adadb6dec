package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tetherhub/tether/internal/message"
)

// readBufferSize is the per-connection read buffer. Small on purpose: idle connections are the
// common case and must stay cheap; packets larger than the buffer are read straight into their
// own allocation. A TLS connection holds one only while it reads a packet (see
// readPacketStart).
const readBufferSize = 2 << 10

// closeReason says why a connection ended; it decides the log level, the will and "graceful".
type closeReason uint8

const (
	reasonNone           closeReason = iota
	reasonDisconnect                 // DISCONNECT packet
	reasonNetwork                    // read or write failed, peer closed
	reasonTimeout                    // keep-alive, or no CONNECT in time
	reasonProtocol                   // malformed or forbidden packet
	reasonRefused                    // the hub refused a message (Submit or Wait failed)
	reasonConnectRefused             // CONNACK with a non-zero code was sent
	reasonTakeover                   // a newer connection of the same identity
	reasonExpired                    // the credentials expired
	reasonShutdown                   // Server.Shutdown
	reasonRevoked                    // the identity was disabled or deleted (Server.Disconnect)
	reasonAborted                    // the ServeConn context was cancelled
	reasonPanic                      // a bug, recovered
)

var reasonNames = [...]string{"none", "disconnect", "network", "timeout", "protocol violation",
	"message refused", "connect refused", "takeover", "credentials expired", "shutdown", "identity revoked", "aborted", "panic"}

func (r closeReason) String() string { return reasonNames[r] }

// sendsWill reports whether the connection ended the way IoT Hub publishes a will for: without
// DISCONNECT, because of the device or the network. Ends the server chose for its own reasons
// (takeover, expiry, shutdown) do not mean the device is gone.
func (r closeReason) sendsWill() bool {
	switch r {
	case reasonNetwork, reasonTimeout, reasonProtocol, reasonRefused:
		return true
	}
	return false
}

var (
	errProtocol       = errors.New("protocol violation")
	errRefused        = errors.New("message refused")
	errConnectRefused = errors.New("connect refused")
	errDisconnect     = errors.New("DISCONNECT received")
	errStopped        = errors.New("stopped reading")
	errIdle           = errors.New("idle: no packet within the park delay")
)

// aLongTimeAgo is a read deadline that fails reads at once.
var aLongTimeAgo = time.Unix(1, 0)

type pendingAck struct {
	id uint16
	r  Receipt
}

// conn is one device connection. The reader goroutine (serve, and after a park resume) owns
// the packet loop; the acker goroutine exists only while QoS 1 acknowledgements are pending.
type conn struct {
	s   *Server
	nc  net.Conn
	src io.Reader     // what br reads from
	br  *bufio.Reader // nil while a connection that poolsReader waits for a packet
	// poolsReader: br comes from the server's pool for each packet and goes back to it when
	// the connection waits with nothing buffered.
	poolsReader bool
	first       [1]byte // a packet's first byte, read without br
	transport   string
	parent      context.Context
	ctx         context.Context // cancelled when the connection is torn down; bounds Submit and Wait
	cancel      context.CancelFunc
	accepted    bool        // by Server.Serve, which aborts it when its context is done
	stopAbort   func() bool // unhooks the parent context's abort (ServeConn's connections)

	// Set while handling CONNECT, read-only afterwards.
	dev       Device
	deviceID  string
	moduleID  string
	keepAlive time.Duration
	will      *message.Message
	expiry    *time.Timer

	stopping atomic.Bool // stop reading; drain the pending PUBACKs, then close

	// Deadlines. On TCP (reads and writes) and TLS over TCP (reads) they are set lazily: see
	// armRead and writeLocked.
	lazyRead, lazyWrite bool
	readBy              time.Time // when the packet being read must arrive; reader only (poller while parked)
	readSet             time.Time // the read deadline last set on nc; reader only

	// Parking (see park): parks is set once before serving; parkAt and waiting belong to the
	// reader; the poller's mutex guards the rest.
	parks     bool
	parkAt    time.Time // when a connection still waiting for a packet parks; zero: not before readBy
	waiting   bool      // the reader waits for a packet's first byte
	parkToken uint64    // non-zero while parked
	parkIndex int       // in the poller's deadline heap while parked

	wmu      sync.Mutex // serialises writes
	wbuf     [4]byte    // scratch for the fixed-size packets, guarded by wmu
	writeSet time.Time  // the write deadline last set on nc, guarded by wmu

	mu     sync.Mutex
	reason closeReason
	cause  error
	queue  []pendingAck // QoS 1 publishes awaiting durability, in arrival order
	acking bool         // an acker goroutine is running
	// Made on first use (most connections never need them), then guarded by mu.
	space    chan struct{} // a slot in the window opened, or stop: wakes waitForWindow
	done     chan struct{} // closed when the connection has fully ended (see doneChan)
	finished bool          // the connection has fully ended
	c2dQoS   int8          // granted devicebound QoS, -1 when not subscribed
	nextID   uint16
	outbound map[uint16]func(error) // C2D publishes awaiting the device's PUBACK
	ended    bool
	ackers   sync.WaitGroup
	ackBuf   []byte // PUBACKs written together; owned by the running acker
}

func newConn(ctx context.Context, s *Server, nc net.Conn, transport string) *conn {
	// Not a child of ctx: the abort (Serve's or serve's hook) cancels it through close, and each
	// registration with ctx costs an entry in its children map.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &conn{
		s:         s,
		nc:        nc,
		transport: transport,
		parent:    ctx,
		ctx:       cctx,
		cancel:    cancel,
		c2dQoS:    -1,
	}
	c.lazyRead, c.lazyWrite = lazyDeadlines(nc)
	c.src = nc
	if c.lazyRead {
		c.src = keepAliveReader{c}
	}
	// On TLS a packet's first byte read on its own costs no system call (crypto/tls holds the
	// rest of the record), so idle TLS connections need not hold a read buffer each. On TCP it
	// would cost one more read per packet.
	_, c.poolsReader = nc.(*tls.Conn)
	if !c.poolsReader {
		c.br = bufio.NewReaderSize(c.src, readBufferSize)
	}
	return c
}

// lazyDeadlines reports whether a deadline of nc that passes too early can be extended and the
// read or write carried on, as if nothing happened: true for TCP; for TLS only reads (a read
// timeout is temporary in crypto/tls, a write timeout breaks the connection). Other
// connections (WebSocket: a timeout in the middle of a frame loses it) get exact deadlines on
// every packet.
func lazyDeadlines(nc net.Conn) (read, write bool) {
	switch nc := nc.(type) {
	case *net.TCPConn:
		return true, true
	case *tls.Conn:
		_, tcp := nc.NetConn().(*net.TCPConn)
		return tcp, false
	}
	return false, false
}

func (c *conn) logger() *slog.Logger {
	l := c.s.log.With("remote", c.nc.RemoteAddr().String(), "transport", c.transport)
	if c.deviceID != "" {
		l = l.With("device", c.deviceID)
	}
	if c.moduleID != "" {
		l = l.With("module", c.moduleID)
	}
	return l
}

// setReason records why the connection ends; the first reason wins.
func (c *conn) setReason(r closeReason, cause error) {
	c.mu.Lock()
	if c.reason == reasonNone {
		c.reason, c.cause = r, cause
	}
	c.mu.Unlock()
}

// close ends the connection now: blocked reads, writes, Submit and Wait calls return.
func (c *conn) close(r closeReason, cause error) {
	c.setReason(r, cause)
	c.cancel()
	c.nc.Close()
	c.wake()
}

// stop makes the reader stop reading; it then waits for the pending PUBACKs and closes.
func (c *conn) stop(r closeReason) {
	c.setReason(r, nil)
	c.stopping.Store(true)
	// The reader checks stopping after each deadline it sets, so this one cannot be overwritten.
	c.nc.SetReadDeadline(aLongTimeAgo)
	c.mu.Lock()
	space := c.space
	c.mu.Unlock()
	signal(space)
	c.wake()
}

// signal wakes a waiter on ch (made with room for one) without blocking; nil is a no-op.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// doneChan returns a channel closed once the connection has fully ended. Only a takeover
// waits for it, so it is made on first use.
func (c *conn) doneChan() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.finished {
			close(c.done)
		}
	}
	return c.done
}

// markFinished closes done if a takeover has made it; doneChan closes one made later.
func (c *conn) markFinished() {
	c.mu.Lock()
	c.finished = true
	if c.done != nil {
		close(c.done)
	}
	c.mu.Unlock()
}

func (c *conn) serve() {
	if !c.accepted {
		c.stopAbort = context.AfterFunc(c.parent, func() { c.close(reasonAborted, c.parent.Err()) })
	}
	// The handshake and CONNECT run on a goroutine of their own: TLS and authentication grow a
	// stack to 8 KiB, which the long-lived reader would otherwise keep while the device idles.
	err := errStopped // what a panic in connect leaves; recoverPanic has said why
	connected := make(chan struct{})
	go func() {
		defer close(connected)
		defer c.recoverPanic()
		err = c.connect()
	}()
	<-connected
	c.read(err, false)
}

// read runs the packet loop, unless connecting failed (err), until the connection ends, and
// then tears it down; or until it parks, when another goroutine will call read again with
// resumed set. The reader is whichever goroutine runs read.
func (c *conn) read(err error, resumed bool) {
	parked := false
	defer func() {
		if !parked {
			c.finish()
		}
	}()
	defer c.recoverPanic()
	if err == nil {
		err = c.readLoop(resumed)
		if errors.Is(err, errParked) {
			parked = true // c belongs to the next reader already
			return
		}
	}
	c.setReason(reasonFor(err), err)
}

// recoverPanic ends the connection, not the hub, when handling it panics.
func (c *conn) recoverPanic() {
	if p := recover(); p != nil {
		c.logger().Error("mqtt: connection panicked", "panic", p, "stack", string(debug.Stack()))
		c.setReason(reasonPanic, fmt.Errorf("panic: %v", p))
	}
}

func reasonFor(err error) closeReason {
	switch {
	case errors.Is(err, errDisconnect):
		return reasonDisconnect
	case errors.Is(err, errProtocol):
		return reasonProtocol
	case errors.Is(err, errRefused):
		return reasonRefused
	case errors.Is(err, errConnectRefused):
		return reasonConnectRefused
	case errors.Is(err, os.ErrDeadlineExceeded):
		return reasonTimeout
	}
	return reasonNetwork
}

// finish tears the connection down once the reader has stopped.
func (c *conn) finish() {
	defer c.s.untrack(c)
	if c.stopAbort != nil {
		defer c.stopAbort()
	}
	defer c.markFinished()
	defer func() {
		if p := recover(); p != nil {
			c.logger().Error("mqtt: connection teardown panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.releaseReader() // the reader has stopped: nothing reads the last packet any more
	c.mu.Lock()
	r, cause := c.reason, c.cause
	c.mu.Unlock()

	if c.stopping.Load() && (r == reasonShutdown || r == reasonExpired) {
		// Drain: PUBACK what becomes durable. Shutdown bounds this with its context; expiry here.
		if r == reasonExpired {
			t := time.AfterFunc(c.s.opts.WriteTimeout, func() { c.close(r, nil) })
			defer t.Stop()
		}
		c.ackers.Wait()
	}
	c.close(r, cause)
	c.ackers.Wait()
	c.failOutbound()

	level := slog.LevelDebug
	switch r {
	case reasonProtocol, reasonRefused:
		level = slog.LevelWarn
	case reasonConnectRefused:
		level = slog.LevelInfo
	}
	c.logger().Log(context.Background(), level, "mqtt: connection ended", "reason", r.String(), "err", cause)

	if c.dev == nil {
		return
	}
	c.s.unregister(c)
	if c.will != nil && r.sendsWill() {
		c.submitWill()
	}
	c.dev.Disconnected(r == reasonDisconnect)
}

func (c *conn) submitWill() {
	// The connection's context is cancelled by now; the will gets a bounded one of its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.parent), c.s.opts.WriteTimeout)
	defer cancel()
	if _, err := c.dev.Submit(ctx, c.will); err != nil {
		c.logger().Warn("mqtt: will message refused", "err", err)
	}
}

// readPacket reads one packet whose bytes must all arrive before deadline. The body may alias
// the read buffer: it is valid until the next read.
func (c *conn) readPacket(deadline time.Time) (packets.FixedHeader, []byte, error) {
	var fh packets.FixedHeader
	if err := c.armRead(deadline); err != nil {
		return fh, nil, err
	}
	if c.stopping.Load() {
		return fh, nil, errStopped
	}
	b, err := c.readPacketStart()
	if err != nil {
		return fh, nil, err
	}
	if err := fh.Decode(b); err != nil {
		return fh, nil, fmt.Errorf("%w: fixed header 0x%02x: %v", errProtocol, b, err)
	}
	n, err := c.readLength()
	if err != nil {
		return fh, nil, err
	}
	if n > c.s.opts.MaxPacketSize {
		return fh, nil, fmt.Errorf("%w: %s packet of %d bytes is over the limit of %d",
			errProtocol, packets.PacketNames[fh.Type], n, c.s.opts.MaxPacketSize)
	}
	fh.Remaining = n
	if n == 0 || n > c.br.Size() {
		body, err := readN(c.br, n)
		return fh, body, err
	}
	// A packet that fits the buffer is read in place: no copy, no allocation.
	body, err := c.br.Peek(n)
	if err != nil {
		if err == io.EOF && len(body) > 0 {
			err = io.ErrUnexpectedEOF // as io.ReadFull reports a packet cut short
		}
		return fh, nil, err
	}
	c.br.Discard(n)
	return fh, body, nil
}

// readPacketStart reads the first byte of a packet. A connection that poolsReader and has
// nothing buffered gives its read buffer back while it waits, and takes one from the pool when
// the byte has come. What the previous packet's body aliased is not used after this point.
func (c *conn) readPacketStart() (byte, error) {
	if c.br != nil && c.br.Buffered() > 0 {
		return c.br.ReadByte()
	}
	c.waiting = true
	defer func() { c.waiting = false }()
	if !c.poolsReader {
		if c.br == nil { // given back by park
			c.br = c.takeReader()
		}
		return c.br.ReadByte()
	}
	c.releaseReader()
	if _, err := io.ReadFull(c.src, c.first[:]); err != nil {
		return 0, err
	}
	c.br = c.takeReader()
	return c.first[0], nil
}

// takeReader returns a read buffer on c.src from the server's pool.
func (c *conn) takeReader() *bufio.Reader {
	if br, ok := c.s.readers.Get().(*bufio.Reader); ok {
		br.Reset(c.src)
		return br
	}
	return bufio.NewReaderSize(c.src, readBufferSize)
}

// releaseReader gives the read buffer back to the pool; it must hold nothing unread.
func (c *conn) releaseReader() {
	if c.br != nil {
		c.s.readers.Put(c.br)
		c.br = nil
	}
}

// armRead makes the reads of the next packet fail once deadline passes. With lazy deadlines
// the one on the socket is moved only when it is later than deadline or earlier by half the
// keep-alive or more, so a device that keeps sending changes it (a timer in the runtime) at
// most twice per keep-alive period instead of once per packet; when it passes before
// deadline, keepAliveReader moves it to deadline and the read goes on, so a connection still
// times out exactly at deadline. A connection that parks wants it no later than parkAt, and
// any earlier: keepAliveReader moves it on (at most once per ParkAfter for a busy device).
func (c *conn) armRead(deadline time.Time) error {
	c.readBy = deadline
	target := deadline
	if !c.parkAt.IsZero() && c.parkAt.Before(deadline) {
		target = c.parkAt
	}
	if c.lazyRead && !c.readSet.IsZero() && !c.readSet.After(target) &&
		(c.parks || deadline.Sub(c.readSet) < c.keepAlive/2) {
		return nil
	}
	c.readSet = target
	return c.nc.SetReadDeadline(target)
}

// keepAliveReader is what the read buffer of a connection with lazy read deadlines reads from:
// nc, except that a read deadline that passed before the packet's own (readBy) is moved to it
// and the read carried on. Only the reader goroutine reads.
type keepAliveReader struct{ c *conn }

func (r keepAliveReader) Read(p []byte) (int, error) {
	c := r.c
	for {
		n, err := c.nc.Read(p)
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || c.stopping.Load() ||
			c.readSet.Equal(c.readBy) {
			return n, err
		}
		now := time.Now()
		if !now.Before(c.readBy) {
			return n, err
		}
		next := c.readBy
		if c.waiting && !c.parkAt.IsZero() {
			if !now.Before(c.parkAt) {
				return 0, errIdle
			}
			if c.parkAt.Before(next) {
				next = c.parkAt
			}
		}
		// stop() sets stopping before its own deadline: checked after this one is set, a stop
		// either is seen here or sets its deadline after this one.
		c.readSet = next
		if serr := c.nc.SetReadDeadline(next); serr != nil {
			return 0, serr
		}
		if c.stopping.Load() {
			return 0, err
		}
	}
}

// readLength reads MQTT's variable-length remaining length (at most 4 bytes).
func (c *conn) readLength() (int, error) {
	n := 0
	for i := 0; i < 4; i++ {
		b, err := c.br.ReadByte()
		if err != nil {
			return 0, err
		}
		n |= int(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%w: remaining length longer than 4 bytes", errProtocol)
}

// readN reads n bytes into a new slice. Large packets grow their buffer as bytes arrive, so a
// peer announcing a large packet and sending nothing does not pin that much memory.
func readN(r io.Reader, n int) ([]byte, error) {
	const chunk = 64 << 10
	if n <= chunk {
		if n == 0 {
			return nil, nil
		}
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	b := make([]byte, 0, chunk)
	for len(b) < n {
		k := min(n-len(b), chunk)
		b = slices.Grow(b, k)
		m, err := io.ReadFull(r, b[len(b):len(b)+k])
		b = b[:len(b)+m]
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// connect handles the TLS handshake and CONNECT, and admits the connection.
func (c *conn) connect() error {
	deadline := time.Now().Add(c.s.opts.ConnectTimeout)
	var peerCerts []*x509.Certificate
	if tc, ok := c.nc.(*tls.Conn); ok {
		if err := tc.SetDeadline(deadline); err != nil {
			return err
		}
		if c.stopping.Load() {
			return errStopped
		}
		// No context: the deadline bounds the handshake and close interrupts it by closing the
		// socket. A context derived from c.ctx would leave c.ctx a children map, and Done a
		// channel, for the connection's whole life (~0.35 KB each idle connection).
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		peerCerts = tc.ConnectionState().PeerCertificates
	}

	fh, body, err := c.readPacket(deadline)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("no CONNECT within %v: %w", c.s.opts.ConnectTimeout, err)
		}
		return err
	}
	if fh.Type != packets.Connect {
		return fmt.Errorf("%w: first packet is %s, not CONNECT", errProtocol, packets.PacketNames[fh.Type])
	}
	name, level, ok := protocolOf(body)
	if !ok || (name != "MQTT" && name != "MQIsdp") {
		return fmt.Errorf("%w: not an MQTT CONNECT", errProtocol)
	}
	if level != 4 {
		return c.refuse(0x01, fmt.Sprintf("protocol level %d; only 4 (MQTT 3.1.1) is supported", level))
	}
	pk := packets.Packet{FixedHeader: fh}
	if err := pk.ConnectDecode(body); err != nil {
		return fmt.Errorf("%w: CONNECT: %v", errProtocol, err)
	}
	cp := &pk.Connect
	if pk.ReservedBit != 0 || cp.WillQos > 2 || (!cp.WillFlag && (cp.WillRetain || cp.WillQos != 0)) {
		return fmt.Errorf("%w: CONNECT flags", errProtocol)
	}

	if !cp.UsernameFlag {
		return c.refuse(0x05, "no username")
	}
	username := string(cp.Username)
	u, err := ParseUsername(username)
	if err != nil {
		return c.refuse(0x05, err.Error())
	}
	// IoT Hub does not document a mismatch; refusing it keeps one identity per connection.
	if cdev, cmod, _ := strings.Cut(cp.ClientIdentifier, "/"); cdev != u.DeviceID || cmod != u.ModuleID {
		return c.refuse(0x05, fmt.Sprintf("client id %q does not name the username's identity %q/%q",
			cp.ClientIdentifier, u.DeviceID, u.ModuleID))
	}
	var will *message.Message
	if cp.WillFlag {
		d, m, bag, ok := parseEventsTopic(cp.WillTopic)
		if !ok || d != u.DeviceID || m != u.ModuleID {
			return c.refuse(0x05, fmt.Sprintf("will topic %q is not the identity's events topic", clip(cp.WillTopic)))
		}
		// Clone: the CONNECT buffer (password included) must not live as long as the will.
		will = newMessage(strings.Clone(bag), bytes.Clone(cp.WillPayload), cp.WillRetain)
		will.SetProperty(PropMessageType, "Will")
	}

	// The hub keeps the ids for the connection's life; as substrings they would keep the whole
	// username (~150 bytes) with them.
	u.DeviceID, u.ModuleID, u.ModelID = strings.Clone(u.DeviceID), strings.Clone(u.ModuleID), strings.Clone(u.ModelID)
	// From the parent, not c.ctx, for the reason above: an abort by Serve's (or ServeConn's)
	// context still cancels it, and the deadline bounds it if only this connection is closed.
	hctx, cancel := context.WithDeadline(c.parent, deadline)
	dev, err := c.s.hub.Connect(hctx, ConnectRequest{
		ClientID:         strings.Clone(cp.ClientIdentifier),
		Username:         username,
		Password:         string(cp.Password),
		DeviceID:         u.DeviceID,
		ModuleID:         u.ModuleID,
		ModelID:          u.ModelID,
		APIVersion:       u.APIVersion,
		ClientType:       u.ClientType,
		PeerCertificates: peerCerts,
		RemoteAddr:       c.nc.RemoteAddr(),
		Transport:        c.transport,
	})
	cancel()
	if err != nil {
		code := byte(0x05)
		if errors.Is(err, ErrServerUnavailable) {
			code = 0x03
		}
		return c.refuse(code, "hub: "+err.Error())
	}
	if dev == nil {
		return c.refuse(0x03, "hub returned no device")
	}
	c.dev, c.deviceID, c.moduleID, c.will = dev, dev.DeviceID(), dev.ModuleID(), will
	c.keepAlive = time.Duration(cp.Keepalive) * 1500 * time.Millisecond
	if c.keepAlive == 0 || c.keepAlive > c.s.opts.KeepAliveCap {
		c.keepAlive = c.s.opts.KeepAliveCap
	}

	if old := c.s.register(c); old != nil {
		c.logger().Info("mqtt: closing the older connection of this identity",
			"error_code", 400027, "error", "ConnectionForcefullyClosedOnNewConnection",
			"old_remote", old.nc.RemoteAddr().String())
		old.close(reasonTakeover, nil)
		// Let the old connection report Disconnected before this one is acknowledged.
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-old.doneChan():
		case <-t.C:
		case <-c.ctx.Done():
		}
		t.Stop()
	}
	if err := c.writeShort(packets.Connack<<4, 2, 0, 0); err != nil {
		return err
	}
	if exp := dev.Expiry(); !exp.IsZero() {
		c.expiry = time.AfterFunc(max(exp.Sub(c.s.opts.Now()), 0), func() { c.stop(reasonExpired) })
	}
	c.logger().Debug("mqtt: connected", "keep_alive", c.keepAlive, "client_type", u.ClientType)
	return nil
}

// refuse sends CONNACK with a refusal code; the connection then ends.
func (c *conn) refuse(code byte, why string) error {
	if err := c.writeShort(packets.Connack<<4, 2, 0, code); err != nil {
		return err
	}
	return fmt.Errorf("%w with 0x%02x: %s", errConnectRefused, code, why)
}

// protocolOf returns the protocol name and level at the start of a CONNECT body, so levels
// other than 4 get CONNACK 0x01 even when the rest (MQTT 5 properties) would not decode.
func protocolOf(body []byte) (string, byte, bool) {
	if len(body) < 2 {
		return "", 0, false
	}
	n := int(body[0])<<8 | int(body[1])
	if len(body) < 2+n+1 {
		return "", 0, false
	}
	return string(body[2 : 2+n]), body[2+n], true
}

// readLoop reads and handles packets until the connection ends or parks (errParked). A
// resumed reader first waits for the packet the parked one was waiting for, by the same
// deadline; it parks again if it was woken for nothing (a timer that fired as it parked).
func (c *conn) readLoop(resumed bool) error {
	now := time.Now()
	deadline := now.Add(c.keepAlive)
	if resumed {
		deadline = c.readBy
	}
	if c.parks {
		c.parkAt = now.Add(c.s.opts.ParkAfter)
	}
	for {
		fh, body, err := c.readPacket(deadline)
		if errors.Is(err, errIdle) {
			if c.park() {
				return errParked
			}
			c.parkAt = time.Time{} // wait for this packet as a connection that does not park
			continue
		}
		if err != nil {
			return err
		}
		if err := c.handle(fh, body); err != nil {
			return err
		}
		now = time.Now()
		deadline = now.Add(c.keepAlive)
		if c.parks {
			c.parkAt = now.Add(c.s.opts.ParkAfter)
		}
	}
}

func (c *conn) handle(fh packets.FixedHeader, body []byte) error {
	switch fh.Type {
	case packets.Publish:
		return c.handlePublish(fh, body)
	case packets.Puback:
		if len(body) < 2 {
			return fmt.Errorf("%w: short PUBACK", errProtocol)
		}
		c.outboundAcked(uint16(body[0])<<8 | uint16(body[1]))
		return nil
	case packets.Subscribe:
		return c.handleSubscribe(fh, body)
	case packets.Unsubscribe:
		return c.handleUnsubscribe(fh, body)
	case packets.Pingreq:
		return c.writeShort(packets.Pingresp<<4, 0)
	case packets.Disconnect:
		return errDisconnect
	case packets.Connect:
		return fmt.Errorf("%w: second CONNECT", errProtocol)
	}
	return fmt.Errorf("%w: unexpected %s packet", errProtocol, packets.PacketNames[fh.Type])
}

func (c *conn) handlePublish(fh packets.FixedHeader, body []byte) error {
	if fh.Qos > 1 {
		return fmt.Errorf("%w: PUBLISH with QoS %d", errProtocol, fh.Qos)
	}
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 4}
	if err := pk.PublishDecode(body); err != nil {
		return fmt.Errorf("%w: PUBLISH: %v", errProtocol, err)
	}
	if fh.Qos == 1 && pk.PacketID == 0 {
		return fmt.Errorf("%w: QoS 1 PUBLISH without packet id", errProtocol)
	}
	d, m, bag, ok := parseEventsTopic(pk.TopicName)
	if !ok {
		return fmt.Errorf("%w: PUBLISH on unsupported topic %q", errProtocol, clip(pk.TopicName))
	}
	if d != c.deviceID || m != c.moduleID {
		return fmt.Errorf("%w: PUBLISH on another identity's topic %q", errProtocol, clip(pk.TopicName))
	}
	if fh.Qos == 1 {
		if err := c.waitForWindow(); err != nil {
			return err
		}
	}
	// The message points into the packet, which is valid until the next read, and is recycled
	// once Submit returns: Device.Submit keeps neither.
	pm := msgPool.Get().(*pooledMessage)
	r, err := c.dev.Submit(c.ctx, pm.build(bag, pk.Payload, fh.Retain))
	pm.recycle()
	if err != nil {
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	if fh.Qos == 1 {
		c.enqueueAck(pk.PacketID, r)
	}
	return nil
}

func newMessage(bag string, body []byte, retain bool) *message.Message {
	msg := &message.Message{Body: body}
	fillMessage(msg, bag, retain)
	return msg
}

func fillMessage(msg *message.Message, bag string, retain bool) {
	ApplyBag(msg, bag)
	if retain {
		msg.SetProperty(PropRetain, "true")
	}
}

// pooledMessage is a PUBLISH's message, with an application properties map kept for the next.
type pooledMessage struct {
	msg   message.Message
	props map[string]string // empty between uses
}

var msgPool = sync.Pool{New: func() any { return new(pooledMessage) }}

// maxPooledProperties bounds the properties map kept for the next message.
const maxPooledProperties = 32

// build makes the message of a PUBLISH, as newMessage does.
func (pm *pooledMessage) build(bag string, body []byte, retain bool) *message.Message {
	pm.msg = message.Message{Body: body, Properties: pm.props}
	fillMessage(&pm.msg, bag, retain)
	if len(pm.msg.Properties) == 0 {
		pm.msg.Properties = nil // as newMessage leaves a message without properties
	} else {
		pm.props = pm.msg.Properties
	}
	return &pm.msg
}

// recycle returns pm to the pool; the message it built must no longer be used.
func (pm *pooledMessage) recycle() {
	if len(pm.props) > maxPooledProperties {
		pm.props = nil
	} else {
		clear(pm.props)
	}
	pm.msg = message.Message{}
	msgPool.Put(pm)
}

// waitForWindow blocks while MaxInflight publishes await durability: not reading is the
// backpressure a device feels.
func (c *conn) waitForWindow() error {
	for {
		c.mu.Lock()
		if len(c.queue) < c.s.opts.MaxInflight {
			c.mu.Unlock()
			return nil
		}
		if c.space == nil {
			c.space = make(chan struct{}, 1)
		}
		space := c.space
		c.mu.Unlock()
		// stop sets stopping before it looks for space under mu: a stop that found none is
		// seen here.
		if c.stopping.Load() {
			return errStopped
		}
		select {
		case <-space:
		case <-c.ctx.Done():
			return errStopped
		}
		if c.stopping.Load() {
			return errStopped
		}
	}
}

func (c *conn) enqueueAck(id uint16, r Receipt) {
	c.mu.Lock()
	c.queue = append(c.queue, pendingAck{id, r})
	start := !c.acking
	c.acking = true
	c.mu.Unlock()
	if start {
		c.ackers.Add(1)
		go c.ackLoop()
	}
}

// maxAckBatch bounds the PUBACKs that leave in one write.
const maxAckBatch = 32

var ackScratch = sync.Pool{New: func() any { return new([maxAckBatch]pendingAck) }}

// settled is a context that is already done: Receipt.Wait with it reports without blocking
// whether a receipt is durable (an error, including the context's own, means "not yet").
var settled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// ackLoop waits for the pending publishes to become durable, oldest first, and PUBACKs each:
// acknowledgements leave in arrival order even when durability completes out of order. It
// exits when nothing is pending.
//
// One group commit of the log usually makes several of a connection's publishes durable at
// once; the PUBACKs of those that are already durable when the oldest one is leave in the same
// write (one syscall and one TCP segment instead of one each).
func (c *conn) ackLoop() {
	defer c.ackers.Done()
	defer func() {
		if p := recover(); p != nil {
			c.logger().Error("mqtt: acknowledger panicked", "panic", p, "stack", string(debug.Stack()))
			c.close(reasonPanic, fmt.Errorf("panic: %v", p))
			c.mu.Lock()
			c.acking = false
			c.mu.Unlock()
		}
	}()
	// The batch lives in a pooled array, not in this frame: a frame that large made the
	// runtime grow the goroutine's starting stack on every start (copystack was ~4% of CPU at
	// window 1, where an acknowledger starts per message).
	scratch := ackScratch.Get().(*[maxAckBatch]pendingAck)
	defer ackScratch.Put(scratch)
	next := scratch[:]
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.acking = false
			c.mu.Unlock()
			return
		}
		k := copy(next, c.queue)
		c.mu.Unlock()

		err := next[0].r.Wait(c.ctx)
		n := 1
		if err == nil {
			for n < k && next[n].r.Wait(settled) == nil {
				n++
			}
			err = c.writeAcks(next[:n])
			if err != nil {
				c.close(reasonNetwork, err)
			}
		} else {
			// No MQTT 3.1.1 error channel: closing without PUBACK makes the device resend.
			c.close(reasonRefused, fmt.Errorf("%w: not stored: %w", errRefused, err))
		}
		clear(next[:k])
		c.mu.Lock()
		if err != nil {
			c.acking = false
			c.mu.Unlock()
			return
		}
		m := copy(c.queue, c.queue[n:])
		clear(c.queue[m:])
		c.queue = c.queue[:m]
		space := c.space
		c.mu.Unlock()
		signal(space)
	}
}

// writeAcks sends the PUBACKs of acks in one write. Only the acker calls it.
func (c *conn) writeAcks(acks []pendingAck) error {
	if len(acks) == 1 {
		return c.writeShort(packets.Puback<<4, 2, byte(acks[0].id>>8), byte(acks[0].id))
	}
	// Allocated on first use: connections that never pipeline never pay for it.
	if c.ackBuf == nil {
		c.ackBuf = make([]byte, 0, 4*maxAckBatch)
	}
	b := c.ackBuf[:0]
	for _, a := range acks {
		b = append(b, packets.Puback<<4, 2, byte(a.id>>8), byte(a.id))
	}
	return c.write(b)
}

func (c *conn) handleSubscribe(fh packets.FixedHeader, body []byte) error {
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 4}
	if err := pk.SubscribeDecode(body); err != nil {
		return fmt.Errorf("%w: SUBSCRIBE: %v", errProtocol, err)
	}
	if pk.PacketID == 0 || len(pk.Filters) == 0 {
		return fmt.Errorf("%w: SUBSCRIBE without packet id or filters", errProtocol)
	}
	codes := make([]byte, len(pk.Filters))
	granted := int8(-1)
	for i, f := range pk.Filters {
		// Modules have no classic C2D (spec 3.4).
		if c.moduleID == "" && isC2DFilter(f.Filter, c.deviceID) {
			codes[i] = min(f.Qos, 1)
			granted = int8(codes[i])
			continue
		}
		codes[i] = 0x80
		level := slog.LevelInfo
		if strings.HasPrefix(f.Filter, "$iothub/twin/") || strings.HasPrefix(f.Filter, "$iothub/methods/") {
			level = slog.LevelDebug // expected from every SDK until twins and methods exist
		}
		c.logger().Log(c.ctx, level, "mqtt: subscription not supported; SUBACK 0x80", "filter", clip(f.Filter))
	}
	out := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: pk.PacketID, ReasonCodes: codes}
	var buf bytes.Buffer
	if err := out.SubackEncode(&buf); err != nil {
		return fmt.Errorf("encode SUBACK: %w", err)
	}
	if err := c.write(buf.Bytes()); err != nil {
		return err
	}
	if granted >= 0 {
		c.mu.Lock()
		c.c2dQoS = granted
		c.mu.Unlock()
		if l, ok := c.dev.(C2DListener); ok {
			l.C2DSubscribed(c)
		}
	}
	return nil
}

func (c *conn) handleUnsubscribe(fh packets.FixedHeader, body []byte) error {
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 4}
	if err := pk.UnsubscribeDecode(body); err != nil {
		return fmt.Errorf("%w: UNSUBSCRIBE: %v", errProtocol, err)
	}
	if pk.PacketID == 0 || len(pk.Filters) == 0 {
		return fmt.Errorf("%w: UNSUBSCRIBE without packet id or filters", errProtocol)
	}
	if err := c.writeShort(packets.Unsuback<<4, 2, byte(pk.PacketID>>8), byte(pk.PacketID)); err != nil {
		return err
	}
	for _, f := range pk.Filters {
		if c.moduleID != "" || !isC2DFilter(f.Filter, c.deviceID) {
			continue
		}
		c.mu.Lock()
		was := c.c2dQoS >= 0
		c.c2dQoS = -1
		c.mu.Unlock()
		if l, ok := c.dev.(C2DListener); ok && was {
			l.C2DUnsubscribed()
		}
	}
	return nil
}

// Publish implements Outbound, the seam for C2D delivery.
func (c *conn) Publish(ctx context.Context, topic string, payload []byte, acked func(error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(topic) > 0xffff {
		return fmt.Errorf("mqtt: topic of %d bytes is too long", len(topic))
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return ErrConnectionClosed
	}
	qos := c.c2dQoS
	if qos < 0 {
		c.mu.Unlock()
		return ErrNotSubscribed
	}
	var id uint16
	if qos == 1 {
		if len(c.outbound) >= 0xffff {
			c.mu.Unlock()
			return errors.New("mqtt: no free packet id")
		}
		if c.outbound == nil {
			c.outbound = make(map[uint16]func(error))
		}
		for {
			c.nextID++
			if _, used := c.outbound[c.nextID]; c.nextID != 0 && !used {
				break
			}
		}
		id = c.nextID
		c.outbound[id] = acked
	}
	c.mu.Unlock()

	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: byte(qos)},
		TopicName:   topic, PacketID: id, Payload: payload, ProtocolVersion: 4,
	}
	var buf bytes.Buffer
	err := pk.PublishEncode(&buf)
	if err == nil {
		err = c.write(buf.Bytes())
		if err != nil {
			c.close(reasonNetwork, err)
		}
	}
	if err != nil {
		if qos == 1 {
			c.mu.Lock()
			_, owned := c.outbound[id]
			delete(c.outbound, id)
			c.mu.Unlock()
			if !owned {
				return nil // the teardown already reported ErrConnectionClosed to acked
			}
		}
		return fmt.Errorf("mqtt: publish to device: %w", err)
	}
	if qos == 0 && acked != nil {
		acked(nil)
	}
	return nil
}

// outboundAcked completes a C2D publish; a PUBACK for an id never sent is ignored.
func (c *conn) outboundAcked(id uint16) {
	c.mu.Lock()
	acked, ok := c.outbound[id]
	delete(c.outbound, id)
	c.mu.Unlock()
	if ok && acked != nil {
		acked(nil)
	}
}

func (c *conn) failOutbound() {
	c.mu.Lock()
	c.ended = true
	pending := c.outbound
	c.outbound = nil
	c.mu.Unlock()
	for _, acked := range pending {
		if acked != nil {
			acked(ErrConnectionClosed)
		}
	}
}

// write sends b within WriteTimeout.
func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(b)
}

// writeShort sends a packet of at most 4 bytes (CONNACK, PUBACK, UNSUBACK, PINGRESP) without
// allocating.
func (c *conn) writeShort(p ...byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := copy(c.wbuf[:], p)
	return c.writeLocked(c.wbuf[:n])
}

// writeLocked sends b within WriteTimeout; c.wmu is held. With lazy deadlines (TCP) the
// deadline on the socket is moved only when it is earlier than this write's by half of
// WriteTimeout or more (or later), so back-to-back PUBACKs do not change a runtime timer each;
// a write that times out before its own deadline gets that deadline and goes on with the bytes
// not yet written, so a stuck device is still given up on exactly WriteTimeout after the write.
func (c *conn) writeLocked(b []byte) error {
	deadline := time.Now().Add(c.s.opts.WriteTimeout)
	if !c.lazyWrite || c.writeSet.After(deadline) || deadline.Sub(c.writeSet) >= c.s.opts.WriteTimeout/2 {
		c.writeSet = deadline
		if err := c.nc.SetWriteDeadline(deadline); err != nil {
			return err
		}
	}
	for {
		n, err := c.nc.Write(b)
		if err == nil || !c.lazyWrite || !errors.Is(err, os.ErrDeadlineExceeded) ||
			c.writeSet.Equal(deadline) || !time.Now().Before(deadline) {
			return err
		}
		b = b[n:]
		c.writeSet = deadline
		if err := c.nc.SetWriteDeadline(deadline); err != nil {
			return err
		}
	}
}

// clip shortens s for a log line.
func clip(s string) string {
	const n = 200
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
