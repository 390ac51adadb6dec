package hub

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/registry"
	"github.com/tetherhub/tether/internal/telemetry"
)

type fixture struct {
	hub *Hub
	reg *registry.Registry
	log *telemetry.Log
	key string
}

// newFixture builds a hub over a real registry and telemetry log in a temp dir.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	db, err := bbolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg, err := registry.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	tlog, err := telemetry.Open(telemetry.Options{Dir: filepath.Join(dir, "telemetry"), Partitions: 2, SegmentBytes: 1 << 20, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tlog.Close() })
	dev, err := reg.CreateDevice(context.Background(), registry.Device{DeviceID: "dev1"})
	if err != nil {
		t.Fatal(err)
	}
	policies, _ := auth.DefaultPolicies()
	authn := &auth.Authenticator{Identities: reg, Policies: auth.StaticPolicies(policies)}
	h := New(Config{Auth: authn, Activity: reg, Log: tlog})
	return &fixture{hub: h, reg: reg, log: tlog, key: dev.Authentication.SymmetricKey.PrimaryKey}
}

func (f *fixture) identity(t *testing.T) auth.DeviceIdentity {
	t.Helper()
	token, err := auth.Sign("localhost/devices/dev1", "", f.key, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	id, err := f.hub.AuthenticateDevice(context.Background(), "dev1", "", token)
	if err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	return id
}

// stored reads back every message in the log.
func (f *fixture) stored(t *testing.T) []message.Message {
	t.Helper()
	var out []message.Message
	for p := range f.log.Partitions() {
		recs, err := f.log.Read(p, 0, 1000, 0)
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

func TestSubmitStampsOverWhatTheDeviceClaims(t *testing.T) {
	f := newFixture(t)
	id := f.identity(t)
	spoofed := &message.Message{
		MessageID:                  "m1",
		ConnectionDeviceID:         "someone-else",
		ConnectionModuleID:         "evil",
		ConnectionAuthGenerationID: "1",
		ConnectionAuthMethod:       "{}",
		DataSchema:                 "dtmi:spoof;1",
		Source:                     "twinChangeEvents",
		Body:                       []byte("hi"),
	}
	p, err := f.hub.Submit(context.Background(), Origin{Identity: id, ModelID: "dtmi:com:example:Thermostat;1"}, spoofed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := f.stored(t)
	if len(got) != 1 {
		t.Fatalf("stored %d messages", len(got))
	}
	m := got[0]
	dev, _ := f.reg.GetDevice(context.Background(), "dev1")
	checks := map[string][2]string{
		"device id":     {m.ConnectionDeviceID, "dev1"},
		"module id":     {m.ConnectionModuleID, ""},
		"generation id": {m.ConnectionAuthGenerationID, dev.GenerationID},
		"auth method":   {m.ConnectionAuthMethod, `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`},
		"data schema":   {m.DataSchema, "dtmi:com:example:Thermostat;1"},
		"source":        {m.Source, "Telemetry"},
		"message id":    {m.MessageID, "m1"},
	}
	for what, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", what, c[0], c[1])
		}
	}
	if time.Since(m.EnqueuedTime) > time.Minute {
		t.Errorf("enqueued time %v", m.EnqueuedTime)
	}
	if dev.LastActivityTime.IsZero() || dev.LastActivityTime.Year() < 2000 {
		t.Errorf("lastActivityTime not recorded: %v", dev.LastActivityTime)
	}
}

func TestSubmitRefusesInvalidAndStoresNothing(t *testing.T) {
	f := newFixture(t)
	id := f.identity(t)
	for _, tc := range []struct {
		name string
		msgs []*message.Message
		want error
	}{
		{"too large", []*message.Message{{Body: make([]byte, message.MaxD2CSize+1)}}, message.ErrTooLarge},
		{"bad message id", []*message.Message{{MessageID: "a b"}}, message.ErrInvalid},
		{"one bad in a batch", []*message.Message{{Body: []byte("ok")}, {MessageID: strings.Repeat("x", 200)}}, message.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.hub.Submit(context.Background(), Origin{Identity: id}, tc.msgs...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if got := f.stored(t); len(got) != 0 {
		t.Fatalf("stored %d messages from refused submissions", len(got))
	}
}

func TestConnectionStateSurvivesTakeover(t *testing.T) {
	f := newFixture(t)
	id := f.identity(t)
	ctx := context.Background()
	state := func() registry.ConnectionState {
		d, err := f.reg.GetDevice(ctx, "dev1")
		if err != nil {
			t.Fatal(err)
		}
		return d.ConnectionState
	}
	f.hub.Connected(ctx, id)
	f.hub.Connected(ctx, id) // the new connection of a takeover
	f.hub.Disconnected(ctx, id)
	if got := state(); got != registry.Connected {
		t.Fatalf("after takeover state = %s, want Connected", got)
	}
	f.hub.Disconnected(ctx, id)
	if got := state(); got != registry.Disconnected {
		t.Fatalf("after last disconnect state = %s, want Disconnected", got)
	}
}

func TestAuthenticateRefusesWrongKey(t *testing.T) {
	f := newFixture(t)
	token, _ := auth.Sign("localhost/devices/dev1", "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", time.Now().Add(time.Hour))
	if _, err := f.hub.AuthenticateDevice(context.Background(), "dev1", "", token); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
}

func TestStatePersistsPolicies(t *testing.T) {
	dir := t.TempDir()
	s, created, err := LoadOrCreateState(dir, "hub1", 4, time.Now())
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	again, created, err := LoadOrCreateState(dir, "other", 8, time.Now())
	if err != nil || created {
		t.Fatalf("reload: %v %v", created, err)
	}
	if again.Name != "hub1" || again.Partitions != 4 || len(again.Policies) != 5 {
		t.Fatalf("reloaded state = %+v", again)
	}
	for _, name := range []string{"iothubowner", "service", "device", "registryRead", "registryReadWrite"} {
		p1, ok1 := s.Policy(name)
		p2, ok2 := again.Policy(name)
		if !ok1 || !ok2 || p1.PrimaryKey != p2.PrimaryKey || p1.Rights != p2.Rights {
			t.Errorf("policy %s: %+v %+v", name, p1, p2)
		}
	}
	if owner, _ := again.Policy("iothubowner"); !owner.Rights.Has(auth.RegistryRead | auth.RegistryWrite | auth.ServiceConnect | auth.DeviceConnect) {
		t.Errorf("iothubowner rights = %v", owner.Rights)
	}
	if dev, _ := again.Policy("device"); dev.Rights != auth.DeviceConnect {
		t.Errorf("device rights = %v", dev.Rights)
	}
}
