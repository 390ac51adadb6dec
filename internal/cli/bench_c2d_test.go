package cli

import (
	"strings"
	"testing"
)

// TestBenchC2DFlagErrors: --c2d refuses what it cannot measure before connecting anywhere.
func TestBenchC2DFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"generic broker", []string{"--broker", "generic"}, "does not apply to --broker generic"},
		{"e2e", []string{"--e2e"}, "choose one"},
		{"qos 0", []string{"--qos", "0"}, "QoS 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--data-dir", dir, "bench", "--c2d", "--duration", "1s"}, tc.args...)
			_, errOut, code := run(t, args...)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want %q", code, errOut, tc.want)
			}
		})
	}
}
