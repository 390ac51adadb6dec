package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/telemetry"
)

// Benchmarks of the server's packet path and of the whole device→log path in-process: the real
// server loop, the real hub (validate, stamp, encode) and the real telemetry log (group commit,
// fdatasync before PUBACK unless NoSync). Profile the latter with
//
//	go test ./internal/mqtt -run '^$' -bench 'ServeHub/durable/devices=100/window=1$' \
//	    -benchtime 200000x -cpuprofile /tmp/cpu.out && go tool pprof -top /tmp/cpu.out
//
// The client side (100 goroutine pairs writing PUBLISH and reading PUBACK) runs in the same
// process and shows up in the profile too (bench* functions, syscall.write/read from them).

// BenchmarkDecode decodes the packets a device sends through the same calls the server makes:
// the fixed header and remaining length, then mochi's decoder for the body.
func BenchmarkDecode(b *testing.B) {
	_, topics := readTopics(b)
	connect := readHex(b, "testdata/connect_node.hex")
	publish := publishBytes(topics["node-all"], 1, 7, make([]byte, 256), false)
	puback := pubackBytes(7)
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{{"CONNECT", connect}, {"PUBLISH", publish}, {"PUBACK", puback}} {
		b.Run(tc.name, func(b *testing.B) {
			r := bytes.NewReader(tc.pkt)
			c := &conn{nc: discardConn{}, br: bufio.NewReaderSize(r, readBufferSize), s: &Server{opts: Options{}.withDefaults()}}
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.pkt)))
			for b.Loop() {
				r.Reset(tc.pkt)
				c.br.Reset(r)
				fh, body, err := c.readPacket(time.Time{})
				if err != nil {
					b.Fatal(err)
				}
				pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 4}
				switch fh.Type {
				case packets.Connect:
					err = pk.ConnectDecode(body)
				case packets.Publish:
					err = pk.PublishDecode(body)
					if err == nil {
						_, _, bag, _ := parseEventsTopic(pk.TopicName)
						pm := msgPool.Get().(*pooledMessage)
						pm.build(bag, pk.Payload, false)
						pm.recycle()
					}
				case packets.Puback:
					if len(body) != 2 {
						b.Fatal("short PUBACK")
					}
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncode encodes what the server sends: PUBACK and CONNACK (writeShort's four bytes)
// and a C2D PUBLISH (Publish's encoder).
func BenchmarkEncode(b *testing.B) {
	var sink bytes.Buffer
	b.Run("PUBACK", func(b *testing.B) {
		c := &conn{nc: discardConn{}, s: &Server{opts: Options{}.withDefaults()}}
		b.ReportAllocs()
		for b.Loop() {
			if err := c.writeShort(packets.Puback<<4, 2, 0, 7); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PUBLISH-C2D", func(b *testing.B) {
		payload := make([]byte, 256)
		b.ReportAllocs()
		for b.Loop() {
			sink.Reset()
			pk := packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
				TopicName:   "devices/dev1/messages/devicebound/%24.mid=abc&%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound",
				PacketID:    9, Payload: payload, ProtocolVersion: 4,
			}
			if err := pk.PublishEncode(&sink); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// discardConn is a net.Conn whose writes succeed and go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }
func (discardConn) SetReadDeadline(time.Time) error  { return nil }

// BenchmarkServeHub: N devices over loopback TCP, each keeping `window` QoS 1 publishes (the Node
// SDK's property bag, 256-byte body) in flight, through the real hub into a real telemetry log
// with 4 partitions, as `tether serve` runs them. durable: fdatasync before PUBACK. b.N is the
// total number of messages.
func BenchmarkServeHub(b *testing.B) {
	_, topics := readTopics(b)
	_, _, bag, _ := parseEventsTopic(topics["node-all"])
	for _, durable := range []bool{true, false} {
		mode := "durable"
		if !durable {
			mode = "nosync"
		}
		for _, devices := range []int{100} {
			for _, window := range []int{1, 20} {
				b.Run(fmt.Sprintf("%s/devices=%d/window=%d", mode, devices, window), func(b *testing.B) {
					benchServeHub(b, bag, durable, devices, window)
				})
			}
		}
	}
}

func benchServeHub(b *testing.B, bag string, durable bool, devices, window int) {
	l, err := telemetry.Open(telemetry.Options{Dir: b.TempDir(), Partitions: 4, NoSync: !durable})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	h := hub.New(hub.Config{Auth: benchAuth{}, Activity: benchActivity{}, Log: l})
	s := startServer(b, hubAdapter{h}, Options{})

	type dev struct {
		nc   net.Conn
		br   *bufio.Reader
		pkt  []byte
		idAt int
	}
	devs := make([]*dev, devices)
	for i := range devs {
		id := fmt.Sprintf("bench-%d", i)
		c := connectDevice(b, s.addr, id, "localhost/"+id+"/?api-version=2021-04-12", connectOpts{keepAlive: 300})
		c.nc.SetDeadline(time.Time{})
		topic := "devices/" + id + "/messages/events/" + bag
		pkt := publishBytes(topic, 1, 1, make([]byte, 256), false)
		idAt := 1 + 2 + 2 + len(topic) // fixed header byte, 2-byte remaining length, topic
		if pkt[1]&0x80 == 0 {
			idAt--
		}
		devs[i] = &dev{nc: c.nc, br: c.br, pkt: pkt, idAt: idAt}
	}
	lat := make([][]time.Duration, devices)
	cpu0 := processCPU()
	b.ReportAllocs()
	b.SetBytes(256)
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, d := range devs {
		n := b.N / devices
		if i < b.N%devices {
			n++
		}
		sent := make([]time.Time, 0x10000)
		credit := make(chan struct{}, window)
		for range window {
			credit <- struct{}{}
		}
		wg.Go(func() { // writer
			for k := range n {
				<-credit
				id := uint16(k%0xfffe + 1)
				d.pkt[d.idAt], d.pkt[d.idAt+1] = byte(id>>8), byte(id)
				sent[id] = time.Now()
				if _, err := d.nc.Write(d.pkt); err != nil {
					b.Error(err)
					return
				}
			}
		})
		wg.Go(func() { // reader
			ack := make([]byte, 4)
			ls := make([]time.Duration, 0, n)
			for range n {
				if _, err := io.ReadFull(d.br, ack); err != nil || ack[0] != 0x40 {
					b.Errorf("PUBACK: %x %v", ack, err)
					return
				}
				ls = append(ls, time.Since(sent[uint16(ack[2])<<8|uint16(ack[3])]))
				credit <- struct{}{}
			}
			lat[i] = ls
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	// CPU time of the whole process (server and client) per message: steadier than msgs/s on a
	// machine shared with other work.
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/1000/float64(b.N), "cpu-µs/msg")
	all := slices.Concat(lat...)
	if len(all) > 0 {
		slices.Sort(all)
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// processCPU is the user+system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type benchAuth struct{}

func (benchAuth) AuthenticateDevice(_ context.Context, deviceID, moduleID, _ string) (auth.DeviceIdentity, error) {
	return auth.DeviceIdentity{DeviceID: deviceID, ModuleID: moduleID, GenerationID: "638000000000000000",
		Scope: "device", Type: "sas", Issuer: "iothub"}, nil
}

type benchActivity struct{}

func (benchActivity) SetConnectionState(context.Context, string, string, bool, time.Time) error {
	return nil
}
func (benchActivity) RecordActivity(string, string, time.Time) {}

// hubAdapter is internal/server's mqttAdapter (which this package cannot import).
type hubAdapter struct{ h *hub.Hub }

func (a hubAdapter) Connect(ctx context.Context, req ConnectRequest) (Device, error) {
	id, err := a.h.AuthenticateDevice(ctx, req.DeviceID, req.ModuleID, req.Password)
	if err != nil {
		return nil, err
	}
	a.h.Connected(ctx, id)
	return &hubDevice{h: a.h, origin: hub.Origin{Identity: id, ModelID: req.ModelID}}, nil
}

type hubDevice struct {
	h      *hub.Hub
	origin hub.Origin
}

func (d *hubDevice) DeviceID() string  { return d.origin.Identity.DeviceID }
func (d *hubDevice) ModuleID() string  { return d.origin.Identity.ModuleID }
func (d *hubDevice) Expiry() time.Time { return time.Time{} }
func (d *hubDevice) Disconnected(bool) { d.h.Disconnected(context.Background(), d.origin.Identity) }
func (d *hubDevice) Submit(ctx context.Context, m *message.Message) (Receipt, error) {
	p, err := d.h.Submit(ctx, d.origin, m)
	if err != nil {
		return nil, err
	}
	return pendingReceipt{p}, nil
}

type pendingReceipt struct{ p *telemetry.Pending }

func (r pendingReceipt) Wait(ctx context.Context) error {
	_, err := r.p.Wait(ctx)
	return err
}
