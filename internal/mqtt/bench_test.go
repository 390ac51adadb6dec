package mqtt

import (
	"bufio"
	"context"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/message"
)

func BenchmarkParseBag(b *testing.B) {
	_, topics := readTopics(b)
	_, _, bag, _ := parseEventsTopic(topics["node-all"])
	b.Run("ParseBag", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ParseBag(bag)
		}
	})
	b.Run("ApplyBag", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m message.Message
			ApplyBag(&m, bag)
		}
	})
}

// benchHub is an immediately durable hub that keeps nothing.
type benchHub struct{ n atomic.Int64 }

type benchDevice struct {
	h       *benchHub
	id, mod string
}

func (h *benchHub) Connect(_ context.Context, req ConnectRequest) (Device, error) {
	return &benchDevice{h, req.DeviceID, req.ModuleID}, nil
}
func (d *benchDevice) DeviceID() string  { return d.id }
func (d *benchDevice) ModuleID() string  { return d.mod }
func (d *benchDevice) Expiry() time.Time { return time.Time{} }
func (d *benchDevice) Disconnected(bool) {}
func (d *benchDevice) Submit(_ context.Context, m *message.Message) (Receipt, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	d.h.n.Add(1)
	return doneReceipt{}, nil
}

// BenchmarkPublishQoS1 sends QoS 1 publishes with the Node SDK's full property bag and a
// 256-byte body through the server loop over loopback TCP, to an immediately durable hub.
// serial waits for each PUBACK (one device, one message at a time); pipelined keeps sending
// while PUBACKs come back (the window does the flow control).
func BenchmarkPublishQoS1(b *testing.B) {
	_, topics := readTopics(b)
	for _, mode := range []string{"serial", "pipelined"} {
		b.Run(mode, func(b *testing.B) {
			s := startServer(b, &benchHub{}, Options{})
			c := connectDevice(b, s.addr, "dev1", testUsername, connectOpts{})
			pkt := publishBytes(topics["node-all"], 1, 1, make([]byte, 256), false)
			idAt := 2 + 2 + len(topics["node-all"]) + 1 // fixed header (2-byte length) + topic
			if pkt[1]&0x80 == 0 {
				idAt--
			}
			setID := func(i int) {
				id := uint16(i%0xfffe + 1)
				pkt[idAt], pkt[idAt+1] = byte(id>>8), byte(id)
			}
			c.nc.SetDeadline(time.Time{})
			ack := make([]byte, 4)
			readAck := func() {
				if _, err := io.ReadFull(c.br, ack); err != nil || ack[0] != 0x40 {
					b.Fatalf("PUBACK: %x %v", ack, err)
				}
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(pkt)))
			b.ResetTimer()
			if mode == "serial" {
				for i := 0; i < b.N; i++ {
					setID(i)
					if _, err := c.nc.Write(pkt); err != nil {
						b.Fatal(err)
					}
					readAck()
				}
			} else {
				go func() {
					w := bufio.NewWriterSize(c.nc, 16<<10)
					for i := 0; i < b.N; i++ {
						setID(i)
						if _, err := w.Write(pkt); err != nil {
							return
						}
					}
					w.Flush()
				}()
				for i := 0; i < b.N; i++ {
					readAck()
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// TestIdleConnectionMemory measures what an idle, connected device costs (server side plus the
// client's socket in this process; plain TCP, no TLS) and keeps it under the 20 KB target.
func TestIdleConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1000 connections")
	}
	const n = 1000
	s := startServer(t, &benchHub{}, Options{})
	measure := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	before := measure()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		nc, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
		// Distinct identities, else each CONNECT takes over the previous one.
		id := []byte{'d', byte('a' + i%26), byte('a' + i/26%26), byte('a' + i/676)}
		pkt := connectBytes(string(id), "h/"+string(id)+"/?api-version=1", connectOpts{keepAlive: 180})
		if _, err := nc.Write(pkt); err != nil {
			t.Fatal(err)
		}
		ack := make([]byte, 4)
		if _, err := io.ReadFull(nc, ack); err != nil || ack[3] != 0 {
			t.Fatalf("CONNACK %x %v", ack, err)
		}
	}
	// Let the connections settle into their idle read, then measure.
	time.Sleep(100 * time.Millisecond)
	per := int64(measure()-before) / n
	t.Logf("%d idle connections: %d bytes each (heap + stacks, both ends of loopback TCP)", n, per)
	if s.Connections() != n {
		t.Fatalf("%d connections", s.Connections())
	}
	if per > 20<<10 {
		t.Errorf("idle connection costs %d bytes, target is 20 KB", per)
	}
}
