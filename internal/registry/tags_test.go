package registry

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestDeviceTags(t *testing.T) {
	r, _ := newTestRegistry(t)
	ctx := context.Background()
	d, err := r.CreateDevice(ctx, Device{DeviceID: "d", Tags: map[string]any{"floor": 3.0, "site": map[string]any{"name": "Lyon"}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.GetDevice(ctx, "d")
	if err != nil || got.Tags["floor"] != 3.0 {
		t.Fatalf("tags not persisted: %+v %v", got.Tags, err)
	}
	// An update without tags keeps them (SDKs PUT identities without tags).
	d.Tags = nil
	d.Status = StatusDisabled
	if d, err = r.UpdateDevice(ctx, d, "*"); err != nil || d.Tags["floor"] != 3.0 {
		t.Fatalf("update without tags: %+v %v", d.Tags, err)
	}
	d.Tags = map[string]any{"floor": 4.0}
	if d, err = r.UpdateDevice(ctx, d, "*"); err != nil || len(d.Tags) != 1 || d.Tags["floor"] != 4.0 {
		t.Fatalf("update with tags: %+v %v", d.Tags, err)
	}
	d.Tags = map[string]any{}
	if d, err = r.UpdateDevice(ctx, d, "*"); err != nil || d.Tags != nil {
		t.Fatalf("an empty object clears tags: %+v %v", d.Tags, err)
	}
	if _, err := r.CreateDevice(ctx, Device{DeviceID: "big", Tags: map[string]any{"x": strings.Repeat("a", MaxTagsSize)}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("tags over 8 KB: %v", err)
	}
}
