// Package e2e starts the real tether binary and drives it with real clients: the official Azure
// IoT Node.js SDKs (unmodified, from npm) and an independent MQTT client library.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/certs"
)

// tetherBin is the binary under test, built once by TestMain.
var tetherBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tether-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tetherBin = filepath.Join(dir, "tether")
	build := exec.Command("go", "build", "-race", "-o", tetherBin, "../cmd/tether")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tether:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hubProcess is one running `tether serve`.
type hubProcess struct {
	t        *testing.T
	dataDir  string
	mqttAddr string
	tcpAddr  string
	https    string
	args     []string
	cmd      *exec.Cmd
	logs     *bytes.Buffer
	exited   chan struct{}
}

// startHub starts a hub on free loopback ports in a fresh data directory.
func startHub(t *testing.T, extra ...string) *hubProcess {
	t.Helper()
	return startHubWithHTTPS(t, freeAddr(t), extra...)
}

// startHubOn443 starts a hub whose HTTPS listener is on 127.0.0.1:443, the only port the SDKs'
// HTTP and WebSocket transports and azure-iothub dial. Binding it needs root (CI runs as root).
// A file lock keeps concurrent test processes on this machine from fighting over the port.
func startHubOn443(t *testing.T, extra ...string) *hubProcess {
	t.Helper()
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "tether-e2e-443.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs after the hub has stopped.
	t.Cleanup(func() { lock.Close() })
	return startHubWithHTTPS(t, "127.0.0.1:443", extra...)
}

func startHubWithHTTPS(t *testing.T, httpsAddr string, extra ...string) *hubProcess {
	t.Helper()
	h := &hubProcess{
		t:        t,
		dataDir:  t.TempDir(),
		mqttAddr: freeAddr(t),
		tcpAddr:  freeAddr(t),
		https:    httpsAddr,
	}
	h.args = append([]string{"serve", "--data-dir", h.dataDir, "--mqtt-addr", h.mqttAddr,
		"--mqtt-tcp-addr", h.tcpAddr, "--https-addr", h.https, "--log-level", "debug"}, extra...)
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *hubProcess) start() {
	h.t.Helper()
	os.Remove(filepath.Join(h.dataDir, "run.json"))
	h.logs = new(bytes.Buffer)
	h.cmd = exec.Command(tetherBin, h.args...)
	h.cmd.Stdout = h.logs
	h.cmd.Stderr = h.logs
	if err := h.cmd.Start(); err != nil {
		h.t.Fatalf("start tether: %v", err)
	}
	h.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(h.cmd, h.exited)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(h.dataDir, "run.json")); err == nil {
			return
		}
		select {
		case <-h.exited:
			h.t.Fatalf("tether exited during start-up:\n%s", h.logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("tether did not start within 30s:\n%s", h.logs)
		}
	}
}

// stop ends the hub with SIGTERM, as an operator would.
func (h *hubProcess) stop() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	select {
	case <-h.exited:
		return
	default:
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(20 * time.Second):
		h.cmd.Process.Kill()
		<-h.exited
		h.t.Errorf("tether did not stop within 20s of SIGTERM:\n%s", h.logs)
	}
	if h.t.Failed() {
		h.t.Logf("hub log:\n%s", h.logs)
	}
}

// kill ends the hub with SIGKILL: no shutdown code runs.
func (h *hubProcess) kill() {
	h.cmd.Process.Kill()
	<-h.exited
}

func (h *hubProcess) caFile() string { return filepath.Join(h.dataDir, "tls", "ca.pem") }

// tlsConfig trusts the hub's CA for the name "localhost".
func (h *hubProcess) tlsConfig(t *testing.T) *tls.Config {
	t.Helper()
	pool, err := certs.Pool(h.caFile())
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// deviceToken signs an hour's SAS token for deviceID with the key of its connection string.
func deviceToken(t *testing.T, deviceID, conn string) string {
	t.Helper()
	cs, err := auth.ParseConnectionString(conn)
	if err != nil {
		t.Fatal(err)
	}
	token, err := auth.Sign("localhost/devices/"+deviceID, "", cs.SharedAccessKey, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// cli runs a tether client command against this hub and returns its stdout.
func (h *hubProcess) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tetherBin, append([]string{"--data-dir", h.dataDir}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("tether %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func (h *hubProcess) mustCLI(args ...string) string {
	h.t.Helper()
	out, err := h.cli(args...)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// createDevice creates a device and returns its connection string.
func (h *hubProcess) createDevice(id string, extra ...string) string {
	h.t.Helper()
	return strings.TrimSpace(h.mustCLI(append([]string{"device", "create", id}, extra...)...))
}

func (h *hubProcess) device(id string) api.Device {
	h.t.Helper()
	var d api.Device
	if err := json.Unmarshal([]byte(h.mustCLI("device", "show", id)), &d); err != nil {
		h.t.Fatalf("device show %s: %v", id, err)
	}
	return d
}

// events reads the built-in endpoint with `tether monitor --json` until it is idle for a moment.
func (h *hubProcess) events(extra ...string) []api.Event {
	h.t.Helper()
	out := h.mustCLI(append([]string{"monitor", "--json", "--from", "start", "--timeout", "3s"}, extra...)...)
	var events []api.Event
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var ev api.Event
		if err := dec.Decode(&ev); err != nil {
			h.t.Fatalf("monitor printed something that is not an event: %v\n%s", err, out)
		}
		events = append(events, ev)
	}
	return events
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// sdkResult is what e2e/node/sdk.js prints.
type sdkResult struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error"`
	Message string `json:"message"`
	Inner   string `json:"inner"`
	Sent    int    `json:"sent"`
}

// nodeSDK runs e2e/node/sdk.js with the official SDK against the hub.
func (h *hubProcess) nodeSDK(connectionString, transport string, args ...string) sdkResult {
	h.t.Helper()
	if _, err := os.Stat("node/node_modules/azure-iot-device"); err != nil {
		h.t.Fatalf("the Azure IoT SDK is not installed: run `npm ci --prefix e2e/node` (the test script does): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{"node/sdk.js"}, args...)...)
	cmd.Env = append(os.Environ(),
		"NODE_EXTRA_CA_CERTS="+h.caFile(),
		"DEVICE_CONNECTION_STRING="+connectionString,
		"TRANSPORT="+transport,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run() // the JSON line says how it went
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res sdkResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		h.t.Fatalf("sdk.js printed no result: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	return res
}
