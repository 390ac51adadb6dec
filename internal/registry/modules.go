package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// CreateModule adds a module to an existing device. Authentication is
// handled as for devices. Errors: ErrInvalidID, ErrInvalidArgument,
// ErrDeviceNotFound, ErrModuleAlreadyExists.
func (r *Registry) CreateModule(ctx context.Context, m Module) (Module, error) {
	if err := ctx.Err(); err != nil {
		return Module{}, err
	}
	if err := ValidateID(m.DeviceID); err != nil {
		return Module{}, fmt.Errorf("registry: create module: %w", err)
	}
	if err := ValidateID(m.ModuleID); err != nil {
		return Module{}, fmt.Errorf("registry: create module: %w", err)
	}
	if err := normalizeAuth(&m.Authentication, &Authentication{}); err != nil {
		return Module{}, fmt.Errorf("registry: create module %s/%s: %w", m.DeviceID, m.ModuleID, err)
	}
	m.GenerationID = r.newGenerationID()
	m.ConnectionState = Disconnected
	m.ConnectionStateUpdatedTime, m.LastActivityTime = time.Time{}, time.Time{}
	m.CloudToDeviceMessageCount = 0
	var d Device
	err := r.write(func(tx *bbolt.Tx) error {
		var err error
		if d, err = getDevice(tx, m.DeviceID); err != nil {
			return err
		}
		b := tx.Bucket(modulesBucket)
		key := moduleKey(m.DeviceID, m.ModuleID)
		if b.Get(key) != nil {
			return ErrModuleAlreadyExists
		}
		if m.ETag, err = newETag(b); err != nil {
			return err
		}
		return putJSON(b, key, m)
	}, credKey{device: m.DeviceID, module: m.ModuleID})
	if err != nil {
		return Module{}, fmt.Errorf("registry: create module %s/%s: %w", m.DeviceID, m.ModuleID, err)
	}
	r.emit(ChangeEvent{Op: Created, DeviceID: m.DeviceID, ModuleID: m.ModuleID, Device: d, Module: &m})
	return m, nil
}

// GetModule returns a module. Errors: ErrModuleNotFound (also when the
// device does not exist, as IoT Hub answers).
func (r *Registry) GetModule(ctx context.Context, deviceID, moduleID string) (Module, error) {
	if err := ctx.Err(); err != nil {
		return Module{}, err
	}
	var m Module
	err := r.db.View(func(tx *bbolt.Tx) error {
		var err error
		m, err = getModule(tx, deviceID, moduleID)
		return err
	})
	if err != nil {
		return Module{}, fmt.Errorf("registry: get module %s/%s: %w", deviceID, moduleID, err)
	}
	r.overlay(credKey{device: deviceID, module: moduleID}, &m.ConnectionState, &m.ConnectionStateUpdatedTime, &m.LastActivityTime)
	return m, nil
}

// UpdateModule replaces a module's authentication and managedBy, with
// If-Match and key rules as in UpdateDevice. Errors: ErrModuleNotFound,
// ErrPreconditionFailed, ErrInvalidArgument.
func (r *Registry) UpdateModule(ctx context.Context, m Module, ifMatch string) (Module, error) {
	if err := ctx.Err(); err != nil {
		return Module{}, err
	}
	var (
		cur Module
		d   Device
	)
	err := r.write(func(tx *bbolt.Tx) error {
		var err error
		if cur, err = getModule(tx, m.DeviceID, m.ModuleID); err != nil {
			return err
		}
		if !etagMatches(ifMatch, cur.ETag) {
			return ErrPreconditionFailed
		}
		if err := normalizeAuth(&m.Authentication, &cur.Authentication); err != nil {
			return err
		}
		if d, err = getDevice(tx, m.DeviceID); err != nil {
			return err
		}
		cur.Authentication = m.Authentication
		cur.ManagedBy = m.ManagedBy
		b := tx.Bucket(modulesBucket)
		if cur.ETag, err = newETag(b); err != nil {
			return err
		}
		return putJSON(b, moduleKey(m.DeviceID, m.ModuleID), cur)
	}, credKey{device: m.DeviceID, module: m.ModuleID})
	if err != nil {
		return Module{}, fmt.Errorf("registry: update module %s/%s: %w", m.DeviceID, m.ModuleID, err)
	}
	r.overlay(credKey{device: m.DeviceID, module: m.ModuleID}, &cur.ConnectionState, &cur.ConnectionStateUpdatedTime, &cur.LastActivityTime)
	r.emit(ChangeEvent{Op: Updated, DeviceID: m.DeviceID, ModuleID: m.ModuleID, Device: d, Module: &cur})
	return cur, nil
}

// DeleteModule deletes a module. Errors: ErrModuleNotFound,
// ErrPreconditionFailed.
func (r *Registry) DeleteModule(ctx context.Context, deviceID, moduleID, ifMatch string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var (
		m Module
		d Device
	)
	key := credKey{device: deviceID, module: moduleID}
	err := r.write(func(tx *bbolt.Tx) error {
		var err error
		if m, err = getModule(tx, deviceID, moduleID); err != nil {
			return err
		}
		if !etagMatches(ifMatch, m.ETag) {
			return ErrPreconditionFailed
		}
		if d, err = getDevice(tx, deviceID); err != nil {
			return err
		}
		return tx.Bucket(modulesBucket).Delete(moduleKey(deviceID, moduleID))
	}, key)
	if err != nil {
		return fmt.Errorf("registry: delete module %s/%s: %w", deviceID, moduleID, err)
	}
	r.forget(key)
	r.emit(ChangeEvent{Op: Deleted, DeviceID: deviceID, ModuleID: moduleID, Device: d, Module: &m})
	return nil
}

// ListModules returns a device's modules in id order. Errors:
// ErrDeviceNotFound.
func (r *Registry) ListModules(ctx context.Context, deviceID string) ([]Module, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Module
	err := r.db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(devicesBucket).Get([]byte(deviceID)) == nil {
			return ErrDeviceNotFound
		}
		var err error
		out, err = listModules(tx, deviceID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("registry: list modules of %s: %w", deviceID, err)
	}
	for i := range out {
		m := &out[i]
		r.overlay(credKey{device: deviceID, module: m.ModuleID}, &m.ConnectionState, &m.ConnectionStateUpdatedTime, &m.LastActivityTime)
	}
	return out, nil
}

func getModule(tx *bbolt.Tx, deviceID, moduleID string) (Module, error) {
	v := tx.Bucket(modulesBucket).Get(moduleKey(deviceID, moduleID))
	if v == nil {
		return Module{}, ErrModuleNotFound
	}
	var m Module
	if err := json.Unmarshal(v, &m); err != nil {
		return Module{}, fmt.Errorf("decode module %s/%s: %w", deviceID, moduleID, err)
	}
	return m, nil
}

func listModules(tx *bbolt.Tx, deviceID string) ([]Module, error) {
	var out []Module
	prefix := moduleKey(deviceID, "")
	c := tx.Bucket(modulesBucket).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var m Module
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, fmt.Errorf("decode module %s: %w", k, err)
		}
		out = append(out, m)
	}
	return out, nil
}
