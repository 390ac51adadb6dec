package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/auth"
)

var ctx = context.Background()

const (
	testKeyA = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
	testKeyB = "gYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6A="
)

func openDB(t testing.TB, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newTestRegistry(t testing.TB) (*Registry, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meta.db")
	db := openDB(t, path)
	t.Cleanup(func() { db.Close() })
	r, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	return r, path
}

func mustCreate(t testing.TB, r *Registry, id string) Device {
	t.Helper()
	d, err := r.CreateDevice(ctx, Device{DeviceID: id})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDeviceCRUD(t *testing.T) {
	r, _ := newTestRegistry(t)
	d := mustCreate(t, r, "dev1")
	if d.Status != StatusEnabled || d.Authentication.Type != AuthSAS || d.ConnectionState != Disconnected {
		t.Fatalf("defaults = %+v", d)
	}
	if len(d.GenerationID) != 18 || strings.Trim(d.GenerationID, "0123456789") != "" {
		t.Errorf("generationId %q is not 18 decimal digits", d.GenerationID)
	}
	if d.ETag == "" || d.Authentication.SymmetricKey.PrimaryKey == "" || d.Authentication.SymmetricKey.SecondaryKey == "" ||
		d.Authentication.SymmetricKey.PrimaryKey == d.Authentication.SymmetricKey.SecondaryKey {
		t.Errorf("etag or keys not generated: %+v", d)
	}
	got, err := r.GetDevice(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if !deviceEqual(got, d) {
		t.Fatalf("GetDevice = %+v, want %+v", got, d)
	}

	d.Capabilities.IoTEdge = true
	d.StatusReason = "maintenance"
	upd, err := r.UpdateDevice(ctx, d, d.ETag)
	if err != nil {
		t.Fatal(err)
	}
	if upd.ETag == d.ETag || !upd.Capabilities.IoTEdge || upd.StatusReason != "maintenance" {
		t.Fatalf("UpdateDevice = %+v", upd)
	}
	list, err := r.ListDevices(ctx, 0)
	if err != nil || len(list) != 1 || !deviceEqual(list[0], upd) {
		t.Fatalf("ListDevices = %+v, %v", list, err)
	}
	if err := r.DeleteDevice(ctx, "dev1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetDevice(ctx, "dev1"); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("GetDevice after delete: %v", err)
	}
	if err := r.DeleteDevice(ctx, "dev1", ""); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := r.UpdateDevice(ctx, d, "*"); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("update of deleted device: %v", err)
	}
	again := mustCreate(t, r, "dev1")
	if again.GenerationID == d.GenerationID {
		t.Error("re-created device kept its generationId")
	}
}

func deviceEqual(a, b Device) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestDeviceJSON(t *testing.T) {
	r, _ := newTestRegistry(t)
	d, err := r.CreateDevice(ctx, Device{DeviceID: "dev1", Authentication: Authentication{SymmetricKey: SymmetricKey{PrimaryKey: testKeyA, SecondaryKey: testKeyB}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"deviceId":                   "dev1",
		"generationId":               d.GenerationID,
		"etag":                       d.ETag,
		"status":                     "enabled",
		"statusReason":               nil,
		"statusUpdatedTime":          "0001-01-01T00:00:00Z",
		"connectionState":            "Disconnected",
		"connectionStateUpdatedTime": "0001-01-01T00:00:00Z",
		"lastActivityTime":           "0001-01-01T00:00:00Z",
		"cloudToDeviceMessageCount":  float64(0),
		"authentication": map[string]any{
			"type":           "sas",
			"symmetricKey":   map[string]any{"primaryKey": testKeyA, "secondaryKey": testKeyB},
			"x509Thumbprint": map[string]any{"primaryThumbprint": nil, "secondaryThumbprint": nil},
		},
		"capabilities": map[string]any{"iotEdge": false},
	}
	gotJSON, _ := json.Marshal(m)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("device JSON\n got %s\nwant %s", gotJSON, wantJSON)
	}
	var back Device
	if err := json.Unmarshal(b, &back); err != nil || !deviceEqual(back, d) {
		t.Fatalf("round trip = %+v, %v", back, err)
	}

	mod := Module{ModuleID: "m1", DeviceID: "dev1"}
	mb, _ := json.Marshal(mod)
	if !strings.Contains(string(mb), `"managedBy":null`) || !strings.Contains(string(mb), `"moduleId":"m1"`) {
		t.Fatalf("module JSON %s", mb)
	}
}

func TestPersistenceAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	db := openDB(t, path)
	r, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	d := mustCreate(t, r, "dev1")
	m, err := r.CreateModule(ctx, Module{DeviceID: "dev1", ModuleID: "m1", ManagedBy: "iotEdge"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	if err := r.SetConnectionState(ctx, "dev1", "", true, at); err != nil {
		t.Fatal(err)
	}
	r.RecordActivity("dev1", "", at.Add(time.Minute))
	r.RecordActivity("dev1", "m1", at.Add(2*time.Minute))
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = openDB(t, path)
	defer db.Close()
	r, err = Open(db)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.GetDevice(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if got.ETag != d.ETag || got.GenerationID != d.GenerationID || got.Authentication != d.Authentication {
		t.Errorf("identity changed across reopen (flush must not touch etag):\n%+v\n%+v", got, d)
	}
	if got.ConnectionState != Disconnected || !got.ConnectionStateUpdatedTime.Equal(at) || !got.LastActivityTime.Equal(at.Add(time.Minute)) {
		t.Errorf("runtime fields after reopen = %s %v %v", got.ConnectionState, got.ConnectionStateUpdatedTime, got.LastActivityTime)
	}
	gm, err := r.GetModule(ctx, "dev1", "m1")
	if err != nil {
		t.Fatal(err)
	}
	if gm.ETag != m.ETag || gm.ManagedBy != "iotEdge" || !gm.LastActivityTime.Equal(at.Add(2*time.Minute)) {
		t.Errorf("module after reopen = %+v", gm)
	}
}

func TestIfMatch(t *testing.T) {
	tests := []struct {
		name    string
		ifMatch func(etag string) string
		ok      bool
	}{
		{"absent", func(string) string { return "" }, true},
		{"star", func(string) string { return "*" }, true},
		{"quoted star", func(string) string { return `"*"` }, true},
		{"match", func(e string) string { return e }, true},
		{"quoted match", func(e string) string { return `"` + e + `"` }, true},
		{"weak quoted match", func(e string) string { return `W/"` + e + `"` }, true},
		{"mismatch", func(string) string { return "MTIzNDU=" }, false},
		{"quoted mismatch", func(string) string { return `"MTIzNDU="` }, false},
		{"half quoted", func(e string) string { return `"` + e }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newTestRegistry(t)
			d := mustCreate(t, r, "dev1")
			_, err := r.UpdateDevice(ctx, d, tt.ifMatch(d.ETag))
			if tt.ok != (err == nil) || !tt.ok && !errors.Is(err, ErrPreconditionFailed) {
				t.Fatalf("UpdateDevice: %v", err)
			}
			cur, _ := r.GetDevice(ctx, "dev1")
			err = r.DeleteDevice(ctx, "dev1", tt.ifMatch(cur.ETag))
			if tt.ok != (err == nil) || !tt.ok && !errors.Is(err, ErrPreconditionFailed) {
				t.Fatalf("DeleteDevice: %v", err)
			}
			m, err := r.CreateModule(ctx, Module{DeviceID: "dev2", ModuleID: "m"})
			if !errors.Is(err, ErrDeviceNotFound) {
				t.Fatalf("CreateModule on missing device: %+v %v", m, err)
			}
			mustCreate(t, r, "dev2")
			m, err = r.CreateModule(ctx, Module{DeviceID: "dev2", ModuleID: "m"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.UpdateModule(ctx, m, tt.ifMatch(m.ETag))
			if tt.ok != (err == nil) || !tt.ok && !errors.Is(err, ErrPreconditionFailed) {
				t.Fatalf("UpdateModule: %v", err)
			}
		})
	}
}

func TestDuplicateCreate(t *testing.T) {
	r, _ := newTestRegistry(t)
	mustCreate(t, r, "dev1")
	if _, err := r.CreateDevice(ctx, Device{DeviceID: "dev1"}); !errors.Is(err, ErrDeviceAlreadyExists) {
		t.Fatalf("duplicate device: %v", err)
	}
	if _, err := r.CreateDevice(ctx, Device{DeviceID: "DEV1"}); err != nil {
		t.Fatalf("ids are case-sensitive, DEV1 is a new device: %v", err)
	}
	if _, err := r.CreateModule(ctx, Module{DeviceID: "dev1", ModuleID: "m"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateModule(ctx, Module{DeviceID: "dev1", ModuleID: "m"}); !errors.Is(err, ErrModuleAlreadyExists) {
		t.Fatalf("duplicate module: %v", err)
	}
}

func TestValidation(t *testing.T) {
	long := strings.Repeat("a", 128)
	tests := []struct {
		name string
		d    Device
		want error // nil: accepted
	}{
		{"all allowed punctuation", Device{DeviceID: `a-:.+%_#*?!(),=@;$'Z9`}, nil},
		{"128 chars", Device{DeviceID: long}, nil},
		{"empty id", Device{}, ErrInvalidID},
		{"129 chars", Device{DeviceID: long + "a"}, ErrInvalidID},
		{"slash", Device{DeviceID: "a/b"}, ErrInvalidID},
		{"space", Device{DeviceID: "a b"}, ErrInvalidID},
		{"non-ASCII", Device{DeviceID: "gerät"}, ErrInvalidID},
		{"NUL", Device{DeviceID: "a\x00"}, ErrInvalidID},
		{"ampersand", Device{DeviceID: "a&b"}, ErrInvalidID},
		{"status upper-case", Device{DeviceID: "d", Status: "Disabled"}, nil},
		{"bad status", Device{DeviceID: "d", Status: "paused"}, ErrInvalidArgument},
		{"long reason", Device{DeviceID: "d", StatusReason: long + "x"}, ErrInvalidArgument},
		{"bad key", Device{DeviceID: "d", Authentication: Authentication{SymmetricKey: SymmetricKey{PrimaryKey: "not base64"}}}, ErrInvalidArgument},
		{"short key", Device{DeviceID: "d", Authentication: Authentication{SymmetricKey: SymmetricKey{PrimaryKey: "AAAA"}}}, ErrInvalidArgument},
		{"bad auth type", Device{DeviceID: "d", Authentication: Authentication{Type: "password"}}, ErrInvalidArgument},
		{"selfSigned without thumbprint", Device{DeviceID: "d", Authentication: Authentication{Type: AuthSelfSigned}}, ErrInvalidArgument},
		{"selfSigned", Device{DeviceID: "d", Authentication: Authentication{Type: AuthSelfSigned, X509Thumbprint: X509Thumbprint{PrimaryThumbprint: strings.Repeat("A", 40)}}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newTestRegistry(t)
			_, err := r.CreateDevice(ctx, tt.d)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("CreateDevice(%q) = %v, want %v", tt.d.DeviceID, err, tt.want)
			}
			if tt.want != nil && !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("%v does not match ErrInvalidArgument", err)
			}
		})
	}
	r, _ := newTestRegistry(t)
	mustCreate(t, r, "d")
	if _, err := r.CreateModule(ctx, Module{DeviceID: "d", ModuleID: "m/1"}); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("module id with slash: %v", err)
	}
}

func TestUpdateSemantics(t *testing.T) {
	r, _ := newTestRegistry(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	d := mustCreate(t, r, "dev1")
	keys := d.Authentication.SymmetricKey

	// Body without keys, with a foreign generationId: keys and generation stay.
	body := Device{DeviceID: "dev1", GenerationID: "1", ETag: "ignored"}
	now = now.Add(time.Hour)
	u, err := r.UpdateDevice(ctx, body, "*")
	if err != nil {
		t.Fatal(err)
	}
	if u.Authentication.SymmetricKey != keys || u.GenerationID != d.GenerationID || u.Status != StatusEnabled {
		t.Fatalf("update without keys changed identity: %+v", u)
	}
	if !u.StatusUpdatedTime.IsZero() {
		t.Errorf("statusUpdatedTime moved without a status change: %v", u.StatusUpdatedTime)
	}

	// Status change moves statusUpdatedTime; new keys replace old ones.
	body.Status = StatusDisabled
	body.Authentication.SymmetricKey = SymmetricKey{PrimaryKey: testKeyA}
	u, err = r.UpdateDevice(ctx, body, "")
	if err != nil {
		t.Fatal(err)
	}
	if u.Status != StatusDisabled || !u.StatusUpdatedTime.Equal(now) {
		t.Errorf("status update = %s at %v", u.Status, u.StatusUpdatedTime)
	}
	if u.Authentication.SymmetricKey != (SymmetricKey{PrimaryKey: testKeyA, SecondaryKey: keys.SecondaryKey}) {
		t.Errorf("keys after partial update = %+v", u.Authentication.SymmetricKey)
	}

	// Switching to x509 drops keys; switching back generates fresh ones.
	body.Authentication = Authentication{Type: AuthSelfSigned, X509Thumbprint: X509Thumbprint{PrimaryThumbprint: "AB"}}
	if u, err = r.UpdateDevice(ctx, body, ""); err != nil || u.Authentication.SymmetricKey != (SymmetricKey{}) {
		t.Fatalf("x509 update = %+v, %v", u.Authentication, err)
	}
	body.Authentication = Authentication{}
	if u, err = r.UpdateDevice(ctx, body, ""); err != nil || u.Authentication.SymmetricKey.PrimaryKey == "" || u.Authentication.SymmetricKey.PrimaryKey == testKeyA {
		t.Fatalf("back to sas = %+v, %v", u.Authentication, err)
	}

	// SetDeviceStatus.
	now = now.Add(time.Hour)
	u, err = r.SetDeviceStatus(ctx, "dev1", true, "back")
	if err != nil || u.Status != StatusEnabled || u.StatusReason != "back" || !u.StatusUpdatedTime.Equal(now) {
		t.Fatalf("SetDeviceStatus = %+v, %v", u, err)
	}
	if _, err := r.SetDeviceStatus(ctx, "ghost", true, ""); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("SetDeviceStatus(ghost) = %v", err)
	}
}

func TestDisableAndCredentials(t *testing.T) {
	r, _ := newTestRegistry(t)
	d := mustCreate(t, r, "dev1")
	m, err := r.CreateModule(ctx, Module{DeviceID: "dev1", ModuleID: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.DeviceCredentials(ctx, "dev1", "")
	if err != nil || !c.Enabled || c.PrimaryKey != d.Authentication.SymmetricKey.PrimaryKey || c.GenerationID != d.GenerationID || c.AuthType != "sas" {
		t.Fatalf("credentials = %+v, %v", c, err)
	}
	mc, err := r.DeviceCredentials(ctx, "dev1", "m1")
	if err != nil || !mc.Enabled || mc.PrimaryKey != m.Authentication.SymmetricKey.PrimaryKey || mc.ModuleID != "m1" || mc.GenerationID != m.GenerationID {
		t.Fatalf("module credentials = %+v, %v", mc, err)
	}

	a := &auth.Authenticator{Identities: r, Now: func() time.Time { return time.Unix(1000, 0) }}
	token, err := auth.Sign("hub/devices/dev1", "", d.Authentication.SymmetricKey.PrimaryKey, time.Unix(2000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AuthenticateDevice(ctx, "dev1", "", token); err != nil {
		t.Fatalf("authenticate enabled device: %v", err)
	}

	if _, err := r.SetDeviceStatus(ctx, "dev1", false, "stolen"); err != nil {
		t.Fatal(err)
	}
	if c, _ := r.DeviceCredentials(ctx, "dev1", ""); c.Enabled {
		t.Fatal("disabled device still enabled in credentials (stale cache)")
	}
	if mc, _ := r.DeviceCredentials(ctx, "dev1", "m1"); mc.Enabled {
		t.Fatal("module of a disabled device still enabled")
	}
	if _, err := a.AuthenticateDevice(ctx, "dev1", "", token); !errors.Is(err, auth.ErrDeviceDisabled) {
		t.Fatalf("authenticate disabled device: %v", err)
	}

	// Key rotation is visible at once.
	d, _ = r.GetDevice(ctx, "dev1")
	d.Status = StatusEnabled
	d.Authentication.SymmetricKey = SymmetricKey{PrimaryKey: testKeyA, SecondaryKey: testKeyB}
	if _, err := r.UpdateDevice(ctx, d, d.ETag); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AuthenticateDevice(ctx, "dev1", "", token); !errors.Is(err, auth.ErrBadSignature) {
		t.Fatalf("old key after rotation: %v", err)
	}

	for _, tc := range []struct {
		dev, mod string
		want     error
	}{{"ghost", "", ErrDeviceNotFound}, {"dev1", "ghost", ErrModuleNotFound}, {"ghost", "m1", ErrDeviceNotFound}} {
		_, err := r.DeviceCredentials(ctx, tc.dev, tc.mod)
		if !errors.Is(err, tc.want) || !errors.Is(err, auth.ErrUnknownIdentity) {
			t.Errorf("DeviceCredentials(%s, %s) = %v, want %v and auth.ErrUnknownIdentity", tc.dev, tc.mod, err, tc.want)
		}
	}
}

func TestDeleteRemovesModules(t *testing.T) {
	r, _ := newTestRegistry(t)
	var events []string
	r.OnChange(func(ev ChangeEvent) {
		events = append(events, fmt.Sprintf("%s %s/%s", ev.Op, ev.DeviceID, ev.ModuleID))
	})
	mustCreate(t, r, "d1")
	mustCreate(t, r, "d10")
	for _, m := range []Module{{DeviceID: "d1", ModuleID: "a"}, {DeviceID: "d1", ModuleID: "b"}, {DeviceID: "d10", ModuleID: "a"}} {
		if _, err := r.CreateModule(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.DeviceCredentials(ctx, "d1", "a"); err != nil { // warm the cache
		t.Fatal(err)
	}
	if err := r.DeleteDevice(ctx, "d1", "*"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetModule(ctx, "d1", "a"); !errors.Is(err, ErrModuleNotFound) {
		t.Fatalf("module survived its device: %v", err)
	}
	if _, err := r.DeviceCredentials(ctx, "d1", "a"); !errors.Is(err, auth.ErrUnknownIdentity) {
		t.Fatalf("stale module credentials: %v", err)
	}
	if _, err := r.ListModules(ctx, "d1"); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("ListModules of deleted device: %v", err)
	}
	ms, err := r.ListModules(ctx, "d10")
	if err != nil || len(ms) != 1 || ms[0].ModuleID != "a" {
		t.Fatalf("d10 modules = %+v, %v", ms, err)
	}
	// d1 re-created has no modules.
	mustCreate(t, r, "d1")
	if ms, _ := r.ListModules(ctx, "d1"); len(ms) != 0 {
		t.Fatalf("re-created device has modules %+v", ms)
	}
	if _, err := r.DeviceCredentials(ctx, "d1", "a"); !errors.Is(err, ErrModuleNotFound) {
		t.Fatalf("module credentials survived delete and re-create: %v", err)
	}
	if err := r.DeleteModule(ctx, "d10", "a", "wrong"); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("DeleteModule wrong etag: %v", err)
	}
	if err := r.DeleteModule(ctx, "d10", "a", ""); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"Created d1/", "Created d10/", "Created d1/a", "Created d1/b", "Created d10/a",
		"Deleted d1/a", "Deleted d1/b", "Deleted d1/",
		"Created d1/", "Deleted d10/a",
	}
	if strings.Join(events, ",") != strings.Join(want, ",") {
		t.Fatalf("events\n got %v\nwant %v", events, want)
	}
}

func TestConcurrentCreates(t *testing.T) {
	r, _ := newTestRegistry(t)
	const workers, each = 8, 25
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		gens    = map[string]bool{}
		winners int
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				d, err := r.CreateDevice(ctx, Device{DeviceID: fmt.Sprintf("w%d-%d", w, i)})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := r.DeviceCredentials(ctx, d.DeviceID, ""); err != nil {
					t.Error(err)
				}
				r.RecordActivity(d.DeviceID, "", time.Now())
				mu.Lock()
				gens[d.GenerationID] = true
				mu.Unlock()
			}
			_, err := r.CreateDevice(ctx, Device{DeviceID: "shared"})
			switch {
			case err == nil:
				mu.Lock()
				winners++
				mu.Unlock()
			case !errors.Is(err, ErrDeviceAlreadyExists):
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if winners != 1 {
		t.Fatalf("%d goroutines created the same device", winners)
	}
	if len(gens) != workers*each {
		t.Fatalf("%d distinct generation ids for %d devices", len(gens), workers*each)
	}
	s, err := r.Stats(ctx)
	if err != nil || s.TotalDeviceCount != workers*each+1 {
		t.Fatalf("Stats = %+v, %v", s, err)
	}
}

func TestConnectionStateAndActivity(t *testing.T) {
	r, _ := newTestRegistry(t)
	mustCreate(t, r, "dev1")
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	if err := r.SetConnectionState(ctx, "dev1", "", true, at); err != nil {
		t.Fatal(err)
	}
	r.RecordActivity("dev1", "", at.Add(time.Second))
	r.RecordActivity("dev1", "", at) // older: ignored
	d, _ := r.GetDevice(ctx, "dev1")
	if d.ConnectionState != Connected || !d.ConnectionStateUpdatedTime.Equal(at) || !d.LastActivityTime.Equal(at.Add(time.Second)) {
		t.Fatalf("after connect: %s %v %v", d.ConnectionState, d.ConnectionStateUpdatedTime, d.LastActivityTime)
	}
	etag := d.ETag
	if err := r.SetConnectionState(ctx, "dev1", "", false, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	list, _ := r.ListDevices(ctx, 10)
	if d := list[0]; d.ConnectionState != Disconnected || !d.ConnectionStateUpdatedTime.Equal(at.Add(time.Minute)) || d.ETag != etag {
		t.Fatalf("after disconnect+flush: %+v", d)
	}
	// Activity of a deleted device is dropped at the next flush.
	r.RecordActivity("ghost", "", at)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r.liveMu.Lock()
	_, ok := r.live[credKey{device: "ghost"}]
	r.liveMu.Unlock()
	if ok {
		t.Error("runtime state of an unknown device kept after flush")
	}
}

// TestActivityUnderConcurrentFlush: activity recorded from many goroutines while Flush runs is
// persisted: the latest time of each identity wins, and none recorded between a flush's reading
// of the state and its write is lost.
func TestActivityUnderConcurrentFlush(t *testing.T) {
	r, _ := newTestRegistry(t)
	ids := []string{"a", "b", "c", "d"}
	for _, id := range ids {
		mustCreate(t, r, id)
	}
	if _, err := r.CreateModule(ctx, Module{DeviceID: "a", ModuleID: "m"}); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	at := func(g, i int) time.Time { return base.Add(time.Duration(i*8+g) * time.Microsecond) }
	want := map[string]time.Time{}
	for g := range 8 {
		for i := range 3000 {
			if id := ids[(g+i)%len(ids)]; at(g, i).After(want[id]) {
				want[id] = at(g, i)
			}
		}
	}
	stop := make(chan struct{})
	flushed := make(chan error, 1)
	go func() {
		var err error
		for {
			select {
			case <-stop:
				flushed <- err
				return
			default:
			}
			if e := r.Flush(ctx); e != nil {
				err = e
			}
		}
	}()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 3000 {
				r.RecordActivity(ids[(g+i)%len(ids)], "", at(g, i))
				r.RecordActivity("a", "m", at(g, i))
			}
		})
	}
	wg.Wait()
	close(stop)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	stored, err := Open(r.db) // no runtime state: what was persisted
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		d, err := stored.GetDevice(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !d.LastActivityTime.Equal(want[id]) {
			t.Errorf("%s: stored last activity %v, want %v", id, d.LastActivityTime, want[id])
		}
		if live, _ := r.GetDevice(ctx, id); !live.LastActivityTime.Equal(want[id]) {
			t.Errorf("%s: last activity %v, want %v", id, live.LastActivityTime, want[id])
		}
	}
	m, err := stored.GetModule(ctx, "a", "m")
	if err != nil {
		t.Fatal(err)
	}
	if last := at(7, 2999); !m.LastActivityTime.Equal(last) {
		t.Errorf("module: stored last activity %v, want %v", m.LastActivityTime, last)
	}
}

func TestListAndStats(t *testing.T) {
	r, _ := newTestRegistry(t)
	for i := range 5 {
		mustCreate(t, r, fmt.Sprintf("d%d", i))
	}
	if _, err := r.SetDeviceStatus(ctx, "d3", false, ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ top, want int }{{0, 5}, {-1, 5}, {2, 2}, {5000, 5}} {
		got, err := r.ListDevices(ctx, tc.top)
		if err != nil || len(got) != tc.want {
			t.Errorf("ListDevices(%d) = %d devices, %v; want %d", tc.top, len(got), err, tc.want)
		}
	}
	s, err := r.Stats(ctx)
	if err != nil || s != (Stats{TotalDeviceCount: 5, EnabledDeviceCount: 4, DisabledDeviceCount: 1}) {
		t.Fatalf("Stats = %+v, %v", s, err)
	}
}

func TestSharedDatabase(t *testing.T) {
	r, path := newTestRegistry(t)
	db := r.db
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte("c2d"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(db); err != nil {
		t.Fatalf("second Open on %s: %v", path, err)
	}
}

func BenchmarkDeviceCredentials(b *testing.B) {
	r, _ := newTestRegistry(b)
	mustCreate(b, r, "dev1")
	if _, err := r.CreateModule(ctx, Module{DeviceID: "dev1", ModuleID: "m1"}); err != nil {
		b.Fatal(err)
	}
	for _, mod := range []string{"", "m1"} {
		b.Run("module="+mod, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.DeviceCredentials(ctx, "dev1", mod); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("uncached-bbolt-read", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.GetDevice(ctx, "dev1"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRecordActivity(b *testing.B) {
	r, _ := newTestRegistry(b)
	mustCreate(b, r, "dev1")
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.RecordActivity("dev1", "", now)
		}
	})
}

// BenchmarkRecordActivityPerMessage is hub.Submit's call: 100 devices sending at once, every
// call a later time (the time itself is taken outside the loop).
func BenchmarkRecordActivityPerMessage(b *testing.B) {
	r, _ := newTestRegistry(b)
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = mustCreate(b, r, fmt.Sprintf("bench-%d", i)).DeviceID
	}
	base := time.Now()
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 7
		for pb.Next() {
			i++
			r.RecordActivity(ids[i%len(ids)], "", base.Add(time.Duration(next.Add(1))))
		}
	})
}

// BenchmarkAuthenticateDeviceRegistry is the whole CONNECT check against a
// real registry.
func BenchmarkAuthenticateDeviceRegistry(b *testing.B) {
	r, _ := newTestRegistry(b)
	d := mustCreate(b, r, "dev1")
	a := &auth.Authenticator{Identities: r}
	token, err := auth.Sign("hub/devices/dev1", "", d.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.AuthenticateDevice(ctx, "dev1", "", token); err != nil {
			b.Fatal(err)
		}
	}
}
