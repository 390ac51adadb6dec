package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
)

// serviceClient returns a Go service client for the hub signing with the named policy.
func (h *hubProcess) serviceClient(t *testing.T, policy string) *client.Client {
	t.Helper()
	cs := strings.TrimSpace(h.mustCLI("hub", "connection-string", "--policy", policy))
	c, err := client.New(cs, client.WithEndpoint("https://"+h.https), client.WithTLSConfig(h.tlsConfig(t)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sendMQTT publishes n QoS 1 messages as deviceID over plain TCP MQTT, each acknowledged (and
// so durable) before the next; body(i) gives each body.
func (h *hubProcess) sendMQTT(t *testing.T, deviceID, conn string, n int, body func(i int) []byte) {
	t.Helper()
	c, err := h.mqttDevice(t, deviceID, conn, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(100)
	topic := "devices/" + deviceID + "/messages/events/"
	var last paho.Token
	for i := range n {
		// Up to 64 in flight: QoS 1 acks arrive in order, and each one means stored.
		tok := c.Publish(topic+"seq="+strconv.Itoa(i), 1, false, body(i))
		if i%64 == 63 {
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Fatalf("publish %d: %v", i, tok.Error())
			}
		}
		last = tok
	}
	if last != nil && (!last.WaitTimeout(30*time.Second) || last.Error() != nil) {
		t.Fatalf("last publish: %v", last.Error())
	}
}

// TestSDKRegistryOn443 is the judge of registry compatibility: the unmodified azure-iothub
// Registry, which always dials port 443 and trusts only NODE_EXTRA_CA_CERTS, creates, gets,
// updates, lists and deletes devices and modules on Tether; a registryRead connection string
// cannot create.
func TestSDKRegistryOn443(t *testing.T) {
	h := startHubOn443(t)
	owner := strings.TrimSpace(h.mustCLI("hub", "connection-string"))
	if !strings.HasPrefix(owner, "HostName=localhost;") {
		t.Fatalf("owner connection string %q does not name localhost", owner)
	}
	h.createDevice("already-there")

	var res struct {
		OK              bool            `json:"ok"`
		Step            string          `json:"step"`
		Error           string          `json:"error"`
		Message         string          `json:"message"`
		Steps           []string        `json:"steps"`
		Created         json.RawMessage `json:"created"`
		Updated         api.Device      `json:"updated"`
		Listed          []string        `json:"listed"`
		DuplicateError  string          `json:"duplicateError"`
		Modules         []string        `json:"modules"`
		GetDeletedError string          `json:"getDeletedError"`
		Statistics      struct {
			TotalDeviceCount    int `json:"totalDeviceCount"`
			DisabledDeviceCount int `json:"disabledDeviceCount"`
		} `json:"statistics"`
	}
	h.nodeRegistry(t, owner, &res, "lifecycle", "sdk-dev-1")
	if !res.OK {
		t.Fatalf("azure-iothub failed at %s: %s: %s", res.Step, res.Error, res.Message)
	}
	var created map[string]any
	if err := json.Unmarshal(res.Created, &created); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"deviceId", "generationId", "etag", "status", "connectionState", "connectionStateUpdatedTime",
		"lastActivityTime", "cloudToDeviceMessageCount", "statusUpdatedTime", "authentication", "capabilities"} {
		if _, ok := created[field]; !ok {
			t.Errorf("created device has no %s: %s", field, res.Created)
		}
	}
	if created["connectionState"] != "Disconnected" {
		t.Errorf("connectionState = %v", created["connectionState"])
	}
	if res.Updated.Status != "disabled" || res.Updated.StatusReason == nil || *res.Updated.StatusReason != "maintenance" {
		t.Errorf("updated = %+v", res.Updated)
	}
	if strings.Join(res.Listed, ",") != "already-there,sdk-dev-1" {
		t.Errorf("listed = %v", res.Listed)
	}
	if res.DuplicateError != "DeviceAlreadyExistsError" || res.GetDeletedError != "DeviceNotFoundError" {
		t.Errorf("duplicate create → %s, get after delete → %s", res.DuplicateError, res.GetDeletedError)
	}
	if len(res.Modules) != 1 || res.Modules[0] != "filter" {
		t.Errorf("modules = %v", res.Modules)
	}
	if res.Statistics.TotalDeviceCount != 2 || res.Statistics.DisabledDeviceCount != 1 {
		t.Errorf("statistics = %+v", res.Statistics)
	}

	// A registryRead token cannot create devices: the SDK reports UnauthorizedError.
	readOnly := strings.TrimSpace(h.mustCLI("hub", "connection-string", "--policy", "registryRead"))
	var refused struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	h.nodeRegistry(t, readOnly, &refused, "create", "not-allowed")
	if refused.OK || refused.Error != "UnauthorizedError" {
		t.Fatalf("registryRead create = %+v, want UnauthorizedError", refused)
	}
}

// nodeRegistry runs e2e/node/registry.js with the service SDK and decodes its JSON line.
func (h *hubProcess) nodeRegistry(t *testing.T, connectionString string, out any, args ...string) {
	t.Helper()
	if _, err := os.Stat("node/node_modules/azure-iothub"); err != nil {
		t.Fatalf("azure-iothub is not installed: run `npm ci --prefix e2e/node`: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{"node/registry.js"}, args...)...)
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+h.caFile(), "HUB_CONNECTION_STRING="+connectionString)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run() // the JSON line says how it went
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), out); err != nil {
		t.Fatalf("registry.js printed no result: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
}

// TestServicePermissionsThroughBinary: each policy can do what its rights allow and nothing
// else, and a device key cannot call the service API at all.
func TestServicePermissionsThroughBinary(t *testing.T) {
	h := startHub(t)
	conn := h.createDevice("dev-1")
	ctx := context.Background()
	unauthorized := func(err error) bool {
		var e *client.Error
		return errors.As(err, &e) && e.StatusCode == http.StatusUnauthorized && e.Code == "IotHubUnauthorizedAccess"
	}
	readEvents := func(c *client.Client) error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		err := c.ReadEvents(ctx, client.ReadOptions{From: "start"}, func(api.Event) error { return nil })
		if errors.Is(err, context.DeadlineExceeded) {
			return nil
		}
		return err
	}
	tests := []struct {
		policy string
		what   string
		call   func(*client.Client) error
		ok     bool
	}{
		{"registryRead", "create a device", func(c *client.Client) error { _, err := c.CreateDevice(ctx, api.Device{DeviceID: "x"}); return err }, false},
		{"registryRead", "read a device", func(c *client.Client) error { _, err := c.GetDevice(ctx, "dev-1"); return err }, true},
		{"registryRead", "read telemetry", readEvents, false},
		{"device", "read telemetry", readEvents, false},
		{"device", "list devices", func(c *client.Client) error { _, err := c.ListDevices(ctx); return err }, false},
		{"service", "read telemetry", readEvents, true},
		{"service", "commit a checkpoint", func(c *client.Client) error { _, err := c.CommitCheckpoint(ctx, "$Default", 0, 0); return err }, false},
		{"service", "create a consumer group", func(c *client.Client) error { _, err := c.CreateConsumerGroup(ctx, "g"); return err }, false},
		{"service", "list consumer groups", func(c *client.Client) error { _, err := c.ConsumerGroups(ctx); return err }, true},
		{"registryReadWrite", "create a consumer group", func(c *client.Client) error { _, err := c.CreateConsumerGroup(ctx, "g"); return err }, false},
		{"iothubowner", "create a consumer group", func(c *client.Client) error { _, err := c.CreateConsumerGroup(ctx, "g"); return err }, true},
	}
	for _, tt := range tests {
		t.Run(tt.policy+" "+tt.what, func(t *testing.T) {
			err := tt.call(h.serviceClient(t, tt.policy))
			switch {
			case tt.ok && err != nil:
				t.Fatal(err)
			case !tt.ok && tt.what == "commit a checkpoint":
				// Allowed, but partition 0 is empty: refused for the sequence, not the token.
				var e *client.Error
				if !errors.As(err, &e) || e.StatusCode != http.StatusBadRequest {
					t.Fatalf("err = %v, want 400", err)
				}
			case !tt.ok && !unauthorized(err):
				t.Fatalf("err = %v, want 401 IotHubUnauthorizedAccess", err)
			}
		})
	}

	// A device's own key signs a token the service API refuses.
	token := deviceToken(t, "dev-1", conn)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: h.tlsConfig(t)}}
	for _, path := range []string{"/devices/dev-1", "/messages/events?from=start", "/messages/events/partitions", "/messages/events/consumergroups"} {
		req, _ := http.NewRequest(http.MethodGet, "https://"+h.https+path, nil)
		req.Header.Set("Authorization", token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("x-ms-request-id") == "" || !strings.Contains(string(body), "ErrorCode:IotHubUnauthorizedAccess;") {
			t.Errorf("%s with a device token: %d %s", path, resp.StatusCode, body)
		}
	}
}

// monitorRun is a `tether monitor --json` process whose stdout the test reads.
type monitorRun struct {
	cmd    *exec.Cmd
	out    *bufio.Reader
	stdout io.ReadCloser
}

func (h *hubProcess) startMonitor(t *testing.T, args ...string) *monitorRun {
	t.Helper()
	cmd := exec.Command(tetherBin, append([]string{"--data-dir", h.dataDir, "monitor", "--json"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &monitorRun{cmd: cmd, out: bufio.NewReaderSize(stdout, 1<<20), stdout: stdout}
}

// next reads one event the monitor printed.
func (m *monitorRun) next(t *testing.T) (api.Event, error) {
	t.Helper()
	line, err := m.out.ReadBytes('\n')
	if err != nil {
		return api.Event{}, err
	}
	var ev api.Event
	if err := json.Unmarshal(line, &ev); err != nil {
		t.Fatalf("monitor printed %q: %v", line, err)
	}
	return ev, nil
}

type position struct {
	partition int
	seq       int64
}

// monitorEvents runs `tether monitor --json` to the end (its --timeout) and returns the events.
func (h *hubProcess) monitorEvents(t *testing.T, args ...string) []api.Event {
	t.Helper()
	out := h.mustCLI(append([]string{"monitor", "--json", "--timeout", "3s"}, args...)...)
	var events []api.Event
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var ev api.Event
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("monitor printed something that is not an event: %v\n%s", err, out)
		}
		events = append(events, ev)
	}
	return events
}

// TestMonitorCheckpointResumesAfterKill: a `monitor --consumer-group g --checkpoint` killed
// mid-stream (SIGKILL, no clean-up), then a hub restart, then the same command again: together
// the two runs print every message, none skipped; the second run starts after the checkpoint,
// not from the beginning. A second group reads the same messages independently.
func TestMonitorCheckpointResumesAfterKill(t *testing.T) {
	h := startHub(t)
	const n = 3000
	devices := []string{"dev-a", "dev-b", "dev-c"}
	for _, d := range devices {
		conn := h.createDevice(d)
		h.sendMQTT(t, d, conn, n/len(devices), func(i int) []byte { return []byte(fmt.Sprintf(`{"i":%d,"pad":"%0200d"}`, i, 0)) })
	}
	h.mustCLI("consumer-group", "create", "billing")
	h.mustCLI("consumer-group", "create", "audit")
	if out := h.mustCLI("consumer-group", "list"); !strings.Contains(out, "$Default") || !strings.Contains(out, "billing") || !strings.Contains(out, "audit") {
		t.Fatalf("consumer-group list:\n%s", out)
	}

	// The first reader prints into a pipe nobody reads for a while: it blocks once the pipe is
	// full, mid-stream, while its checkpoints for what it printed are committed.
	first := h.startMonitor(t, "--consumer-group", "billing", "--checkpoint", "--from", "start")
	time.Sleep(3 * time.Second)
	first.cmd.Process.Signal(syscall.SIGKILL)
	seen := map[position]int{}
	for { // what it printed before it died, up to EOF; Wait would close the pipe
		ev, err := first.next(t)
		if err != nil {
			break
		}
		seen[position{ev.Partition, ev.SequenceNumber}]++
	}
	first.cmd.Wait()
	if len(seen) == 0 || len(seen) >= n {
		t.Fatalf("the first reader printed %d of %d messages before it was killed; want some, not all", len(seen), n)
	}
	group := struct {
		Checkpoints []api.Checkpoint `json:"checkpoints"`
	}{}
	if err := json.Unmarshal([]byte(h.mustCLI("consumer-group", "show", "billing")), &group); err != nil || len(group.Checkpoints) == 0 {
		t.Fatalf("billing has no checkpoints after the first reader: %v", err)
	}

	h.stop() // and the hub restarts too
	h.start()

	second := h.monitorEvents(t, "--consumer-group", "billing", "--checkpoint", "--from", "start")
	if len(second) >= n {
		t.Fatalf("the second reader printed %d messages: it did not resume from the checkpoint", len(second))
	}
	for _, ev := range second {
		seen[position{ev.Partition, ev.SequenceNumber}]++
	}
	if len(seen) != n {
		t.Fatalf("together the readers printed %d distinct messages of %d: some were skipped", len(seen), n)
	}
	// Reprinted are only those after the last commit of the killed reader.
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	t.Logf("first run %d, second run %d, printed twice %d", n-len(second)+dups, len(second), dups)

	// billing is done; audit has read nothing and gets everything.
	if again := h.monitorEvents(t, "--consumer-group", "billing", "--checkpoint", "--from", "start"); len(again) != 0 {
		t.Fatalf("billing read %d messages again", len(again))
	}
	if audit := h.monitorEvents(t, "--consumer-group", "audit", "--from", "start"); len(audit) != n {
		t.Fatalf("audit read %d messages, want %d", len(audit), n)
	}
	// Deleting a group deletes its checkpoints; reading it afterwards is refused.
	h.mustCLI("consumer-group", "delete", "billing")
	if _, err := h.cli("monitor", "--consumer-group", "billing", "--timeout", "1s"); err == nil || !strings.Contains(err.Error(), "ConsumerGroupNotFound") {
		t.Fatalf("monitor with a deleted group: %v", err)
	}
	if _, err := h.cli("consumer-group", "delete", "$Default"); err == nil {
		t.Fatal("$Default was deleted")
	}
}

// TestReplayByEnqueuedTime: `monitor --from <time>` starts at the first message enqueued at or
// after that time.
func TestReplayByEnqueuedTime(t *testing.T) {
	h := startHub(t)
	conn := h.createDevice("dev")
	h.sendMQTT(t, "dev", conn, 20, func(i int) []byte { return []byte("before-" + strconv.Itoa(i)) })
	time.Sleep(100 * time.Millisecond)
	mark := time.Now()
	time.Sleep(100 * time.Millisecond)
	h.sendMQTT(t, "dev", conn, 5, func(i int) []byte { return []byte("after-" + strconv.Itoa(i)) })

	events := h.monitorEvents(t, "--device", "dev", "--from", mark.UTC().Format(time.RFC3339Nano))
	if len(events) != 5 || events[0].Body == nil || *events[0].Body != "after-0" || events[0].SequenceNumber != 20 {
		t.Fatalf("from %v: %d events, first %+v", mark, len(events), events)
	}
	if events[0].EnqueuedTime.Before(mark) {
		t.Fatalf("first event enqueued %v, before %v", events[0].EnqueuedTime, mark)
	}
}

// TestRetentionWhileRunning: with a short retention the running hub removes old segments on
// its own; what is newer stays readable, and a read below the retained range says so.
func TestRetentionWhileRunning(t *testing.T) {
	const retention = 8 * time.Second
	h := startHub(t, "--retention", retention.String(), "--retention-interval", "300ms", "--segment-bytes", "8192", "--partitions", "1")
	conn := h.createDevice("dev")
	h.sendMQTT(t, "dev", conn, 100, func(i int) []byte { return []byte(fmt.Sprintf("old-%d-%0400d", i, 0)) })
	time.Sleep(retention + time.Second)
	h.sendMQTT(t, "dev", conn, 60, func(i int) []byte { return []byte(fmt.Sprintf("new-%d-%0400d", i, 0)) })

	c := h.serviceClient(t, "service")
	var p api.PartitionInfo
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if p, err = c.Partition(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		if p.BeginningSequenceNumber >= 90 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if p.BeginningSequenceNumber < 90 || p.BeginningSequenceNumber > 100 || p.LastEnqueuedSequenceNumber != 159 {
		t.Fatalf("partition after retention = %+v; want old segments gone, new data kept", p)
	}
	_, err := h.cli("monitor", "--from", "5", "--timeout", "1s")
	if err == nil || !strings.Contains(err.Error(), "sequence number 5 of partition 0 is no longer retained: the partition begins at") {
		t.Fatalf("monitor --from 5 after retention: %v", err)
	}
	newest := 0
	for _, ev := range h.monitorEvents(t, "--from", "start") {
		if ev.Body != nil && strings.HasPrefix(*ev.Body, "new-") {
			newest++
		}
	}
	if newest != 60 {
		t.Fatalf("%d of the 60 new messages are readable after retention", newest)
	}
}

// TestSlowReaderDoesNotGrowHubMemory: a reader that opens a stream from the start and then
// reads nothing while devices send tens of megabytes costs the hub no more than its read
// batches: the hub's resident memory stays within a bound far below what was sent.
func TestSlowReaderDoesNotGrowHubMemory(t *testing.T) {
	// A tighter GC target keeps garbage the collector has not yet reclaimed from passing for
	// retained memory; what the hub keeps reachable is what this test is about.
	t.Setenv("GOGC", "50")
	h := startHub(t)
	conn := h.createDevice("dev")
	payload := bytes.Repeat([]byte("m"), 128<<10)
	c := h.serviceClient(t, "service")

	// Warm up: the same traffic with a reader that keeps up, so the baseline includes the hub's
	// steady-state buffers, and the race detector's and the Go heap's growth for them.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.ReadEvents(ctx, client.ReadOptions{From: "end"}, func(api.Event) error { return nil })
	h.sendMQTT(t, "dev", conn, 80, func(int) []byte { return payload })
	time.Sleep(time.Second)
	base := vmRSS(t, h.cmd.Process.Pid)

	// The stuck reader: its callback never returns.
	stuck := make(chan struct{})
	defer close(stuck)
	started := make(chan struct{}, 1)
	go c.ReadEvents(ctx, client.ReadOptions{From: "start"}, func(api.Event) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-stuck
		return nil
	})
	<-started
	const sends = 1200 // 150 MB
	peak := base
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.sendMQTT(t, "dev", conn, sends, func(int) []byte { return payload })
	}()
	for sampling := true; sampling; {
		select {
		case <-done:
			sampling = false
		case <-time.After(100 * time.Millisecond):
		}
		peak = max(peak, vmRSS(t, h.cmd.Process.Pid))
	}
	sent := int64(sends * len(payload))
	growth := peak - base
	t.Logf("hub RSS %d MB before, peak %d MB while %d MB were sent past a stuck reader", base>>20, peak>>20, sent>>20)
	// Per stream the hub holds one read batch per partition (1 MB each) plus its encoding.
	// Ingesting this traffic alone grows the race-instrumented hub by 20-35 MB (measured with no
	// stuck reader); a hub that buffered for the stuck reader would grow by more than was sent.
	const bound = 64 << 20
	if growth > bound {
		t.Fatalf("hub RSS grew by %d MB while a reader was stuck (bound %d MB)", growth>>20, bound>>20)
	}
}

// vmRSS returns a process's resident set size in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
