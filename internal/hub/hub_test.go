package hub_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/hubtest"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/registry"
	"github.com/tetherhub/tether/internal/telemetry"
)

type fixture struct {
	*hubtest.Storage
	hub *hub.Hub
	key string
}

// newFixture builds a hub over a real registry and telemetry log in a temp dir, with device
// dev1; c's storage fields are filled in.
func newFixture(t *testing.T, c hub.Config) *fixture {
	t.Helper()
	st := hubtest.New(t, telemetry.Options{})
	key := st.CreateDevice(t, "dev1")
	return &fixture{Storage: st, hub: st.Hub(c), key: key}
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

func TestSubmitStampsOverWhatTheDeviceClaims(t *testing.T) {
	f := newFixture(t, hub.Config{})
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
	p, err := f.hub.Submit(context.Background(), hub.Origin{Identity: id, ModelID: "dtmi:com:example:Thermostat;1"}, spoofed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := f.Stored(t)
	if len(got) != 1 {
		t.Fatalf("stored %d messages", len(got))
	}
	m := got[0]
	dev, _ := f.Registry.GetDevice(context.Background(), "dev1")
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
	f := newFixture(t, hub.Config{})
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
			_, err := f.hub.Submit(context.Background(), hub.Origin{Identity: id}, tc.msgs...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if got := f.Stored(t); len(got) != 0 {
		t.Fatalf("stored %d messages from refused submissions", len(got))
	}
}

func TestConnectionStateSurvivesTakeover(t *testing.T) {
	f := newFixture(t, hub.Config{})
	id := f.identity(t)
	ctx := context.Background()
	state := func() registry.ConnectionState {
		d, err := f.Registry.GetDevice(ctx, "dev1")
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
	f := newFixture(t, hub.Config{})
	token, _ := auth.Sign("localhost/devices/dev1", "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", time.Now().Add(time.Hour))
	if _, err := f.hub.AuthenticateDevice(context.Background(), "dev1", "", token); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
}

func TestStatePersistsPolicies(t *testing.T) {
	dir := t.TempDir()
	s, created, err := hub.LoadOrCreateState(dir, "hub1", 4, time.Now())
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	again, created, err := hub.LoadOrCreateState(dir, "other", 8, time.Now())
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
