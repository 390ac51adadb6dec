package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tetherhub/tether/internal/message"
)

// ---- fake hub ----

// fakeHub admits every connection unless told otherwise and records what it is given.
type fakeHub struct {
	mu           sync.Mutex
	connectErr   error
	expiry       time.Time
	manual       bool          // receipts complete only when released
	delay        time.Duration // receipts complete this long after Submit
	submitErr    error
	waitErr      error
	panicSubmit  bool
	panicConnect bool
	// Disconnected takes this long: a connection's end is not over in an instant.
	disconnectDelay time.Duration

	connects  []ConnectRequest
	devices   []*fakeDevice
	submitted []*message.Message
	receipts  []*manualReceipt
	events    []string // connect/disconnect order
	changed   chan struct{}
}

func newFakeHub() *fakeHub { return &fakeHub{changed: make(chan struct{}, 1)} }

func (h *fakeHub) notify() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

func (h *fakeHub) Connect(ctx context.Context, req ConnectRequest) (Device, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.connects = append(h.connects, req)
	if h.panicConnect {
		panic("fake hub: Connect panics")
	}
	if h.connectErr != nil {
		return nil, h.connectErr
	}
	d := &fakeDevice{hub: h, id: req.DeviceID, mod: req.ModuleID, n: len(h.devices)}
	h.devices = append(h.devices, d)
	h.events = append(h.events, fmt.Sprintf("connect %d", d.n))
	return d, nil
}

// waitFor polls cond (under the hub's lock) until it holds or the test times out.
func (h *fakeHub) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		h.mu.Lock()
		ok := cond()
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-h.changed:
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (h *fakeHub) messages() []*message.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*message.Message(nil), h.submitted...)
}

func (h *fakeHub) release(i int, err error) {
	h.mu.Lock()
	r := h.receipts[i]
	h.mu.Unlock()
	r.done <- err
}

type fakeDevice struct {
	hub      *fakeHub
	id, mod  string
	n        int
	disc     int
	graceful bool
	out      Outbound
	unsubs   int
	bodies   [][]byte // of the messages this device submitted, in order
}

func (d *fakeDevice) DeviceID() string { return d.id }
func (d *fakeDevice) ModuleID() string { return d.mod }
func (d *fakeDevice) Expiry() time.Time {
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	return d.hub.expiry
}

func (d *fakeDevice) Submit(ctx context.Context, msg *message.Message) (Receipt, error) {
	h := d.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.notify()
	if h.panicSubmit {
		panic("fake hub: Submit panics")
	}
	if h.submitErr != nil {
		return nil, h.submitErr
	}
	if err := msg.Validate(); err != nil {
		return nil, err
	}
	// The server reuses msg once Submit returns (Device.Submit): keep a copy.
	h.submitted = append(h.submitted, cloneMessage(msg))
	d.bodies = append(d.bodies, h.submitted[len(h.submitted)-1].Body)
	switch {
	case h.manual:
		r := &manualReceipt{done: make(chan error, 1)}
		h.receipts = append(h.receipts, r)
		return r, nil
	case h.delay > 0:
		return delayReceipt{at: time.Now().Add(h.delay), err: h.waitErr}, nil
	}
	return doneReceipt{h.waitErr}, nil
}

// cloneMessage is a deep copy of m sharing no memory with it.
func cloneMessage(m *message.Message) *message.Message {
	c := *m
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.String {
			f.SetString(strings.Clone(f.String()))
		}
	}
	c.Body = bytes.Clone(m.Body)
	if m.Properties != nil {
		c.Properties = make(map[string]string, len(m.Properties))
		for k, v := range m.Properties {
			c.Properties[strings.Clone(k)] = strings.Clone(v)
		}
	}
	if m.Routing != nil {
		c.Routing = &message.Routing{Routes: slices.Clone(m.Routing.Routes), Endpoints: slices.Clone(m.Routing.Endpoints)}
	}
	return &c
}

func (d *fakeDevice) Disconnected(graceful bool) {
	h := d.hub
	h.mu.Lock()
	delay := h.disconnectDelay
	h.mu.Unlock()
	time.Sleep(delay)
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.notify()
	d.disc++
	d.graceful = graceful
	h.events = append(h.events, fmt.Sprintf("disconnect %d %v", d.n, graceful))
}

func (d *fakeDevice) C2DSubscribed(out Outbound) {
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	defer d.hub.notify()
	d.out = out
}

func (d *fakeDevice) C2DUnsubscribed() {
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	defer d.hub.notify()
	d.out = nil
	d.unsubs++
}

type doneReceipt struct{ err error }

func (r doneReceipt) Wait(context.Context) error { return r.err }

type delayReceipt struct {
	at  time.Time
	err error
}

func (r delayReceipt) Wait(ctx context.Context) error {
	t := time.NewTimer(time.Until(r.at))
	defer t.Stop()
	select {
	case <-t.C:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type manualReceipt struct{ done chan error }

func (r *manualReceipt) Wait(ctx context.Context) error {
	select {
	case err := <-r.done:
		r.done <- err // later Waits see the same result
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ---- server and logs ----

// logBuffer collects log lines for assertions and mirrors them to the test log while the test runs.
type logBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	t    testing.TB
	done bool
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.done && testing.Verbose() {
		l.t.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines returns the log lines containing all of the given substrings.
func (l *logBuffer) lines(subs ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

type testServer struct {
	*Server
	addr string
	logs *logBuffer
}

func startServer(t testing.TB, hub Hub, opts Options) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startServerOn(t, hub, opts, ln)
}

// startTLSServer is startServer on TLS (a self-signed certificate); dialTLS connects to it.
func startTLSServer(t testing.TB, hub Hub, opts Options) *testServer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t, "localhost")}})
	if err != nil {
		t.Fatal(err)
	}
	return startServerOn(t, hub, opts, ln)
}

// startServerOver is startServer ("tcp") or startTLSServer ("tls").
func startServerOver(t testing.TB, transport string, hub Hub, opts Options) *testServer {
	t.Helper()
	if transport == "tls" {
		return startTLSServer(t, hub, opts)
	}
	return startServer(t, hub, opts)
}

// dialOver is dial ("tcp") or dialTLS ("tls").
func dialOver(t testing.TB, transport, addr string) *client {
	t.Helper()
	if transport == "tls" {
		return dialTLS(t, addr)
	}
	return dial(t, addr)
}

func dialTLS(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func startServerOn(t testing.TB, hub Hub, opts Options, ln net.Listener) *testServer {
	t.Helper()
	logs := &logBuffer{t: t}
	t.Cleanup(func() {
		logs.mu.Lock()
		logs.done = true
		logs.mu.Unlock()
	})
	opts.Logger = newLogger(logs)
	s := NewServer(hub, opts)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln, "mqtt") }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := s.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: s, addr: ln.Addr().String(), logs: logs}
}

// waitParked waits until n connections of s are parked.
func waitParked(t testing.TB, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Parked() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections parked, want %d", s.Parked(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ---- client ----

type client struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *client) send(b []byte) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read reads one packet within d.
func (c *client) read(d time.Duration) (packets.Packet, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	var pk packets.Packet
	b, err := c.br.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.br)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = 4
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Pingresp:
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

func (c *client) expect(typ byte) packets.Packet {
	c.t.Helper()
	pk, err := c.read(5 * time.Second)
	if err != nil {
		c.t.Fatalf("reading %s: %v", packets.PacketNames[typ], err)
	}
	if pk.FixedHeader.Type != typ {
		c.t.Fatalf("got %s, want %s", packets.PacketNames[pk.FixedHeader.Type], packets.PacketNames[typ])
	}
	return pk
}

func (c *client) expectPuback(id uint16) {
	c.t.Helper()
	if pk := c.expect(packets.Puback); pk.PacketID != id {
		c.t.Fatalf("PUBACK for %d, want %d", pk.PacketID, id)
	}
}

// expectClosed asserts that the server closes the connection (after any packets) within d.
func (c *client) expectClosed(d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		pk, err := c.read(time.Until(deadline))
		if err == nil {
			if pk.FixedHeader.Type == packets.Puback {
				c.t.Fatalf("got PUBACK %d before the close", pk.PacketID)
			}
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection still open after %v", d)
		}
		return // EOF or reset
	}
}

// expectNothing asserts that no packet arrives for d.
func (c *client) expectNothing(d time.Duration) {
	c.t.Helper()
	pk, err := c.read(d)
	if err == nil {
		c.t.Fatalf("unexpected %s (id %d)", packets.PacketNames[pk.FixedHeader.Type], pk.PacketID)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("connection failed: %v", err)
	}
}

// ---- packet builders (mochi's encoder) ----

const testUsername = "localhost/dev1/?api-version=2021-04-12"

type connectOpts struct {
	level      byte
	keepAlive  uint16
	noUsername bool
	password   string
	willTopic  string
	willBody   string
	willRetain bool
}

func connectBytes(clientID, username string, o connectOpts) []byte {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: clientID,
			Keepalive:        o.keepAlive,
		},
	}
	if o.level != 0 {
		pk.ProtocolVersion = o.level
		if o.level == 3 {
			pk.Connect.ProtocolName = []byte("MQIsdp")
		}
	}
	if !o.noUsername {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(username)
	}
	if o.password != "" {
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(o.password)
	}
	if o.willTopic != "" {
		pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, o.willTopic, []byte(o.willBody)
		pk.Connect.WillQos, pk.Connect.WillRetain = 1, o.willRetain
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func publishBytes(topic string, qos byte, id uint16, payload []byte, retain bool) []byte {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic, PacketID: id, Payload: payload, ProtocolVersion: 4,
	}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func subscribeBytes(id uint16, filters ...packets.Subscription) []byte {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    id, Filters: filters, ProtocolVersion: 4,
	}
	var buf bytes.Buffer
	if err := pk.SubscribeEncode(&buf); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func unsubscribeBytes(id uint16, filters ...string) []byte {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1},
		PacketID:    id, ProtocolVersion: 4,
	}
	for _, f := range filters {
		pk.Filters = append(pk.Filters, packets.Subscription{Filter: f})
	}
	var buf bytes.Buffer
	if err := pk.UnsubscribeEncode(&buf); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func pubackBytes(id uint16) []byte { return []byte{packets.Puback << 4, 2, byte(id >> 8), byte(id)} }

var (
	pingreqBytes    = []byte{packets.Pingreq << 4, 0}
	disconnectBytes = []byte{packets.Disconnect << 4, 0}
)

// connectDevice dials and connects clientID with username; it fails the test unless CONNACK 0.
func connectDevice(t testing.TB, addr, clientID, username string, o connectOpts) *client {
	t.Helper()
	return connectDeviceOver(t, "tcp", addr, clientID, username, o)
}

// connectDeviceOver is connectDevice on "tcp" or "tls" (a server from startServerOver).
func connectDeviceOver(t testing.TB, transport, addr, clientID, username string, o connectOpts) *client {
	t.Helper()
	c := dialOver(t, transport, addr)
	c.send(connectBytes(clientID, username, o))
	if pk := c.expect(packets.Connack); pk.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02x, want 0", pk.ReasonCode)
	}
	return c
}

// ---- fixtures ----

// readHex reads a testdata file of hex bytes with '#' comments.
func readHex(t testing.TB, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var digits strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// readTopics reads testdata/d2c_topics.txt: name -> topic, in file order.
func readTopics(t testing.TB) (names []string, topics map[string]string) {
	t.Helper()
	raw, err := os.ReadFile("testdata/d2c_topics.txt")
	if err != nil {
		t.Fatal(err)
	}
	topics = make(map[string]string)
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, topic, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("d2c_topics.txt: bad line %q", line)
		}
		names = append(names, name)
		topics[name] = topic
	}
	return names, topics
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
