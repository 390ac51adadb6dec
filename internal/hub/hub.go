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

// Router makes the routing decision stored with each message (package routing). A nil
// decision means the built-in endpoint only; one without endpoints means no endpoint.
type Router interface {
	Route(msg *message.Message) *message.Routing
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
	router   Router
	onConn   func(deviceID, moduleID string, connected bool)

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
	// Router decides where messages go; nil sends everything to the built-in endpoint.
	Router Router
	// OnConnectionChange is told when an identity's first connection comes up and its last one
	// goes down (DeviceConnectionStateEvents); nil = nobody.
	OnConnectionChange func(deviceID, moduleID string, connected bool)
}

// New returns a Hub over the given parts.
func New(c Config) *Hub {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Hub{auth: c.Auth, activity: c.Activity, log: c.Log, logger: c.Logger, now: c.Now, router: c.Router,
		onConn: c.OnConnectionChange, connections: make(map[identityKey]int)}
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
	first := h.connections[k] == 1
	h.mu.Unlock()
	if err := h.activity.SetConnectionState(ctx, id.DeviceID, id.ModuleID, true, h.now()); err != nil {
		h.logger.Warn("record connection state", "device", id.DeviceID, "module", id.ModuleID, "err", err)
	}
	if first && h.onConn != nil {
		h.onConn(id.DeviceID, id.ModuleID, true)
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
	if h.onConn != nil {
		h.onConn(id.DeviceID, id.ModuleID, false)
	}
}

// Submit validates msg, stamps the sender's identity over anything the device claimed, and
// enqueues it for the telemetry log in the order Submit is called. The message is durable once
// the returned Pending's Wait returns nil. Validation errors wrap message.ErrInvalid or
// message.ErrTooLarge and nothing is stored. The routing decision is made here, once, and
// stored with the message; a message routed to no endpoint is still stored (and acknowledged).
func (h *Hub) Submit(ctx context.Context, from Origin, msgs ...*message.Message) (*telemetry.Pending, error) {
	now := h.now().UTC()
	records := make([][]byte, 0, len(msgs))
	for _, msg := range msgs {
		if err := msg.Validate(); err != nil {
			return nil, err
		}
		h.stamp(msg, from, now)
		if h.router != nil {
			msg.Routing = h.router.Route(msg)
		}
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

// Publish routes a message the hub generated (a hub event, spec 8.6: Source, identity and
// enqueued time already set) and enqueues it for the telemetry log in the identity's partition,
// only if some endpoint receives it. It does not wait for durability.
func (h *Hub) Publish(ctx context.Context, msg *message.Message) error {
	if h.router != nil {
		msg.Routing = h.router.Route(msg)
		if msg.Routing != nil && len(msg.Routing.Endpoints) == 0 {
			return nil
		}
	}
	if msg.EnqueuedTime.IsZero() {
		msg.EnqueuedTime = h.now().UTC()
	}
	data, err := msg.MarshalBinary()
	if err != nil {
		return fmt.Errorf("encode %s event for %s: %w", msg.Source, msg.ConnectionDeviceID, err)
	}
	if _, err := h.log.Submit(ctx, msg.ConnectionDeviceID, msg.EnqueuedTime, data); err != nil {
		return fmt.Errorf("submit %s event for %s: %w", msg.Source, msg.ConnectionDeviceID, err)
	}
	return nil
}

// stamp sets the anti-spoofing properties (spec 2.7).
func (h *Hub) stamp(msg *message.Message, from Origin, now time.Time) {
	id := from.Identity
	msg.ConnectionDeviceID = id.DeviceID
	msg.ConnectionModuleID = id.ModuleID
	msg.ConnectionAuthGenerationID = id.GenerationID
	msg.ConnectionAuthMethod = authMethodJSON(id)
	msg.DataSchema = from.ModelID
	msg.EnqueuedTime = now
	msg.Source = message.SourceTelemetry
}

// The auth-method stamps of SAS identities: built once, not for every message.
var (
	sasDeviceAuthMethod = auth.DeviceIdentity{Scope: "device", Type: "sas", Issuer: "iothub"}.AuthMethodJSON()
	sasModuleAuthMethod = auth.DeviceIdentity{Scope: "module", Type: "sas", Issuer: "iothub"}.AuthMethodJSON()
	sasHubAuthMethod    = auth.DeviceIdentity{Scope: "hub", Type: "sas", Issuer: "iothub"}.AuthMethodJSON()
)

// authMethodJSON is id.AuthMethodJSON() without an allocation (or a map lookup) for the usual
// identities.
func authMethodJSON(id auth.DeviceIdentity) string {
	if id.Type == "sas" && id.Issuer == "iothub" {
		switch id.Scope {
		case "device":
			return sasDeviceAuthMethod
		case "module":
			return sasModuleAuthMethod
		case "hub":
			return sasHubAuthMethod
		}
	}
	return id.AuthMethodJSON()
}
