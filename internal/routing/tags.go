package routing

import (
	"context"
	"sync"

	"github.com/tetherhub/tether/internal/registry"
)

// RegistryTags is a TagSource over the registry with a cache that registry changes invalidate:
// a condition reading $twin costs a map lookup per message, not a database read. Modules have
// no tags in Tether: $twin.tags is undefined for module messages (IoT Hub reads the module twin,
// spec 9.2).
type RegistryTags struct {
	reg *registry.Registry

	mu    sync.RWMutex
	cache map[string]map[string]any // device id -> tags (nil: none, cached too)
	gen   uint64                    // counts invalidations: a read that raced one is not cached
}

// NewRegistryTags returns a tag source over reg and registers its invalidation hook.
func NewRegistryTags(reg *registry.Registry) *RegistryTags {
	t := &RegistryTags{reg: reg, cache: make(map[string]map[string]any)}
	reg.OnChange(func(ev registry.ChangeEvent) {
		if ev.ModuleID != "" {
			return
		}
		t.mu.Lock()
		delete(t.cache, ev.DeviceID)
		t.gen++
		t.mu.Unlock()
	})
	return t
}

// Tags implements TagSource.
func (t *RegistryTags) Tags(deviceID, moduleID string) map[string]any {
	if moduleID != "" {
		return nil
	}
	t.mu.RLock()
	tags, ok := t.cache[deviceID]
	gen := t.gen
	t.mu.RUnlock()
	if ok {
		return tags
	}
	d, err := t.reg.GetDevice(context.Background(), deviceID)
	if err != nil {
		return nil // not found (or unreadable): undefined, and not cached
	}
	t.mu.Lock()
	if t.gen == gen {
		t.cache[deviceID] = d.Tags
	}
	t.mu.Unlock()
	return d.Tags
}
