package service_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
)

func TestModuleLifecycleThroughClient(t *testing.T) {
	f := newGroupFixture(t, 1<<20, nil)
	ctx := context.Background()
	c := f.client(t, "registryReadWrite")
	if _, err := c.CreateDevice(ctx, api.Device{DeviceID: "edge-1"}); err != nil {
		t.Fatal(err)
	}
	const mid = "filter#1" // '#' must survive the path
	m, err := c.CreateModule(ctx, api.Module{DeviceID: "edge-1", ModuleID: mid})
	if err != nil || m.ModuleID != mid || m.ETag == "" || m.GenerationID == "" || m.Authentication == nil ||
		m.Authentication.SymmetricKey.PrimaryKey == "" || m.ConnectionState != "Disconnected" {
		t.Fatalf("create = %+v %v", m, err)
	}
	for _, tt := range []struct {
		name   string
		call   func() error
		status int
		code   string
	}{
		{"duplicate", func() error { _, err := c.CreateModule(ctx, api.Module{DeviceID: "edge-1", ModuleID: mid}); return err }, http.StatusConflict, "ModuleAlreadyExistsOnDevice"},
		{"no device", func() error { _, err := c.CreateModule(ctx, api.Module{DeviceID: "ghost", ModuleID: "m"}); return err }, http.StatusNotFound, "DeviceNotFound"},
		{"get unknown", func() error { _, err := c.GetModule(ctx, "edge-1", "nope"); return err }, http.StatusNotFound, "ModuleNotFound"},
		{"list unknown device", func() error { _, err := c.ListModules(ctx, "ghost"); return err }, http.StatusNotFound, "DeviceNotFound"},
		{"stale etag", func() error { _, err := c.UpdateModule(ctx, m, "bm9wZQ=="); return err }, http.StatusPreconditionFailed, "PreconditionFailed"},
		{"registryRead cannot create", func() error {
			_, err := f.client(t, "registryRead").CreateModule(ctx, api.Module{DeviceID: "edge-1", ModuleID: "x"})
			return err
		}, http.StatusUnauthorized, "IotHubUnauthorizedAccess"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if e, ok := apiError(tt.call()); !ok || e.StatusCode != tt.status || e.Code != tt.code {
				t.Fatalf("err = %v, want %d %s", e, tt.status, tt.code)
			}
		})
	}
	managed := "iotedge"
	m.ManagedBy = &managed
	updated, err := c.UpdateModule(ctx, m, m.ETag)
	if err != nil || updated.ManagedBy == nil || *updated.ManagedBy != "iotedge" || updated.ETag == m.ETag ||
		updated.Authentication.SymmetricKey.PrimaryKey != m.Authentication.SymmetricKey.PrimaryKey {
		t.Fatalf("update = %+v %v", updated, err)
	}
	got, err := f.client(t, "registryRead").GetModule(ctx, "edge-1", mid)
	if err != nil || got.ETag != updated.ETag {
		t.Fatalf("get = %+v %v", got, err)
	}
	list, err := c.ListModules(ctx, "edge-1")
	if err != nil || len(list) != 1 || list[0].ModuleID != mid {
		t.Fatalf("list = %+v %v", list, err)
	}
	if err := c.DeleteModule(ctx, "edge-1", mid, updated.ETag); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetModule(ctx, "edge-1", mid); !client.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}
	if list, err := c.ListModules(ctx, "edge-1"); err != nil || len(list) != 0 {
		t.Fatalf("list after delete = %+v %v", list, err)
	}
}

// TestCloudToDeviceMessageCountSeam: identities report the count the C2D store gives.
func TestCloudToDeviceMessageCountSeam(t *testing.T) {
	counts := map[string]int{"dev/": 3, "dev/mod": 2}
	f := newGroupFixture(t, 1<<20, func(_ context.Context, deviceID, moduleID string) (int, error) {
		return counts[deviceID+"/"+moduleID], nil
	})
	ctx := context.Background()
	c := f.client(t, "iothubowner")
	created, err := c.CreateDevice(ctx, api.Device{DeviceID: "dev"})
	if err != nil || created.CloudToDeviceMessageCount != 3 {
		t.Fatalf("create = %+v %v", created, err)
	}
	if d, err := c.GetDevice(ctx, "dev"); err != nil || d.CloudToDeviceMessageCount != 3 {
		t.Fatalf("get = %+v %v", d, err)
	}
	if l, err := c.ListDevices(ctx); err != nil || len(l) != 1 || l[0].CloudToDeviceMessageCount != 3 {
		t.Fatalf("list = %+v %v", l, err)
	}
	if _, err := c.CreateModule(ctx, api.Module{DeviceID: "dev", ModuleID: "mod"}); err != nil {
		t.Fatal(err)
	}
	if m, err := c.GetModule(ctx, "dev", "mod"); err != nil || m.CloudToDeviceMessageCount != 2 {
		t.Fatalf("module = %+v %v", m, err)
	}
}
