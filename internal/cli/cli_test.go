package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/hub"
)

func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(args, &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

// TestDataDirFromFlagEnvAndConfig: the data directory (like every setting) comes from a flag,
// the environment, or the YAML configuration file.
func TestDataDirFromFlagEnvAndConfig(t *testing.T) {
	dir := t.TempDir()
	state, _, err := hub.LoadOrCreateState(dir, "hub1", 4, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := state.Policy("service")
	want := auth.ServiceConnectionString("localhost", "service", svc.PrimaryKey).String()

	config := filepath.Join(t.TempDir(), "tether.yaml")
	if err := os.WriteFile(config, []byte("data-dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"flag", nil, []string{"--data-dir", dir}},
		{"env", map[string]string{"TETHER_DATA_DIR": dir}, nil},
		{"config flag", nil, []string{"--config", config}},
		{"config env", map[string]string{"TETHER_CONFIG": config}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"TETHER_DATA_DIR", "TETHER_CONFIG"} {
				t.Setenv(k, "") // restored after the test
				os.Unsetenv(k)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, errOut, code := run(t, append(tc.args, "hub", "connection-string", "--policy", "service")...)
			if code != 0 || strings.TrimSpace(out) != want {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
			}
		})
	}
}

func TestClearErrors(t *testing.T) {
	dir := t.TempDir()
	_, errOut, code := run(t, "--data-dir", dir, "device", "list")
	if code == 0 || !strings.Contains(errOut, "tether serve") {
		t.Errorf("no hub: exit %d, %q", code, errOut)
	}
	if _, _, err := hub.LoadOrCreateState(dir, "h", 4, time.Now()); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = run(t, "--data-dir", dir, "device", "list")
	if code == 0 || !strings.Contains(errOut, "not running") {
		t.Errorf("hub not running: exit %d, %q", code, errOut)
	}
	_, errOut, code = run(t, "--data-dir", dir, "hub", "connection-string", "--policy", "nope")
	if code == 0 || !strings.Contains(errOut, `no policy "nope"`) {
		t.Errorf("unknown policy: exit %d, %q", code, errOut)
	}
	_, errOut, code = run(t, "serve", "--partitions", "0", "--data-dir", dir)
	if code == 0 || !strings.Contains(errOut, "--partitions") {
		t.Errorf("bad partitions: exit %d, %q", code, errOut)
	}
	if _, _, code := run(t, "--help"); code != 0 {
		t.Errorf("--help exit %d", code)
	}
}

// TestHubSASToken: the token is signed with the named policy of the local hub, or with the
// --hub connection string's own policy, for the hub's host, valid for --duration.
func TestHubSASToken(t *testing.T) {
	dir := t.TempDir()
	state, _, err := hub.LoadOrCreateState(dir, "hub1", 4, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	device, _ := state.Policy("device")
	service, _ := state.Policy("service")
	remote := auth.ServiceConnectionString("hub.example.com", "service", service.PrimaryKey).String()
	cases := []struct {
		name     string
		args     []string
		host     string
		policy   string
		key      string
		validFor time.Duration
	}{
		{"default policy", nil, "localhost", "iothubowner", "", time.Hour},
		{"device policy, 10m", []string{"--policy", "device", "--duration", "10m"}, "localhost", "device", device.PrimaryKey, 10 * time.Minute},
		{"--hub", []string{"--hub", remote, "--policy", "device"}, "hub.example.com", "service", service.PrimaryKey, time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now()
			out, errOut, code := run(t, append([]string{"--data-dir", dir, "hub", "sas-token"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			tok, err := auth.ParseToken(strings.TrimSpace(out))
			if err != nil {
				t.Fatalf("%q: %v", out, err)
			}
			if tok.Resource != tc.host || tok.KeyName != tc.policy {
				t.Errorf("sr %q skn %q, want %q and %q", tok.Resource, tok.KeyName, tc.host, tc.policy)
			}
			if exp := before.Add(tc.validFor); tok.Expiry.Before(exp.Add(-2*time.Second)) || tok.Expiry.After(exp.Add(2*time.Second)) {
				t.Errorf("expires %v, want about %v", tok.Expiry, exp)
			}
			key := tc.key
			if key == "" {
				p, _ := state.Policy(tc.policy)
				key = p.PrimaryKey
			}
			if err := tok.Verify(key, time.Now()); err != nil {
				t.Errorf("not signed with policy %s's key: %v", tc.policy, err)
			}
		})
	}
	for _, args := range [][]string{{"--duration", "-1m"}, {"--policy", "nope"}} {
		if _, errOut, code := run(t, append([]string{"--data-dir", dir, "hub", "sas-token"}, args...)...); code == 0 {
			t.Errorf("%v: exit 0, want an error", args)
		} else if !strings.Contains(errOut, strings.TrimPrefix(args[0], "--")) && !strings.Contains(errOut, args[1]) {
			t.Errorf("%v: %q does not say what is wrong", args, errOut)
		}
	}
}
