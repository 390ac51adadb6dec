package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// CreateDevice adds a device. Empty status means enabled, empty
// authentication type means sas, and empty keys are generated. The hub
// assigns generationId and etag; connection and activity fields are
// ignored. Errors: ErrInvalidID, ErrInvalidArgument, ErrDeviceAlreadyExists.
func (r *Registry) CreateDevice(ctx context.Context, d Device) (Device, error) {
	if err := ctx.Err(); err != nil {
		return Device{}, err
	}
	if err := ValidateID(d.DeviceID); err != nil {
		return Device{}, fmt.Errorf("registry: create device: %w", err)
	}
	if err := validateDevice(&d, StatusEnabled, &Authentication{}); err != nil {
		return Device{}, fmt.Errorf("registry: create device %s: %w", d.DeviceID, err)
	}
	d.GenerationID = r.newGenerationID()
	d.StatusUpdatedTime = time.Time{}
	d.ConnectionState = Disconnected
	d.ConnectionStateUpdatedTime, d.LastActivityTime = time.Time{}, time.Time{}
	d.CloudToDeviceMessageCount = 0
	err := r.write(func(tx *bbolt.Tx) error {
		b := tx.Bucket(devicesBucket)
		if b.Get([]byte(d.DeviceID)) != nil {
			return ErrDeviceAlreadyExists
		}
		var err error
		if d.ETag, err = newETag(b); err != nil {
			return err
		}
		return putJSON(b, []byte(d.DeviceID), d)
	}, credKey{device: d.DeviceID})
	if err != nil {
		return Device{}, fmt.Errorf("registry: create device %s: %w", d.DeviceID, err)
	}
	r.emit(ChangeEvent{Op: Created, DeviceID: d.DeviceID, Device: d})
	return d, nil
}

// GetDevice returns a device, with connection state and last activity as
// reported by transports up to now. Errors: ErrDeviceNotFound.
func (r *Registry) GetDevice(ctx context.Context, id string) (Device, error) {
	if err := ctx.Err(); err != nil {
		return Device{}, err
	}
	var d Device
	err := r.db.View(func(tx *bbolt.Tx) error {
		var err error
		d, err = getDevice(tx, id)
		return err
	})
	if err != nil {
		return Device{}, fmt.Errorf("registry: get device %s: %w", id, err)
	}
	r.overlay(credKey{device: id}, &d.ConnectionState, &d.ConnectionStateUpdatedTime, &d.LastActivityTime)
	return d, nil
}

// UpdateDevice replaces a device's writable fields (status, statusReason,
// authentication, capabilities, scopes). ifMatch "" or "*" is
// unconditional; otherwise it must equal the current etag (quotes and W/
// ignored) or ErrPreconditionFailed is returned. deviceId and generationId
// are read-only, and so are the connection and activity fields. Empty
// status keeps the current one; empty keys keep the current keys (see
// normalizeAuth). statusUpdatedTime changes only when status does. Errors:
// ErrDeviceNotFound, ErrPreconditionFailed, ErrInvalidArgument.
func (r *Registry) UpdateDevice(ctx context.Context, d Device, ifMatch string) (Device, error) {
	return r.updateDevice(ctx, d.DeviceID, ifMatch, func(cur *Device) error {
		next := d
		if err := validateDevice(&next, cur.Status, &cur.Authentication); err != nil {
			return err
		}
		cur.setStatus(next.Status, next.StatusReason, r.now().UTC())
		cur.Authentication = next.Authentication
		cur.Capabilities = next.Capabilities
		cur.DeviceScope = next.DeviceScope
		cur.ParentScopes = next.ParentScopes
		if next.Tags != nil {
			cur.Tags = next.Tags
			if len(cur.Tags) == 0 {
				cur.Tags = nil
			}
		}
		return nil
	})
}

// SetDeviceStatus enables or disables a device with a reason. A disabled
// device cannot authenticate; transports should drop its connections on
// the resulting Updated event.
func (r *Registry) SetDeviceStatus(ctx context.Context, id string, enabled bool, reason string) (Device, error) {
	status := StatusDisabled
	if enabled {
		status = StatusEnabled
	}
	return r.updateDevice(ctx, id, "", func(cur *Device) error {
		if len(reason) > 128 {
			return fmt.Errorf("%w: statusReason longer than 128 characters", ErrInvalidArgument)
		}
		cur.setStatus(status, reason, r.now().UTC())
		return nil
	})
}

// setStatus sets status and reason; statusUpdatedTime moves only when the
// status changes (a new device keeps the zero time, as in IoT Hub).
func (d *Device) setStatus(s Status, reason string, now time.Time) {
	if s != d.Status {
		d.Status = s
		d.StatusUpdatedTime = now
	}
	d.StatusReason = reason
}

func (r *Registry) updateDevice(ctx context.Context, id, ifMatch string, apply func(*Device) error) (Device, error) {
	if err := ctx.Err(); err != nil {
		return Device{}, err
	}
	var d Device
	err := r.write(func(tx *bbolt.Tx) error {
		var err error
		if d, err = getDevice(tx, id); err != nil {
			return err
		}
		if !etagMatches(ifMatch, d.ETag) {
			return ErrPreconditionFailed
		}
		if err := apply(&d); err != nil {
			return err
		}
		b := tx.Bucket(devicesBucket)
		if d.ETag, err = newETag(b); err != nil {
			return err
		}
		return putJSON(b, []byte(id), d)
	}, credKey{device: id})
	if err != nil {
		return Device{}, fmt.Errorf("registry: update device %s: %w", id, err)
	}
	r.overlay(credKey{device: id}, &d.ConnectionState, &d.ConnectionStateUpdatedTime, &d.LastActivityTime)
	r.emit(ChangeEvent{Op: Updated, DeviceID: id, Device: d})
	return d, nil
}

// DeleteDevice deletes a device and all its modules. ifMatch works as in
// UpdateDevice. Hooks see one Deleted event per module, then the device's.
// Errors: ErrDeviceNotFound, ErrPreconditionFailed.
func (r *Registry) DeleteDevice(ctx context.Context, id, ifMatch string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var (
		d       Device
		modules []Module
		keys    = []credKey{{device: id}}
	)
	err := r.write(func(tx *bbolt.Tx) error {
		var err error
		if d, err = getDevice(tx, id); err != nil {
			return err
		}
		if !etagMatches(ifMatch, d.ETag) {
			return ErrPreconditionFailed
		}
		if modules, err = listModules(tx, id); err != nil {
			return err
		}
		mb := tx.Bucket(modulesBucket)
		for _, m := range modules {
			if err := mb.Delete(moduleKey(id, m.ModuleID)); err != nil {
				return err
			}
			keys = append(keys, credKey{device: id, module: m.ModuleID})
		}
		r.uncache(keys...) // module keys are only known here
		return tx.Bucket(devicesBucket).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("registry: delete device %s: %w", id, err)
	}
	r.forget(keys...)
	events := make([]ChangeEvent, 0, len(modules)+1)
	for i := range modules {
		events = append(events, ChangeEvent{Op: Deleted, DeviceID: id, ModuleID: modules[i].ModuleID, Device: d, Module: &modules[i]})
	}
	r.emit(append(events, ChangeEvent{Op: Deleted, DeviceID: id, Device: d})...)
	return nil
}

// ListDevices returns up to top devices in id order; top <= 0 or above
// IoT Hub's limit of 1000 means 1000.
func (r *Registry) ListDevices(ctx context.Context, top int) ([]Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if top <= 0 || top > maxList {
		top = maxList
	}
	var out []Device
	err := r.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(devicesBucket).Cursor()
		for k, v := c.First(); k != nil && len(out) < top; k, v = c.Next() {
			var d Device
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: list devices: %w", err)
	}
	for i := range out {
		d := &out[i]
		r.overlay(credKey{device: d.DeviceID}, &d.ConnectionState, &d.ConnectionStateUpdatedTime, &d.LastActivityTime)
	}
	return out, nil
}

// Stats counts devices by status.
func (r *Registry) Stats(ctx context.Context) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	var s Stats
	err := r.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(devicesBucket).ForEach(func(k, v []byte) error {
			var d struct {
				Status Status `json:"status"`
			}
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			s.TotalDeviceCount++
			if d.Status == StatusDisabled {
				s.DisabledDeviceCount++
			} else {
				s.EnabledDeviceCount++
			}
			return nil
		})
	})
	if err != nil {
		return Stats{}, fmt.Errorf("registry: stats: %w", err)
	}
	return s, nil
}

// validateDevice checks the writable fields of d and normalizes them;
// defStatus and prevAuth supply values for omitted ones.
func validateDevice(d *Device, defStatus Status, prevAuth *Authentication) error {
	var err error
	if d.Status, err = normalizeStatus(d.Status, defStatus); err != nil {
		return err
	}
	if len(d.StatusReason) > 128 {
		return fmt.Errorf("%w: statusReason longer than 128 characters", ErrInvalidArgument)
	}
	if err := validateTags(d.Tags); err != nil {
		return err
	}
	return normalizeAuth(&d.Authentication, prevAuth)
}

func getDevice(tx *bbolt.Tx, id string) (Device, error) {
	v := tx.Bucket(devicesBucket).Get([]byte(id))
	if v == nil {
		return Device{}, ErrDeviceNotFound
	}
	var d Device
	if err := json.Unmarshal(v, &d); err != nil {
		return Device{}, fmt.Errorf("decode device %s: %w", id, err)
	}
	return d, nil
}

func putJSON(b *bbolt.Bucket, key []byte, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, buf)
}
