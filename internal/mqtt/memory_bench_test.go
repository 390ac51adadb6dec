package mqtt

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

// TestIdleTLSConnectionMemory reports what an idle device on TLS costs the server: heap and
// goroutine stacks per connection, both ends of loopback in this process, so the client's
// tls.Conn is included (BENCHMARKS.md measures the hub's resident memory alone with the real
// binary), for connections that keep their reader and for parked ones; only the server has
// goroutines, so a parked connection must cost no stack. With TETHER_HEAP_PROFILE=file it
// writes a heap profile of the parked case with the connections up.
func TestIdleTLSConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1000 TLS connections")
	}
	for _, parked := range []bool{false, true} {
		if parked && runtime.GOOS != "linux" {
			continue // connections park on Linux only
		}
		t.Run(fmt.Sprintf("parked=%v", parked), func(t *testing.T) {
			opts := Options{Logger: discardLogger(), ParkAfter: -1}
			if parked {
				opts.ParkAfter = time.Millisecond
			}
			heap, stack := idleTLSConnectionMemory(t, opts, parked)
			t.Logf("1000 idle TLS connections, both ends, parked %v: heap %d B, stacks %d B per connection",
				parked, heap, stack)
			if parked && stack > 256 {
				t.Errorf("parked connections hold %d B of stack each", stack)
			}
			if !parked && stack < 2048 {
				t.Errorf("reading connections hold %d B of stack each: is the measure broken?", stack)
			}
		})
	}
}

func idleTLSConnectionMemory(t *testing.T, opts Options, parked bool) (heap, stack int64) {
	const n = 1000
	profile := os.Getenv("TETHER_HEAP_PROFILE")
	if profile != "" && parked {
		defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
		runtime.MemProfileRate = 64
	}
	cert := selfSigned(t, "localhost")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(&benchHub{}, opts)
	go s.Serve(t.Context(), ln, "mqtt")
	defer s.Shutdown(t.Context())
	type mem struct{ heap, stack uint64 }
	measure := func() mem {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return mem{ms.HeapInuse, ms.StackInuse}
	}
	// Warm up crypto and the runtime's pools with one connection first.
	dialOne := func(i int) net.Conn {
		nc, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		id := []byte{'d', byte('a' + i%26), byte('a' + i/26%26), byte('a' + i/676%26)}
		if _, err := nc.Write(connectBytes(string(id), "h/"+string(id)+"/?api-version=1", connectOpts{keepAlive: 180})); err != nil {
			t.Fatal(err)
		}
		ack := make([]byte, 4)
		if _, err := io.ReadFull(nc, ack); err != nil || ack[3] != 0 {
			t.Fatalf("CONNACK %x %v", ack, err)
		}
		return nc
	}
	dialOne(n + 1).Close()
	for s.Connections() != 0 {
		time.Sleep(time.Millisecond)
	}
	before := measure()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		conns = append(conns, dialOne(i))
	}
	if parked {
		waitParked(t, s, n)
	} else {
		time.Sleep(100 * time.Millisecond)
	}
	after := measure()
	if profile != "" && parked {
		out, err := os.Create(profile)
		if err != nil {
			t.Fatal(err)
		}
		pprof.WriteHeapProfile(out)
		out.Close()
	}
	return int64(after.heap-before.heap) / n, int64(after.stack-before.stack) / n
}
