// Package hub is where Tether decides policy for every transport: who a device is, whether its
// message is acceptable, what the hub stamps on it, and where it is stored. Transports only
// translate their protocol to and from the message model and call the hub.
package hub

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/telemetry"
)

// Authenticator decides who a device is.
type Authenticator interface {
	AuthenticateDevice(ctx context.Context, deviceID, moduleID, token string) (auth.DeviceIdentity, error)
}

// ActivityRecorder keeps the registry's view of device activity current.
type ActivityRecorder interface {
	SetConnectionState(ctx context.Context, deviceID, moduleID string, connected bool, at time.Time) error
	RecordActivity(deviceID, moduleID string, at time.Time)
}

// TelemetryLog is where accepted device messages are stored durably.
type TelemetryLog interface {
	Submit(ctx context.Context, key string, t time.Time, data ...[]byte) (*telemetry.Pending, error)
}

// Hub applies IoT Hub's rules to device traffic.
type Hub struct {
	auth     Authenticator
	activity ActivityRecorder
	log      TelemetryLog
	logger   *slog.Logger
	now      func() time.Time

	// connections counts live connections per identity: a takeover connects the new connection
	// before the old one disconnects, and the identity must stay Connected through it.
	mu          sync.Mutex
	connections map[identityKey]int
}

type identityKey struct{ device, module string }

// Config holds the parts a Hub is built from.
type Config struct {
	Auth     Authenticator
	Activity ActivityRecorder
	Log      TelemetryLog
	Logger   *slog.Logger
	Now      func() time.Time
}

// New returns a Hub over the given parts.
func New(c Config) *Hub {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Hub{auth: c.Auth, activity: c.Activity, log: c.Log, logger: c.Logger, now: c.Now, connections: make(map[identityKey]int)}
}

// Origin is who sent a message and how: the authenticated identity plus connection facts
// that become stamps.
type Origin struct {
	Identity auth.DeviceIdentity
	ModelID  string // the MQTT username's model-id, stamped as dt-dataschema
}

// AuthenticateDevice checks a device's SAS token. Errors wrap auth.ErrUnauthorized.
func (h *Hub) AuthenticateDevice(ctx context.Context, deviceID, moduleID, token string) (auth.DeviceIdentity, error) {
	id, err := h.auth.AuthenticateDevice(ctx, deviceID, moduleID, token)
	if err != nil {
		return auth.DeviceIdentity{}, err
	}
	h.activity.RecordActivity(id.DeviceID, id.ModuleID, h.now())
	return id, nil
}

// Connected and Disconnected maintain the registry's connectionState for connection-oriented
// transports.
func (h *Hub) Connected(ctx context.Context, id auth.DeviceIdentity) {
	k := identityKey{id.DeviceID, id.ModuleID}
	h.mu.Lock()
	h.connections[k]++
	h.mu.Unlock()
	if err := h.activity.SetConnectionState(ctx, id.DeviceID, id.ModuleID, true, h.now()); err != nil {
		h.logger.Warn("record connection state", "device", id.DeviceID, "module", id.ModuleID, "err", err)
	}
}

// Disconnected records that a device's connection ended.
func (h *Hub) Disconnected(ctx context.Context, id auth.DeviceIdentity) {
	k := identityKey{id.DeviceID, id.ModuleID}
	h.mu.Lock()
	h.connections[k]--
	last := h.connections[k] <= 0
	if last {
		delete(h.connections, k)
	}
	h.mu.Unlock()
	if !last {
		return
	}
	if err := h.activity.SetConnectionState(ctx, id.DeviceID, id.ModuleID, false, h.now()); err != nil {
		h.logger.Warn("record connection state", "device", id.DeviceID, "module", id.ModuleID, "err", err)
	}
}

// Submit validates msg, stamps the sender's identity over anything the device claimed, and
// enqueues it for the telemetry log in the order Submit is called. The message is durable once
// the returned Pending's Wait returns nil. Validation errors wrap message.ErrInvalid or
// message.ErrTooLarge and nothing is stored.
func (h *Hub) Submit(ctx context.Context, from Origin, msgs ...*message.Message) (*telemetry.Pending, error) {
	now := h.now().UTC()
	records := make([][]byte, 0, len(msgs))
	for _, msg := range msgs {
		if err := msg.Validate(); err != nil {
			return nil, err
		}
		h.stamp(msg, from, now)
		data, err := msg.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("encode message from %s: %w", from.Identity.DeviceID, err)
		}
		records = append(records, data)
	}
	// Partitioning by device id keeps one device's messages in order (modules share the device's
	// partition, as in IoT Hub).
	p, err := h.log.Submit(ctx, from.Identity.DeviceID, now, records...)
	if err != nil {
		return nil, fmt.Errorf("submit message from %s: %w", from.Identity.DeviceID, err)
	}
	h.activity.RecordActivity(from.Identity.DeviceID, from.Identity.ModuleID, now)
	return p, nil
}

// stamp sets the anti-spoofing properties (spec 2.7).
func (h *Hub) stamp(msg *message.Message, from Origin, now time.Time) {
	id := from.Identity
	msg.ConnectionDeviceID = id.DeviceID
	msg.ConnectionModuleID = id.ModuleID
	msg.ConnectionAuthGenerationID = id.GenerationID
	msg.ConnectionAuthMethod = id.AuthMethodJSON()
	msg.DataSchema = from.ModelID
	msg.EnqueuedTime = now
	msg.Source = message.SourceTelemetry
}
