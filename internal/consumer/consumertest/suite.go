// Package consumertest is the behaviour every consumer-group and checkpoint store must have
// (architecture decision 5): the embedded bbolt store passes it now, and a store on another
// engine must pass it before the hub may use it.
package consumertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/tetherhub/tether/internal/consumer"
)

// Store is the contract under test: the store the hub uses.
type Store = consumer.GroupStore

// Run runs the suite. open returns an empty store whose group limit is maxGroups.
func Run(t *testing.T, maxGroups int, open func(t *testing.T) Store) {
	t.Run("DefaultExists", func(t *testing.T) { testDefault(t, open(t)) })
	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, open(t)) })
	t.Run("Limit", func(t *testing.T) { testLimit(t, maxGroups, open(t)) })
	t.Run("Names", func(t *testing.T) { testNames(t, open(t)) })
	t.Run("Checkpoints", func(t *testing.T) { testCheckpoints(t, open(t)) })
	t.Run("ConcurrentCommits", func(t *testing.T) { testConcurrent(t, open(t)) })
}

func testDefault(t *testing.T, s Store) {
	ctx := context.Background()
	groups, err := s.Groups(ctx)
	if err != nil || len(groups) != 1 || groups[0].Name != consumer.DefaultGroup {
		t.Fatalf("groups of a new store = %+v, %v; want only $Default", groups, err)
	}
	if err := s.DeleteGroup(ctx, "$default"); !errors.Is(err, consumer.ErrDefaultGroup) {
		t.Fatalf("delete $default: %v, want ErrDefaultGroup", err)
	}
	if _, err := s.Commit(ctx, consumer.DefaultGroup, 0, 7); err != nil {
		t.Fatalf("commit to $Default: %v", err)
	}
}

func testLifecycle(t *testing.T, s Store) {
	ctx := context.Background()
	g, created, err := s.CreateGroup(ctx, "Analytics")
	if err != nil || !created || g.Name != "Analytics" || g.CreatedTime.IsZero() {
		t.Fatalf("create = %+v %v %v", g, created, err)
	}
	// Names are case-insensitive and creating is idempotent: the first spelling stays.
	again, created, err := s.CreateGroup(ctx, "analytics")
	if err != nil || created || again.Name != "Analytics" || !again.CreatedTime.Equal(g.CreatedTime) {
		t.Fatalf("create again = %+v %v %v", again, created, err)
	}
	if got, err := s.Group(ctx, "ANALYTICS"); err != nil || got.Name != "Analytics" {
		t.Fatalf("get = %+v %v", got, err)
	}
	groups, err := s.Groups(ctx)
	if err != nil || len(groups) != 2 {
		t.Fatalf("list = %+v %v", groups, err)
	}
	if _, err := s.Commit(ctx, "analytics", 1, 41); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteGroup(ctx, "analytics"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Group(ctx, "Analytics"); !errors.Is(err, consumer.ErrGroupNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := s.DeleteGroup(ctx, "Analytics"); !errors.Is(err, consumer.ErrGroupNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if _, err := s.Commit(ctx, "Analytics", 1, 42); !errors.Is(err, consumer.ErrGroupNotFound) {
		t.Fatalf("commit to a deleted group: %v", err)
	}
	// A group created again under the same name starts without the old checkpoints.
	if _, _, err := s.CreateGroup(ctx, "Analytics"); err != nil {
		t.Fatal(err)
	}
	if cps, err := s.Checkpoints(ctx, "Analytics"); err != nil || len(cps) != 0 {
		t.Fatalf("checkpoints of a re-created group = %+v %v", cps, err)
	}
}

func testLimit(t *testing.T, max int, s Store) {
	ctx := context.Background()
	for i := 1; i < max; i++ { // $Default counts
		if _, _, err := s.CreateGroup(ctx, fmt.Sprintf("g%d", i)); err != nil {
			t.Fatalf("group %d of %d: %v", i+1, max, err)
		}
	}
	if _, _, err := s.CreateGroup(ctx, "one-too-many"); !errors.Is(err, consumer.ErrLimitExceeded) {
		t.Fatalf("group %d: %v, want ErrLimitExceeded", max+1, err)
	}
	// An existing group is still "created" idempotently at the limit.
	if _, created, err := s.CreateGroup(ctx, "g1"); err != nil || created {
		t.Fatalf("existing group at the limit: %v %v", created, err)
	}
	if err := s.DeleteGroup(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateGroup(ctx, "one-too-many"); err != nil {
		t.Fatalf("after a delete there is room: %v", err)
	}
}

func testNames(t *testing.T, s Store) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"reader.v2_blue-1", true},
		{"$Default", true},
		{"", false},
		{"-leading", false},
		{"trailing.", false},
		{"has space", false},
		{"slash/es", false},
		{"$other", false},
		{string(make([]byte, 51)), false},
	} {
		_, _, err := s.CreateGroup(ctx, tt.name)
		if tt.ok != (err == nil) || (!tt.ok && !errors.Is(err, consumer.ErrInvalidName)) {
			t.Errorf("create %q: %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func testCheckpoints(t *testing.T, s Store) {
	ctx := context.Background()
	if _, _, err := s.CreateGroup(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateGroup(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		group string
		p     int
		seq   int64
	}{{"a", 3, 10}, {"a", 0, 5}, {"a", 3, 12}, {"b", 3, 99}, {"a", 0, 2}} {
		cp, err := s.Commit(ctx, c.group, c.p, c.seq)
		if err != nil || cp.Partition != c.p || cp.SequenceNumber != c.seq || cp.UpdatedTime.IsZero() {
			t.Fatalf("commit %+v = %+v %v", c, cp, err)
		}
	}
	cps, err := s.Checkpoints(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Groups are independent; the last commit wins, even when it rewinds.
	if len(cps) != 2 || cps[0].Partition != 0 || cps[0].SequenceNumber != 2 || cps[1].Partition != 3 || cps[1].SequenceNumber != 12 {
		t.Fatalf("checkpoints of a = %+v", cps)
	}
	if cps, err := s.Checkpoints(ctx, "b"); err != nil || len(cps) != 1 || cps[0].SequenceNumber != 99 {
		t.Fatalf("checkpoints of b = %+v %v", cps, err)
	}
	if _, err := s.Checkpoints(ctx, "nope"); !errors.Is(err, consumer.ErrGroupNotFound) {
		t.Fatalf("checkpoints of a missing group: %v", err)
	}
	for _, bad := range []struct {
		p   int
		seq int64
		err error
	}{{-1, 1, consumer.ErrBadPartition}, {0, -1, consumer.ErrBadCheckpoint}} {
		if _, err := s.Commit(ctx, "a", bad.p, bad.seq); !errors.Is(err, bad.err) {
			t.Errorf("commit partition %d seq %d: %v, want %v", bad.p, bad.seq, err, bad.err)
		}
	}
}

func testConcurrent(t *testing.T, s Store) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range int64(50) {
				if _, err := s.Commit(ctx, consumer.DefaultGroup, p, seq); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	cps, err := s.Checkpoints(ctx, consumer.DefaultGroup)
	if err != nil || len(cps) != 8 {
		t.Fatalf("checkpoints = %+v %v", cps, err)
	}
	for _, cp := range cps {
		if cp.SequenceNumber != 49 {
			t.Errorf("partition %d at %d, want 49", cp.Partition, cp.SequenceNumber)
		}
	}
}
