package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/c2d"
	"github.com/tetherhub/tether/internal/registry"
)

// openC2D opens the cloud-to-device queues and feedback in the metadata store. Devices are the
// registry's: sending to an unknown device fails, feedback carries the generation id, and
// deleting a device deletes its queue (spec 6.2).
func openC2D(db *bbolt.DB, reg *registry.Registry, hubName string, set c2d.Settings, logger *slog.Logger) (*c2d.Store, error) {
	store, err := c2d.Open(db, c2d.Options{
		Settings: set,
		HubName:  hubName,
		Logger:   logger,
		DeviceExists: func(ctx context.Context, deviceID string) (string, bool, error) {
			d, err := reg.GetDevice(ctx, deviceID)
			switch {
			case errors.Is(err, registry.ErrDeviceNotFound):
				return "", false, nil
			case err != nil:
				return "", false, err
			}
			return d.GenerationID, true, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cloud-to-device settings: %w", err)
	}
	reg.OnChange(func(ev registry.ChangeEvent) {
		if ev.Op != registry.Deleted || ev.ModuleID != "" {
			return
		}
		if err := store.DeleteDevice(context.Background(), ev.DeviceID); err != nil {
			logger.Error("delete cloud-to-device queue of deleted device", "device", ev.DeviceID, "err", err)
		}
	})
	return store, nil
}

// c2dCount is the registry's cloudToDeviceMessageCount: a device's pending messages; modules
// have no queue.
func c2dCount(store *c2d.Store) func(ctx context.Context, deviceID, moduleID string) (int, error) {
	return func(_ context.Context, deviceID, moduleID string) (int, error) {
		if moduleID != "" {
			return 0, nil
		}
		return store.PendingCount(deviceID), nil
	}
}
