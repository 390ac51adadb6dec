package cli

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestBenchCPUProfile: --cpuprofile writes the load tool's profile (gzip-compressed, as
// runtime/pprof writes it) even when the run fails, here against a broker that hangs up.
func TestBenchCPUProfile(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	prof := filepath.Join(t.TempDir(), "bench.pprof")
	_, errOut, code := run(t, "bench", "--broker", "generic", "--addr", ln.Addr().String(), "--devices", "2",
		"--duration", "100ms", "--warmup", "0s", "--cpuprofile", prof)
	if code == 0 {
		t.Fatalf("bench against a broker that hangs up succeeded: %s", errOut)
	}
	b, err := os.ReadFile(prof)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		t.Fatalf("profile is %d bytes and not gzip: %.8x", len(b), b)
	}
}
