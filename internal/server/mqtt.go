package server

import (
	"context"
	"time"

	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/mqtt"
	"github.com/tetherhub/tether/internal/telemetry"
)

// mqttAdapter lets the MQTT endpoint use the hub.
type mqttAdapter struct{ hub *hub.Hub }

func (a mqttAdapter) Connect(ctx context.Context, req mqtt.ConnectRequest) (mqtt.Device, error) {
	id, err := a.hub.AuthenticateDevice(ctx, req.DeviceID, req.ModuleID, req.Password)
	if err != nil {
		return nil, err
	}
	a.hub.Connected(ctx, id)
	return &mqttDevice{hub: a.hub, origin: hub.Origin{Identity: id, ModelID: req.ModelID}}, nil
}

type mqttDevice struct {
	hub    *hub.Hub
	origin hub.Origin
}

func (d *mqttDevice) DeviceID() string  { return d.origin.Identity.DeviceID }
func (d *mqttDevice) ModuleID() string  { return d.origin.Identity.ModuleID }
func (d *mqttDevice) Expiry() time.Time { return d.origin.Identity.Expiry }

func (d *mqttDevice) Submit(ctx context.Context, msg *message.Message) (mqtt.Receipt, error) {
	p, err := d.hub.Submit(ctx, d.origin, msg)
	if err != nil {
		return nil, err
	}
	return receipt{p}, nil
}

func (d *mqttDevice) Disconnected(graceful bool) {
	d.hub.Disconnected(context.Background(), d.origin.Identity)
}

type receipt struct{ p *telemetry.Pending }

func (r receipt) Wait(ctx context.Context) error {
	_, err := r.p.Wait(ctx)
	return err
}
