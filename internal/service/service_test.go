package service_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/hubtest"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/registry"
	"github.com/tetherhub/tether/internal/service"
	"github.com/tetherhub/tether/internal/telemetry"
)

type fixture struct {
	*hubtest.Storage
	srv *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{Storage: hubtest.New(t, telemetry.Options{Partitions: 4})}
	f.serve(t, service.Config{})
	return f
}

// serve starts the service API over f's storage: c with Auth, Registry and Log set to f's.
func (f *fixture) serve(t *testing.T, c service.Config) {
	t.Helper()
	c.Auth, c.Registry, c.Log = f.Auth, f.Registry, f.Log
	f.srv = httptest.NewServer(service.New(c))
	t.Cleanup(f.srv.Close)
}

// client returns a service client signing with the named policy.
func (f *fixture) client(t *testing.T, policy string) *client.Client {
	t.Helper()
	p := f.Policy(t, policy)
	c, err := client.New(auth.ServiceConnectionString("localhost", p.Name, p.PrimaryKey).String(), client.WithEndpoint(f.srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// appendMessage stores a message as the hub would after stamping it.
func (f *fixture) appendMessage(t *testing.T, deviceID, messageID string, at time.Time, body []byte) {
	t.Helper()
	m := message.Message{MessageID: messageID, ConnectionDeviceID: deviceID, EnqueuedTime: at, Source: message.SourceTelemetry, Body: body,
		Properties: map[string]string{"k": "v"}}
	data, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Log.Append(context.Background(), deviceID, at, data); err != nil {
		t.Fatal(err)
	}
}

func TestDeviceLifecycleThroughClient(t *testing.T) {
	f := newFixture(t)
	c := f.client(t, "registryReadWrite")
	ctx := context.Background()

	created, err := c.CreateDevice(ctx, api.Device{DeviceID: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	if created.GenerationID == "" || created.ETag == "" || created.Status != "enabled" || created.Authentication == nil ||
		created.Authentication.SymmetricKey == nil || created.Authentication.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("created device = %+v", created)
	}
	var apiErr *client.Error
	if _, err := c.CreateDevice(ctx, api.Device{DeviceID: "dev-1"}); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusConflict || apiErr.Code != "DeviceAlreadyExists" {
		t.Fatalf("duplicate create: %v", err)
	}
	got, err := c.GetDevice(ctx, "dev-1")
	if err != nil || got.GenerationID != created.GenerationID {
		t.Fatalf("get: %+v %v", got, err)
	}
	got.Status = "disabled"
	updated, err := c.UpdateDevice(ctx, got, got.ETag)
	if err != nil || updated.Status != "disabled" || updated.ETag == got.ETag {
		t.Fatalf("update: %+v %v", updated, err)
	}
	if _, err := c.UpdateDevice(ctx, got, got.ETag); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("update with a stale etag: %v", err)
	}
	list, err := c.ListDevices(ctx)
	if err != nil || len(list) != 1 || list[0].DeviceID != "dev-1" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := c.DeleteDevice(ctx, "dev-1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetDevice(ctx, "dev-1"); !client.IsNotFound(err) || !errors.As(err, &apiErr) || apiErr.Code != "DeviceNotFound" {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := c.CreateDevice(ctx, api.Device{DeviceID: "bad id/"}); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest {
		t.Fatalf("invalid id: %v", err)
	}
}

func TestPermissions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.client(t, "registryReadWrite").CreateDevice(ctx, api.Device{DeviceID: "d"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		policy string
		call   func(*client.Client) error
		ok     bool
	}{
		{"registryRead", func(c *client.Client) error { _, err := c.GetDevice(ctx, "d"); return err }, true},
		{"registryRead", func(c *client.Client) error { _, err := c.CreateDevice(ctx, api.Device{DeviceID: "e"}); return err }, false},
		{"service", func(c *client.Client) error { _, err := c.Partitions(ctx); return err }, true},
		{"service", func(c *client.Client) error { _, err := c.ListDevices(ctx); return err }, false},
		{"device", func(c *client.Client) error { _, err := c.Partitions(ctx); return err }, false},
		{"device", func(c *client.Client) error { _, err := c.GetDevice(ctx, "d"); return err }, false},
		{"iothubowner", func(c *client.Client) error { _, err := c.Partitions(ctx); return err }, true},
	}
	for _, tt := range tests {
		err := tt.call(f.client(t, tt.policy))
		var apiErr *client.Error
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s: %v", tt.policy, err)
		case !tt.ok && (!errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || apiErr.Code != "IotHubUnauthorizedAccess"):
			t.Errorf("%s: err = %v, want 401 IotHubUnauthorizedAccess", tt.policy, err)
		}
	}
}

func TestDeviceKeyCannotCallServiceAPI(t *testing.T) {
	f := newFixture(t)
	dev, err := f.Registry.CreateDevice(context.Background(), registry.Device{DeviceID: "d"})
	if err != nil {
		t.Fatal(err)
	}
	token, _ := auth.Sign("localhost/devices/d", "", dev.Authentication.SymmetricKey.PrimaryKey, time.Now().Add(time.Hour))
	for _, path := range []string{"/devices/d", "/messages/events/partitions"} {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
		req.Header.Set("Authorization", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("x-ms-request-id") == "" || resp.Header.Get("iothub-errorcode") != "IotHubUnauthorizedAccess" {
			t.Errorf("%s with a device token: %d %v", path, resp.StatusCode, resp.Header)
		}
	}
	resp, err := http.Get(f.srv.URL + "/devices/d")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %d", resp.StatusCode)
	}
}

// readN reads events until n arrive or a second passes without one.
func readN(t *testing.T, c *client.Client, opts client.ReadOptions, n int) ([]api.Event, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []api.Event
	err := c.ReadEvents(ctx, opts, func(ev api.Event) error {
		got = append(got, ev)
		if len(got) == n {
			cancel()
		}
		return nil
	})
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	return got, err
}

func TestReadEvents(t *testing.T) {
	f := newFixture(t)
	c := f.client(t, "service")
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for i := range 10 {
		dev := fmt.Sprintf("dev-%d", i%3)
		f.appendMessage(t, dev, fmt.Sprintf("m%d", i), base.Add(time.Duration(i)*time.Minute), []byte(fmt.Sprintf(`{"i":%d}`, i)))
	}
	f.appendMessage(t, "dev-0", "binary", base.Add(time.Hour), []byte{0xff, 0xfe})

	all, err := readN(t, c, client.ReadOptions{From: "start"}, 11)
	if err != nil || len(all) != 11 {
		t.Fatalf("from start: %d events, %v", len(all), err)
	}
	dev0, err := readN(t, c, client.ReadOptions{From: "start", Device: "dev-0"}, 5)
	if err != nil || len(dev0) != 5 {
		t.Fatalf("device filter: %d events, %v", len(dev0), err)
	}
	for i, ev := range dev0 {
		if ev.DeviceID != "dev-0" || ev.SequenceNumber != int64(i) || ev.Properties["k"] != "v" {
			t.Errorf("event %d = %+v", i, ev)
		}
	}
	if last := dev0[4]; last.Body != nil || last.BodyBase64 != "//4=" {
		t.Errorf("binary body = %v %q", last.Body, last.BodyBase64)
	}
	if first := dev0[0]; first.Body == nil || *first.Body != `{"i":0}` || first.SystemProperties["message-id"] != "m0" {
		t.Errorf("first event = %+v", first)
	}

	// By time: dev-0's messages are at minutes 0, 3, 6, 9 and +1h; from minute 4 gives three.
	fromTime, err := readN(t, c, client.ReadOptions{From: base.Add(4 * time.Minute).Format(time.RFC3339), Device: "dev-0"}, 3)
	if err != nil || len(fromTime) != 3 || fromTime[0].SystemProperties["message-id"] != "m6" {
		t.Fatalf("from time: %+v %v", fromTime, err)
	}
	fromSeq, err := readN(t, c, client.ReadOptions{From: "3", Device: "dev-0"}, 2)
	if err != nil || len(fromSeq) != 2 || fromSeq[0].SequenceNumber != 3 {
		t.Fatalf("from sequence: %+v %v", fromSeq, err)
	}

	// From the end, only new messages arrive.
	done := make(chan []api.Event)
	go func() {
		evs, _ := readN(t, c, client.ReadOptions{From: "end", Device: "dev-1"}, 1)
		done <- evs
	}()
	time.Sleep(300 * time.Millisecond)
	f.appendMessage(t, "dev-1", "live", time.Now(), []byte("live"))
	if evs := <-done; len(evs) != 1 || evs[0].SystemProperties["message-id"] != "live" {
		t.Fatalf("tail from end: %+v", evs)
	}

	var apiErr *client.Error
	if _, err := readN(t, c, client.ReadOptions{From: "yesterday"}, 1); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad from: %v", err)
	}
	parts, err := c.Partitions(context.Background())
	if err != nil || len(parts) != 4 {
		t.Fatalf("partitions: %+v %v", parts, err)
	}
	total := int64(0)
	for _, p := range parts {
		if !p.IsEmpty {
			total += p.LastEnqueuedSequenceNumber - p.BeginningSequenceNumber + 1
		}
	}
	if total != 12 {
		t.Errorf("partitions hold %d events, want 12: %+v", total, parts)
	}
}
