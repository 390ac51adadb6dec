package bench

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// fakeBroker is a minimal MQTT 3.1.1 broker for the client side alone: it accepts every
// CONNECT and acknowledges QoS 1 publishes, optionally in reverse order of arrival within each
// read (as a broker acknowledging out of order would). It allocates nothing per message.
func fakeBroker(t *testing.T, reverse bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serveFake(nc, reverse) })
		}
	})
	return ln.Addr().String()
}

func serveFake(nc net.Conn, reverse bool) {
	defer nc.Close()
	br := bufio.NewReaderSize(nc, 64<<10)
	bw := bufio.NewWriterSize(nc, 16<<10)
	buf := make([]byte, 64<<10)
	var pending []uint16
	var pkt [4]byte
	ack := func(id uint16) {
		pkt = [4]byte{0x40, 2, byte(id >> 8), byte(id)}
		bw.Write(pkt[:])
	}
	flush := func() bool {
		if reverse {
			for i := len(pending) - 1; i >= 0; i-- {
				ack(pending[i])
			}
		} else {
			for _, id := range pending {
				ack(id)
			}
		}
		pending = pending[:0]
		return bw.Flush() == nil
	}
	for {
		b, n, err := readFixedHeader(br)
		if err != nil || n > len(buf) {
			return
		}
		if _, err := io.ReadFull(br, buf[:n]); err != nil {
			return
		}
		switch b >> 4 {
		case 1: // CONNECT
			pkt = [4]byte{0x20, 2, 0, 0}
			bw.Write(pkt[:])
		case typePublish:
			if qos := b >> 1 & 3; qos == 1 {
				tl := int(buf[0])<<8 | int(buf[1])
				pending = append(pending, uint16(buf[2+tl])<<8|uint16(buf[3+tl]))
			}
		case 12: // PINGREQ
			pkt = [4]byte{0xd0, 0}
			bw.Write(pkt[:2])
		case 14: // DISCONNECT
			flush()
			return
		}
		if br.Buffered() == 0 && !flush() {
			return
		}
	}
}

func fakeDevices(n int) []Device {
	devs := make([]Device, n)
	for i, id := range DeviceIDs("fake-", n) {
		devs[i] = GenericDevice(id, "bench/{device}", "", "")
	}
	return devs
}

func TestOutOfOrderAcks(t *testing.T) {
	addr := fakeBroker(t, true)
	res, err := Run(context.Background(), Config{
		Addr: addr, Devices: fakeDevices(3), QoS: 1, Window: 16, Size: 64,
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Broker: "fake",
	})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, 3)
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	addr := fakeBroker(t, false)
	run := func(d time.Duration) (allocs uint64, msgs int64) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		res, err := Run(context.Background(), Config{
			Addr: addr, Devices: fakeDevices(4), QoS: 1, Window: 4, Size: 128, Duration: d, Broker: "fake",
		})
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if res.Unacked != 0 || res.Disconnects != 0 {
			t.Fatalf("unacked %d, disconnects %d (%s)", res.Unacked, res.Disconnects, res.FirstDisconnect)
		}
		return after.Mallocs - before.Mallocs, res.SentAll
	}
	a1, m1 := run(200 * time.Millisecond)
	a2, m2 := run(600 * time.Millisecond)
	if m2 <= m1 {
		t.Skipf("the longer run sent fewer messages (%d vs %d): machine too busy", m2, m1)
	}
	perMsg := (float64(a2) - float64(a1)) / float64(m2-m1)
	t.Logf("runs: %d allocs/%d msgs, %d allocs/%d msgs: %.4f allocs per extra message", a1, m1, a2, m2, perMsg)
	if perMsg > 0.01 {
		t.Fatalf("%.4f allocations per message", perMsg)
	}
}

func TestCancelWhileConnecting(t *testing.T) {
	addr := fakeBroker(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	// 20 devices at 10 connections/s would take 2 s to connect.
	res, err := Run(ctx, Config{Addr: addr, Devices: fakeDevices(20), QoS: 1, ConnectRate: 10, Drain: time.Second})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("took %v", took)
	}
	if !res.Interrupted || res.Connect.Connected == 0 || res.Connect.Connected == 20 || res.Sent != 0 {
		t.Fatalf("result %+v", res)
	}
}
