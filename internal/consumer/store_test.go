package consumer_test

import (
	"context"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/consumer"
	"github.com/tetherhub/tether/internal/consumer/consumertest"
)

func openDB(t *testing.T, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestStoreSuite(t *testing.T) {
	consumertest.Run(t, 5, func(t *testing.T) consumertest.Store {
		db := openDB(t, filepath.Join(t.TempDir(), "meta.db"))
		t.Cleanup(func() { db.Close() })
		s, err := consumer.Open(db, consumer.Options{MaxGroups: 5})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestCheckpointsSurviveReopen: a hub restart keeps groups and checkpoints, and the store
// shares the database with other buckets.
func TestCheckpointsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	db := openDB(t, path)
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucket([]byte("devices"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s, err := consumer.Open(db, consumer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateGroup(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, "billing", 2, 1234); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = openDB(t, path)
	defer db.Close()
	s, err = consumer.Open(db, consumer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	groups, err := s.Groups(ctx)
	if err != nil || len(groups) != 2 || groups[0].Name != "$Default" || groups[1].Name != "billing" {
		t.Fatalf("groups after reopen = %+v %v", groups, err)
	}
	cps, err := s.Checkpoints(ctx, "billing")
	if err != nil || len(cps) != 1 || cps[0].Partition != 2 || cps[0].SequenceNumber != 1234 {
		t.Fatalf("checkpoints after reopen = %+v %v", cps, err)
	}
}

func TestDefaultLimit(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "meta.db"))
	defer db.Close()
	s, err := consumer.Open(db, consumer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n := 1
	for ; ; n++ {
		if _, _, err := s.CreateGroup(ctx, "g"+string(rune('a'+n))); err != nil {
			break
		}
	}
	if n != consumer.DefaultMaxGroups {
		t.Fatalf("the default limit allowed %d groups, want %d like IoT Hub", n, consumer.DefaultMaxGroups)
	}
}
