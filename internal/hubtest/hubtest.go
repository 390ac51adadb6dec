// Package hubtest builds a real hub over temporary storage for tests: a bbolt metadata store
// holding the device registry, a telemetry log, IoT Hub's five default policies with fresh keys
// and an authenticator over them. No part is a fake; each is closed with t.Cleanup.
package hubtest

import (
	"context"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/registry"
	"github.com/tetherhub/tether/internal/telemetry"
)

// Storage is a hub's storage in a temporary directory.
type Storage struct {
	Dir      string              // the temporary directory: meta.db, telemetry/
	DB       *bbolt.DB           // the metadata store, for more stores (C2D, consumer groups)
	Registry *registry.Registry  // device and module identities in DB
	Log      *telemetry.Log      // the built-in endpoint
	Policies []auth.Policy       // IoT Hub's default policies
	Auth     *auth.Authenticator // devices from Registry, hub policies from Policies
}

// New opens storage in t.TempDir(). log configures the telemetry log; its Dir is set, NoSync is
// forced (as for the metadata store: nothing here survives a crash), and zero Partitions and
// SegmentBytes become 2 and 1 MiB.
func New(t testing.TB, log telemetry.Options) *Storage {
	t.Helper()
	dir := t.TempDir()
	db, err := bbolt.Open(filepath.Join(dir, "meta.db"), 0o600, &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg, err := registry.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	log.Dir = filepath.Join(dir, "telemetry")
	log.NoSync = true
	if log.Partitions == 0 {
		log.Partitions = 2
	}
	if log.SegmentBytes == 0 {
		log.SegmentBytes = 1 << 20
	}
	tlog, err := telemetry.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tlog.Close() })
	policies, err := auth.DefaultPolicies()
	if err != nil {
		t.Fatal(err)
	}
	return &Storage{Dir: dir, DB: db, Registry: reg, Log: tlog, Policies: policies,
		Auth: &auth.Authenticator{Identities: reg, Policies: auth.StaticPolicies(policies)}}
}

// Hub returns a hub over s: c with Auth, Activity and Log set to s's.
func (s *Storage) Hub(c hub.Config) *hub.Hub {
	c.Auth, c.Activity, c.Log = s.Auth, s.Registry, s.Log
	return hub.New(c)
}

// Policy returns the named policy; t fails if there is none.
func (s *Storage) Policy(t testing.TB, name string) auth.Policy {
	t.Helper()
	p, ok := auth.StaticPolicies(s.Policies).Policy(name)
	if !ok {
		t.Fatalf("no policy %s", name)
	}
	return p
}

// CreateDevice registers a device and returns its primary key.
func (s *Storage) CreateDevice(t testing.TB, id string) string {
	t.Helper()
	d, err := s.Registry.CreateDevice(context.Background(), registry.Device{DeviceID: id})
	if err != nil {
		t.Fatal(err)
	}
	return d.Authentication.SymmetricKey.PrimaryKey
}

// Stored reads back every message in the log (up to 1000 a partition), partition by partition.
func (s *Storage) Stored(t testing.TB) []message.Message {
	t.Helper()
	var out []message.Message
	for p := range s.Log.Partitions() {
		recs, err := s.Log.Read(p, 0, 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			var m message.Message
			if err := m.UnmarshalBinary(r.Data); err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
	}
	return out
}
