package registry

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/auth"
)

// credKey names a device (module "") or a module.
type credKey struct{ device, module string }

// credEntry is a cached identity: the credentials as stored, and for a
// device whether it is enabled.
type credEntry struct {
	creds   auth.Credentials
	enabled bool
}

// DeviceCredentials implements auth.IdentityStore. It is served from
// memory after the first lookup of an identity; every write to that
// identity drops the entry. A module's Enabled is its device's status.
// Unknown identities return ErrDeviceNotFound or ErrModuleNotFound, which
// also match auth.ErrUnknownIdentity. The cache holds every identity that
// has authenticated since start; misses are not cached, so an unknown-id
// flood costs one read transaction per attempt but no memory.
func (r *Registry) DeviceCredentials(ctx context.Context, deviceID, moduleID string) (auth.Credentials, error) {
	if err := ctx.Err(); err != nil {
		return auth.Credentials{}, err
	}
	dev, err := r.cached(credKey{device: deviceID})
	if err != nil {
		return auth.Credentials{}, fmt.Errorf("registry: credentials of %s: %w: %w", deviceID, err, auth.ErrUnknownIdentity)
	}
	if moduleID == "" {
		c := dev.creds
		c.Enabled = dev.enabled
		return c, nil
	}
	mod, err := r.cached(credKey{device: deviceID, module: moduleID})
	if err != nil {
		return auth.Credentials{}, fmt.Errorf("registry: credentials of %s/%s: %w: %w", deviceID, moduleID, err, auth.ErrUnknownIdentity)
	}
	c := mod.creds
	c.Enabled = dev.enabled
	return c, nil
}

// cached returns the entry for k, loading it on a miss. The load holds
// r.mu shared, so no write can commit between reading bbolt and filling the
// cache (write drops entries while holding r.mu exclusively).
func (r *Registry) cached(k credKey) (credEntry, error) {
	r.cacheMu.RLock()
	e, ok := r.cache[k]
	r.cacheMu.RUnlock()
	if ok {
		return e, nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	err := r.db.View(func(tx *bbolt.Tx) error {
		if k.module == "" {
			d, err := getDevice(tx, k.device)
			if err != nil {
				return err
			}
			e = credEntry{creds: credentials(d.DeviceID, "", d.GenerationID, d.Authentication), enabled: d.Status != StatusDisabled}
			return nil
		}
		m, err := getModule(tx, k.device, k.module)
		if err != nil {
			return err
		}
		e = credEntry{creds: credentials(m.DeviceID, m.ModuleID, m.GenerationID, m.Authentication)}
		return nil
	})
	if err != nil {
		return credEntry{}, err
	}
	r.cacheMu.Lock()
	r.cache[k] = e
	r.cacheMu.Unlock()
	return e, nil
}

func credentials(deviceID, moduleID, gen string, a Authentication) auth.Credentials {
	return auth.Credentials{
		DeviceID:            deviceID,
		ModuleID:            moduleID,
		GenerationID:        gen,
		PrimaryKey:          a.SymmetricKey.PrimaryKey,
		SecondaryKey:        a.SymmetricKey.SecondaryKey,
		AuthType:            string(a.Type),
		PrimaryThumbprint:   a.X509Thumbprint.PrimaryThumbprint,
		SecondaryThumbprint: a.X509Thumbprint.SecondaryThumbprint,
	}
}
