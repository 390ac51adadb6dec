package mqtt

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// scriptConn is a net.Conn whose reads and writes follow a script, recording the deadlines set.
type scriptConn struct {
	net.Conn
	reads         []scriptStep // consumed in order
	written       bytes.Buffer
	writes        []scriptStep
	readDeadlines []time.Time
	writeDeadline []time.Time
}

// scriptStep is one Read or Write: data read (or bytes accepted, for a write) and an error.
type scriptStep struct {
	data []byte
	n    int
	err  error
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if len(c.reads) == 0 {
		return 0, errors.New("script: no more reads")
	}
	s := c.reads[0]
	c.reads = c.reads[1:]
	return copy(p, s.data), s.err
}

func (c *scriptConn) Write(p []byte) (int, error) {
	if len(c.writes) == 0 {
		c.written.Write(p)
		return len(p), nil
	}
	s := c.writes[0]
	c.writes = c.writes[1:]
	n := min(s.n, len(p))
	c.written.Write(p[:n])
	return n, s.err
}

func (c *scriptConn) SetReadDeadline(t time.Time) error {
	c.readDeadlines = append(c.readDeadlines, t)
	return nil
}

func (c *scriptConn) SetWriteDeadline(t time.Time) error {
	c.writeDeadline = append(c.writeDeadline, t)
	return nil
}

func tlsClient(nc net.Conn) *tls.Conn { return tls.Client(nc, &tls.Config{}) }

func scriptedConn(nc *scriptConn, lazy bool, keepAlive time.Duration) *conn {
	c := &conn{nc: nc, s: &Server{opts: Options{}.withDefaults()}, keepAlive: keepAlive, lazyRead: lazy, lazyWrite: lazy}
	c.br = bufio.NewReaderSize(keepAliveReader{c}, readBufferSize)
	return c
}

var timeout = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}

func TestLazyDeadlinesOnlyWhereATimeoutCanBeResumed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	pipe, _ := net.Pipe()
	tests := []struct {
		name        string
		nc          net.Conn
		read, write bool
	}{
		{"tcp", tcp, true, true},
		{"tls over tcp", tlsClient(tcp), true, false}, // a TLS write timeout is permanent
		{"tls over a pipe", tlsClient(pipe), false, false},
		{"pipe", pipe, false, false},
		{"websocket-like wrapper", struct{ net.Conn }{tcp}, false, false},
	}
	for _, tt := range tests {
		if r, w := lazyDeadlines(tt.nc); r != tt.read || w != tt.write {
			t.Errorf("%s: lazy read %v write %v, want %v %v", tt.name, r, w, tt.read, tt.write)
		}
	}
}

// TestArmRead: with lazy deadlines the socket's read deadline moves only when it is half a
// keep-alive behind (or ahead of) the packet's.
func TestArmRead(t *testing.T) {
	const ka = 10 * time.Second
	t0 := time.Now()
	tests := []struct {
		name     string
		lazy     bool
		by       []time.Duration // deadlines of successive packets, from t0
		wantSets int
	}{
		{"exact: every packet", false, []time.Duration{ka, ka + 1, ka + 2}, 3},
		{"lazy: first packet", true, []time.Duration{ka}, 1},
		{"lazy: within half a keep-alive", true, []time.Duration{ka, ka + time.Second, ka + 4*time.Second}, 1},
		{"lazy: half a keep-alive later", true, []time.Duration{ka, ka + 5*time.Second, ka + 6*time.Second, ka + 10*time.Second}, 3},
		{"lazy: an earlier deadline", true, []time.Duration{ka, ka - time.Millisecond}, 2},
	}
	for _, tt := range tests {
		nc := &scriptConn{}
		c := scriptedConn(nc, tt.lazy, ka)
		for _, d := range tt.by {
			if err := c.armRead(t0.Add(d)); err != nil {
				t.Fatal(err)
			}
			if !c.readBy.Equal(t0.Add(d)) || c.readSet.After(c.readBy) || c.readBy.Sub(c.readSet) >= ka/2 {
				t.Errorf("%s: packet due %v, deadline on the socket %v", tt.name, c.readBy.Sub(t0), c.readSet.Sub(t0))
			}
		}
		if len(nc.readDeadlines) != tt.wantSets {
			t.Errorf("%s: %d read deadlines set, want %d", tt.name, len(nc.readDeadlines), tt.wantSets)
		}
	}
}

// TestArmReadParking: a connection that parks puts the socket's deadline at parkAt when it is
// earlier than the packet's, and leaves an earlier one alone (keepAliveReader moves it on); after
// a park (readSet cleared) the packet's own deadline is set.
func TestArmReadParking(t *testing.T) {
	const ka = 10 * time.Second
	t0 := time.Now()
	nc := &scriptConn{}
	c := scriptedConn(nc, true, ka)
	c.parks = true
	steps := []struct {
		parkAt, deadline, wantSet time.Duration // from t0; wantSet 0: not set
		clearSet                  bool
	}{
		{parkAt: 2 * time.Second, deadline: ka, wantSet: 2 * time.Second},
		{parkAt: 3 * time.Second, deadline: ka + time.Second},
		{parkAt: 9 * time.Second, deadline: ka + 7*time.Second},
		{deadline: ka + 7*time.Second, clearSet: true, wantSet: ka + 7*time.Second},
		{parkAt: 12 * time.Second, deadline: ka + 8*time.Second, wantSet: 12 * time.Second}, // earlier than the socket's
		{parkAt: 13 * time.Second, deadline: ka + 9*time.Second},
	}
	for i, st := range steps {
		c.parkAt = time.Time{}
		if st.parkAt != 0 {
			c.parkAt = t0.Add(st.parkAt)
		}
		if st.clearSet {
			c.readSet = time.Time{}
		}
		before := len(nc.readDeadlines)
		if err := c.armRead(t0.Add(st.deadline)); err != nil {
			t.Fatal(err)
		}
		switch set := len(nc.readDeadlines) > before; {
		case set && st.wantSet == 0:
			t.Errorf("step %d: set %v, want left alone", i, nc.readDeadlines[before].Sub(t0))
		case !set && st.wantSet != 0:
			t.Errorf("step %d: left alone, want set to %v", i, st.wantSet)
		case set && !nc.readDeadlines[before].Equal(t0.Add(st.wantSet)):
			t.Errorf("step %d: set %v, want %v", i, nc.readDeadlines[before].Sub(t0), st.wantSet)
		}
		if !c.readBy.Equal(t0.Add(st.deadline)) {
			t.Errorf("step %d: readBy %v", i, c.readBy.Sub(t0))
		}
	}
}

// TestKeepAliveReader: a read deadline that passes before the packet's own is moved to it and
// the read goes on; at the packet's own deadline, or when stopping, the timeout is returned.
func TestKeepAliveReader(t *testing.T) {
	future := time.Now().Add(time.Hour)
	tests := []struct {
		name      string
		readSet   time.Time
		readBy    time.Time
		stopping  bool
		reads     []scriptStep
		want      string
		wantErr   bool
		wantMoved bool
		// Parking: the reader waits for a packet's first byte, and parks at parkAt.
		waiting  bool
		parkAt   time.Time
		wantIdle bool
		movedTo  time.Time // default readBy
	}{
		{name: "data", readSet: future, readBy: future, reads: []scriptStep{{data: []byte("ab")}}, want: "ab"},
		{name: "early deadline: moved, read goes on", readSet: time.Now(), readBy: future,
			reads: []scriptStep{{err: timeout}, {data: []byte("ab")}}, want: "ab", wantMoved: true},
		{name: "the packet's own deadline", readSet: future, readBy: future,
			reads: []scriptStep{{err: timeout}}, wantErr: true},
		{name: "past the packet's deadline", readSet: time.Now().Add(-time.Second), readBy: time.Now(),
			reads: []scriptStep{{err: timeout}}, wantErr: true},
		{name: "stopping", readSet: time.Now(), readBy: future, stopping: true,
			reads: []scriptStep{{err: timeout}}, wantErr: true},
		{name: "other errors", readSet: time.Now(), readBy: future,
			reads: []scriptStep{{err: net.ErrClosed}}, wantErr: true},
		{name: "parking: idle until parkAt", readSet: time.Now(), readBy: future, waiting: true,
			parkAt: time.Now(), reads: []scriptStep{{err: timeout}}, wantErr: true, wantIdle: true},
		{name: "parking: a packet came since, moved to parkAt", readSet: time.Now(), readBy: future, waiting: true,
			parkAt: future.Add(-time.Minute), reads: []scriptStep{{err: timeout}, {data: []byte("ab")}}, want: "ab",
			wantMoved: true, movedTo: future.Add(-time.Minute)},
		{name: "parking: in the middle of a packet, moved to readBy", readSet: time.Now(), readBy: future,
			parkAt: time.Now(), reads: []scriptStep{{err: timeout}, {data: []byte("ab")}}, want: "ab", wantMoved: true},
		{name: "parking: stopping, not idle", readSet: time.Now(), readBy: future, stopping: true, waiting: true,
			parkAt: time.Now(), reads: []scriptStep{{err: timeout}}, wantErr: true},
	}
	for _, tt := range tests {
		nc := &scriptConn{reads: tt.reads}
		c := scriptedConn(nc, true, time.Minute)
		c.readSet, c.readBy = tt.readSet, tt.readBy
		c.stopping.Store(tt.stopping)
		c.waiting, c.parkAt = tt.waiting, tt.parkAt
		p := make([]byte, 10)
		n, err := keepAliveReader{c}.Read(p)
		if (err != nil) != tt.wantErr || string(p[:n]) != tt.want || errors.Is(err, errIdle) != tt.wantIdle {
			t.Errorf("%s: read %q, %v", tt.name, p[:n], err)
		}
		movedTo := tt.readBy
		if !tt.movedTo.IsZero() {
			movedTo = tt.movedTo
		}
		if moved := len(nc.readDeadlines) > 0; moved != tt.wantMoved || moved && !nc.readDeadlines[0].Equal(movedTo) {
			t.Errorf("%s: deadlines set %v, want moved %v to %v", tt.name, nc.readDeadlines, tt.wantMoved, movedTo)
		}
	}
}

// TestWriteDeadlines: lazily, back-to-back writes share a deadline; a write that times out
// before its own deadline gets it and goes on with the bytes not yet written; at its own
// deadline the timeout is returned.
func TestWriteDeadlines(t *testing.T) {
	wt := Options{}.withDefaults().WriteTimeout
	wtimeout := &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}
	t.Run("exact", func(t *testing.T) {
		nc := &scriptConn{}
		c := scriptedConn(nc, false, 0)
		for range 3 {
			if err := c.writeShort(packets.Puback<<4, 2, 0, 1); err != nil {
				t.Fatal(err)
			}
		}
		if len(nc.writeDeadline) != 3 {
			t.Errorf("%d write deadlines for 3 writes, want 3", len(nc.writeDeadline))
		}
	})
	t.Run("lazy", func(t *testing.T) {
		nc := &scriptConn{}
		c := scriptedConn(nc, true, 0)
		for range 3 {
			if err := c.writeShort(packets.Puback<<4, 2, 0, 1); err != nil {
				t.Fatal(err)
			}
		}
		if len(nc.writeDeadline) != 1 || nc.written.Len() != 12 {
			t.Errorf("%d write deadlines for 3 writes of %d bytes, want 1", len(nc.writeDeadline), nc.written.Len())
		}
		c.writeSet = time.Now().Add(wt / 2) // as if set half a WriteTimeout ago
		if err := c.write([]byte("abc")); err != nil || len(nc.writeDeadline) != 2 {
			t.Errorf("%v; %d write deadlines, want a new one", err, len(nc.writeDeadline))
		}
	})
	t.Run("lazy, early timeout", func(t *testing.T) {
		nc := &scriptConn{writes: []scriptStep{{n: 2, err: wtimeout}}}
		c := scriptedConn(nc, true, 0)
		c.writeSet = time.Now().Add(wt * 3 / 4) // early, but within the slack: not moved up front
		start := time.Now()
		if err := c.write([]byte("abcdef")); err != nil {
			t.Fatal(err)
		}
		if got := nc.written.String(); got != "abcdef" {
			t.Errorf("wrote %q", got)
		}
		if len(nc.writeDeadline) != 1 || nc.writeDeadline[0].Before(start.Add(wt)) {
			t.Errorf("deadlines %v, want one at %v", nc.writeDeadline, start.Add(wt))
		}
	})
	t.Run("lazy, timeout at the write's deadline", func(t *testing.T) {
		nc := &scriptConn{writes: []scriptStep{{n: 2, err: wtimeout}}}
		c := scriptedConn(nc, true, 0)
		if err := c.write([]byte("abcdef")); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("write = %v, want the timeout", err)
		}
	})
}

// TestKeepAliveWithLazyDeadline, over TCP and TLS: a packet whose bytes arrive after the read
// deadline on the socket (left early on purpose: a packet came less than half a keep-alive
// after the deadline was set) but before its own is read whole, and a device that goes silent is
// disconnected no earlier than 1.5 × keep-alive after its last packet.
func TestKeepAliveWithLazyDeadline(t *testing.T) {
	const ka = 2 * time.Second
	for _, transport := range []string{"tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			hub := newFakeHub()
			s := startServerOver(t, transport, hub, Options{KeepAliveCap: ka})
			c := connectDeviceOver(t, transport, s.addr, "dev1", testUsername, connectOpts{})
			connected := time.Now() // the deadline on the socket: connected + ka
			time.Sleep(ka * 3 / 10)
			c.send(pingreqBytes) // due by connected + 1.3 ka: the socket's deadline stays
			c.expect(packets.Pingresp)
			pkt := publishBytes(eventsTopic, 1, 9, []byte("body"), false)
			time.Sleep(ka / 10)
			c.send(pkt[:len(pkt)/2]) // due by connected + 1.4 ka
			time.Sleep(time.Until(connected.Add(ka * 12 / 10)))
			last := time.Now()
			c.send(pkt[len(pkt)/2:])
			c.expectPuback(9)
			c.expectClosed(5 * time.Second)
			if el := time.Since(last); el < ka {
				t.Errorf("closed %v after the last packet, keep-alive is %v", el, ka)
			}
		})
	}
}
