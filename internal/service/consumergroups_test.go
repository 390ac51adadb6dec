package service_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
	"github.com/tetherhub/tether/internal/consumer"
	"github.com/tetherhub/tether/internal/hubtest"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/service"
	"github.com/tetherhub/tether/internal/telemetry"
)

// groupFixture is a service API with a consumer group store, a controllable clock for
// retention, and a C2D counter.
type groupFixture struct {
	fixture
	groups *consumer.Store
	clock  *clock
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

func newGroupFixture(t *testing.T, segmentBytes int64, c2d func(ctx context.Context, deviceID, moduleID string) (int, error)) *groupFixture {
	t.Helper()
	clk := &clock{now: time.Now()}
	st := hubtest.New(t, telemetry.Options{Partitions: 4, SegmentBytes: segmentBytes,
		Retention: time.Hour, RetentionInterval: time.Hour, Now: clk.Now})
	groups, err := consumer.Open(st.DB, consumer.Options{MaxGroups: 4})
	if err != nil {
		t.Fatal(err)
	}
	f := &groupFixture{fixture: fixture{Storage: st}, groups: groups, clock: clk}
	f.serve(t, service.Config{ConsumerGroups: groups, CloudToDeviceMessageCount: c2d})
	return f
}

// appendN stores n messages of dev with message ids prefix0..prefix(n-1), enqueued at at.
func (f *groupFixture) appendN(t *testing.T, dev, prefix string, n int, at time.Time, size int) {
	t.Helper()
	body := []byte(strings.Repeat("x", size))
	for i := range n {
		m := message.Message{MessageID: fmt.Sprintf("%s%d", prefix, i), ConnectionDeviceID: dev, EnqueuedTime: at, Source: message.SourceTelemetry, Body: body}
		data, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Log.Append(context.Background(), dev, at, data); err != nil {
			t.Fatal(err)
		}
	}
}

// readUpTo reads at most n events, ending early once the stream is idle for idle.
func readUpTo(t *testing.T, c *client.Client, opts client.ReadOptions, n int) ([]api.Event, error) {
	t.Helper()
	const idle = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	timer := time.AfterFunc(idle, cancel)
	defer timer.Stop()
	errEnough := errors.New("enough")
	var got []api.Event
	err := c.ReadEvents(ctx, opts, func(ev api.Event) error {
		timer.Reset(idle)
		got = append(got, ev)
		if len(got) == n {
			return errEnough
		}
		return nil
	})
	if errors.Is(err, errEnough) || errors.Is(err, context.Canceled) {
		err = nil
	}
	return got, err
}

func apiError(err error) (*client.Error, bool) {
	var e *client.Error
	return e, errors.As(err, &e)
}

func TestConsumerGroupCRUD(t *testing.T) {
	f := newGroupFixture(t, 1<<20, nil)
	ctx := context.Background()
	owner, svc := f.client(t, "iothubowner"), f.client(t, "service")

	groups, err := svc.ConsumerGroups(ctx)
	if err != nil || len(groups) != 1 || groups[0].Name != "$Default" {
		t.Fatalf("groups of a new hub = %+v %v", groups, err)
	}
	g, err := owner.CreateConsumerGroup(ctx, "analytics")
	if err != nil || g.Name != "analytics" || g.CreatedTime.IsZero() {
		t.Fatalf("create = %+v %v", g, err)
	}
	if again, err := owner.CreateConsumerGroup(ctx, "Analytics"); err != nil || again.Name != "analytics" {
		t.Fatalf("create is idempotent and case-insensitive: %+v %v", again, err)
	}
	for _, name := range []string{"b", "c"} {
		if _, err := owner.CreateConsumerGroup(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		call   func() error
		status int
		code   string
	}{
		{"over the limit", func() error { _, err := owner.CreateConsumerGroup(ctx, "d"); return err }, http.StatusForbidden, "ConsumerGroupLimitExceeded"},
		{"invalid name", func() error { _, err := owner.CreateConsumerGroup(ctx, "no spaces"); return err }, http.StatusBadRequest, "ArgumentInvalid"},
		{"delete $Default", func() error { return owner.DeleteConsumerGroup(ctx, "$Default") }, http.StatusBadRequest, "InvalidOperation"},
		{"delete unknown", func() error { return owner.DeleteConsumerGroup(ctx, "nope") }, http.StatusNotFound, "ConsumerGroupNotFound"},
		{"get unknown", func() error { _, err := svc.ConsumerGroup(ctx, "nope"); return err }, http.StatusNotFound, "ConsumerGroupNotFound"},
		{"service cannot create", func() error { _, err := svc.CreateConsumerGroup(ctx, "x"); return err }, http.StatusUnauthorized, "IotHubUnauthorizedAccess"},
		{"service cannot delete", func() error { return svc.DeleteConsumerGroup(ctx, "b") }, http.StatusUnauthorized, "IotHubUnauthorizedAccess"},
		{"registryReadWrite cannot create", func() error {
			_, err := f.client(t, "registryReadWrite").CreateConsumerGroup(ctx, "x")
			return err
		}, http.StatusUnauthorized, "IotHubUnauthorizedAccess"},
		{"registryRead cannot list", func() error { _, err := f.client(t, "registryRead").ConsumerGroups(ctx); return err }, http.StatusUnauthorized, "IotHubUnauthorizedAccess"},
		{"device cannot read", func() error {
			_, err := readUpTo(t, f.client(t, "device"), client.ReadOptions{From: "start"}, 1)
			return err
		}, http.StatusUnauthorized, "IotHubUnauthorizedAccess"},
		{"read with an unknown group", func() error {
			_, err := readUpTo(t, svc, client.ReadOptions{From: "start", ConsumerGroup: "nope"}, 1)
			return err
		}, http.StatusNotFound, "ConsumerGroupNotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := apiError(tt.call())
			if !ok || e.StatusCode != tt.status || e.Code != tt.code {
				t.Fatalf("err = %v, want %d %s", e, tt.status, tt.code)
			}
		})
	}
	if err := owner.DeleteConsumerGroup(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if groups, err := svc.ConsumerGroups(ctx); err != nil || len(groups) != 3 {
		t.Fatalf("after delete: %+v %v", groups, err)
	}
}

// TestConsumerGroupsReadIndependently: two groups read the same messages, each from its own
// checkpoints; committing in one does not move the other.
func TestConsumerGroupsReadIndependently(t *testing.T) {
	f := newGroupFixture(t, 1<<20, nil)
	ctx := context.Background()
	owner, svc := f.client(t, "iothubowner"), f.client(t, "service")
	for _, g := range []string{"alpha", "beta"} {
		if _, err := owner.CreateConsumerGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	devs := []string{"d0", "d1", "d2", "d3", "d4", "d5"}
	for _, d := range devs {
		f.appendN(t, d, d+"-", 5, time.Now(), 10)
	}
	total := 5 * len(devs)

	// alpha reads everything and checkpoints it all; beta reads 7 and checkpoints those.
	for _, tc := range []struct {
		group string
		n     int
	}{{"alpha", total}, {"beta", 7}} {
		cp := svc.NewCheckpointer(tc.group)
		evs, err := readUpTo(t, svc, client.ReadOptions{ConsumerGroup: tc.group, Resume: true, From: "start"}, tc.n)
		if err != nil || len(evs) != tc.n {
			t.Fatalf("%s first read: %d events, %v", tc.group, len(evs), err)
		}
		for _, ev := range evs {
			cp.Mark(ev)
		}
		if err := cp.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// alpha is done: resuming yields nothing old, only what comes next.
	if evs, err := readUpTo(t, svc, client.ReadOptions{ConsumerGroup: "alpha", Resume: true, From: "start"}, 1); err != nil || len(evs) != 0 {
		t.Fatalf("alpha after reading everything: %+v %v", evs, err)
	}
	// beta resumes with exactly the other events, each once.
	evs, err := readUpTo(t, svc, client.ReadOptions{ConsumerGroup: "beta", Resume: true, From: "start"}, total-7)
	if err != nil || len(evs) != total-7 {
		t.Fatalf("beta resumed: %d events, %v", len(evs), err)
	}
	// $Default has no checkpoints: it reads everything from start.
	if evs, err := readUpTo(t, svc, client.ReadOptions{ConsumerGroup: "$Default", Resume: true, From: "start"}, total); err != nil || len(evs) != total {
		t.Fatalf("$Default: %d events, %v", len(evs), err)
	}
	g, err := svc.ConsumerGroup(ctx, "alpha")
	if err != nil || len(g.Checkpoints) == 0 {
		t.Fatalf("alpha = %+v %v", g, err)
	}
	sum := 0
	for _, cp := range g.Checkpoints {
		sum += int(cp.SequenceNumber) + 1
	}
	if sum != total {
		t.Errorf("alpha's checkpoints cover %d events, want %d: %+v", sum, total, g.Checkpoints)
	}
	// Deleting a group deletes its checkpoints: re-created, it starts over.
	if err := owner.DeleteConsumerGroup(ctx, "alpha"); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.CreateConsumerGroup(ctx, "alpha"); err != nil {
		t.Fatal(err)
	}
	if evs, err := readUpTo(t, svc, client.ReadOptions{ConsumerGroup: "alpha", Resume: true, From: "start"}, total); err != nil || len(evs) != total {
		t.Fatalf("re-created alpha: %d events, %v", len(evs), err)
	}
}

// TestResumeAfterCheckpoint: a reader that processed part of a partition and committed resumes
// at checkpoint+1 with nothing skipped; partitions without a checkpoint start at from=.
func TestResumeAfterCheckpoint(t *testing.T) {
	f := newGroupFixture(t, 1<<20, nil)
	ctx := context.Background()
	svc := f.client(t, "service")
	f.appendN(t, "dev-a", "a", 10, time.Now(), 10)
	f.appendN(t, "dev-b", "b", 4, time.Now(), 10)
	pa, pb := f.Log.PartitionFor("dev-a"), f.Log.PartitionFor("dev-b")
	if pa == pb {
		t.Fatal("test devices share a partition")
	}
	if _, err := svc.CommitCheckpoint(ctx, "$Default", pa, 5); err != nil {
		t.Fatal(err)
	}
	evs, err := readUpTo(t, svc, client.ReadOptions{ConsumerGroup: "$Default", Resume: true, From: "end", Device: "dev-a"}, 4)
	if err != nil || len(evs) != 4 || evs[0].SequenceNumber != 6 || evs[0].SystemProperties["message-id"] != "a6" {
		t.Fatalf("resume: %+v %v", evs, err)
	}
	// dev-b's partition has no checkpoint: from=end gives nothing, from=start everything.
	if evs, err := readUpTo(t, svc, client.ReadOptions{ConsumerGroup: "$Default", Resume: true, From: "end", Device: "dev-b"}, 1); err != nil || len(evs) != 0 {
		t.Fatalf("no checkpoint, from end: %+v %v", evs, err)
	}
	if evs, err := readUpTo(t, svc, client.ReadOptions{ConsumerGroup: "$Default", Resume: true, From: "start", Device: "dev-b"}, 4); err != nil || len(evs) != 4 {
		t.Fatalf("no checkpoint, from start: %+v %v", evs, err)
	}
	// Without resume, the checkpoint is ignored.
	if evs, err := readUpTo(t, svc, client.ReadOptions{ConsumerGroup: "$Default", From: "start", Device: "dev-a"}, 10); err != nil || len(evs) != 10 {
		t.Fatalf("no resume: %d %v", len(evs), err)
	}
	for _, tt := range []struct {
		name      string
		partition int
		seq       int64
	}{{"beyond the last event", pa, 10}, {"negative", pa, -1}, {"no such partition", 9, 0}} {
		if e, ok := apiError(func() error { _, err := svc.CommitCheckpoint(ctx, "$Default", tt.partition, tt.seq); return err }()); !ok || e.StatusCode != http.StatusBadRequest {
			t.Errorf("commit %s: %v, want 400", tt.name, e)
		}
	}
	if e, ok := apiError(func() error { _, err := svc.CommitCheckpoint(ctx, "nope", pa, 1); return err }()); !ok || e.StatusCode != http.StatusNotFound {
		t.Errorf("commit to an unknown group: %v", e)
	}
	p, err := svc.Partition(ctx, pa)
	if err != nil || p.Partition != pa || p.BeginningSequenceNumber != 0 || p.LastEnqueuedSequenceNumber != 9 || p.LastEnqueuedTime.IsZero() {
		t.Fatalf("partition %d = %+v %v", pa, p, err)
	}
	if e, ok := apiError(func() error { _, err := svc.Partition(ctx, 4); return err }()); !ok || e.StatusCode != http.StatusNotFound {
		t.Errorf("partition 4: %v", e)
	}
}

// TestReadsBelowRetentionSaySo: a checkpoint or a from= that retention has overtaken is
// refused with a message naming what was lost, and a reader overtaken mid-stream gets an error
// line instead of a silent end.
func TestReadsBelowRetentionSaySo(t *testing.T) {
	f := newGroupFixture(t, 512<<10, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc := f.client(t, "service")
	old := f.clock.Now().Add(-2 * time.Hour)
	// 32 MB over 64 segments: more than the socket buffers between hub and reader hold, so the
	// hub's partition reader is still in the old segments when retention removes them.
	f.appendN(t, "dev", "old", 4000, old, 8000)
	f.appendN(t, "dev", "new", 3, f.clock.Now(), 10)
	p := f.Log.PartitionFor("dev")
	if _, err := svc.CommitCheckpoint(ctx, "$Default", p, 10); err != nil {
		t.Fatal(err)
	}

	// A slow reader: it holds the first event until retention has run.
	release := make(chan struct{})
	streamErr := make(chan error, 1)
	go func() {
		first := true
		streamErr <- svc.ReadEvents(ctx, client.ReadOptions{From: "start", Device: "dev"}, func(api.Event) error {
			if first {
				first = false
				<-release
			}
			return nil
		})
	}()
	time.Sleep(200 * time.Millisecond)
	if err := f.Log.EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	info, _ := f.Log.Info(p)
	if info.First < 3900 {
		t.Fatalf("retention kept from %d", info.First)
	}
	close(release)
	select {
	case err := <-streamErr:
		if e, ok := apiError(err); !ok || e.StatusCode != http.StatusBadRequest || !strings.Contains(e.Message, "fell behind retention") {
			t.Fatalf("overtaken stream ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the overtaken stream did not end")
	}

	_, err := readUpTo(t, svc, client.ReadOptions{ConsumerGroup: "$Default", Resume: true, Device: "dev"}, 1)
	if e, ok := apiError(err); !ok || e.StatusCode != http.StatusBadRequest || !strings.Contains(e.Message, "removed by retention") {
		t.Fatalf("resume below retention: %v", err)
	}
	_, err = readUpTo(t, svc, client.ReadOptions{From: "5", Device: "dev"}, 1)
	if e, ok := apiError(err); !ok || e.StatusCode != http.StatusBadRequest || !strings.Contains(e.Message, "no longer retained") {
		t.Fatalf("from below retention: %v", err)
	}
	// What is retained stays readable.
	evs, err := readUpTo(t, svc, client.ReadOptions{From: "start", Device: "dev"}, 3)
	if err != nil || len(evs) != 3 || evs[0].SequenceNumber != info.First {
		t.Fatalf("from start after retention: %d events, %v", len(evs), err)
	}
}
