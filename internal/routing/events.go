package routing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/registry"
)

// Hub events (spec 8.6): the messages the hub generates for DeviceLifecycleEvents and
// DeviceConnectionStateEvents routes.
const (
	SchemaLifecycle       = "deviceLifecycleNotification"
	SchemaConnectionState = "deviceConnectionStateNotification"

	OpCreateDevice = "createDeviceIdentity"
	OpDeleteDevice = "deleteDeviceIdentity"
	OpCreateModule = "createModuleIdentity"
	OpDeleteModule = "deleteModuleIdentity"
	OpConnected    = "deviceConnected"
	OpDisconnected = "deviceDisconnected"
)

// operationTimeLayout is IoT Hub's rendering of operationTimestamp (seven fractional digits).
const operationTimeLayout = "2006-01-02T15:04:05.0000000Z"

// Publisher stores a hub event; the hub routes it again and appends it only when some endpoint
// receives it.
type Publisher interface {
	Publish(ctx context.Context, m *message.Message) error
}

// Events turns registry changes and connection changes into hub events and publishes them,
// but only while some enabled route takes their source: otherwise they cost nothing.
//
// Differences from IoT Hub: connection state events are published on every change of an
// identity's state (first connection up, last connection down), without IoT Hub's 60-second
// snapshotting and without waiting for the device's first publish or subscribe; their sequence
// numbers are strictly increasing within one data directory as long as the clock does not go
// back across a restart.
type Events struct {
	Router    *Router
	Publisher Publisher
	Logger    *slog.Logger
	Now       func() time.Time

	mu      sync.Mutex
	lastSeq uint64
}

func (e *Events) now() time.Time {
	if e.Now != nil {
		return e.Now().UTC()
	}
	return time.Now().UTC()
}

func (e *Events) publish(m *message.Message) {
	if err := e.Publisher.Publish(context.Background(), m); err != nil && e.Logger != nil {
		e.Logger.Warn("publish hub event", "source", m.Source, "device", m.ConnectionDeviceID, "module", m.ConnectionModuleID, "err", err)
	}
}

// RegistryChanged is a registry.OnChange hook: device and module creation and deletion become
// DeviceLifecycleEvents.
func (e *Events) RegistryChanged(ev registry.ChangeEvent) {
	if ev.Op != registry.Created && ev.Op != registry.Deleted {
		return
	}
	if !e.Router.Wants(SourceDeviceLifecycleEvents) {
		return
	}
	e.publish(LifecycleEvent(e.Router.HubName(), ev, e.now()))
}

// ConnectionChanged publishes a DeviceConnectionStateEvents event for an identity whose
// connection state changed.
func (e *Events) ConnectionChanged(deviceID, moduleID string, connected bool) {
	if !e.Router.Wants(SourceDeviceConnectionStateEvents) {
		return
	}
	now := e.now()
	e.mu.Lock()
	seq := uint64(now.UnixNano())
	if seq <= e.lastSeq {
		seq = e.lastSeq + 1
	}
	e.lastSeq = seq
	e.mu.Unlock()
	e.publish(ConnectionStateEvent(e.Router.HubName(), deviceID, moduleID, connected, seq, now))
}

// hubEvent builds the common part of a hub event (spec 8.6).
func hubEvent(hubName, source, schema, op, deviceID, moduleID string, now time.Time, body []byte) *message.Message {
	m := &message.Message{
		CorrelationID:      newCorrelationID(),
		UserID:             hubName,
		ContentType:        "application/json",
		ContentEncoding:    "utf-8",
		ConnectionDeviceID: deviceID,
		ConnectionModuleID: moduleID,
		EnqueuedTime:       now,
		Source:             source,
		Body:               body,
	}
	m.SetProperty("deviceId", deviceID)
	if moduleID != "" {
		m.SetProperty("moduleId", moduleID)
	}
	m.SetProperty("hubName", hubName)
	m.SetProperty("iothub-message-schema", schema)
	m.SetProperty("opType", op)
	m.SetProperty("operationTimestamp", now.Format(operationTimeLayout))
	return m
}

// LifecycleEvent builds the DeviceLifecycleEvents message for a registry change (Created or
// Deleted). Its body is the identity in twin form, without keys.
func LifecycleEvent(hubName string, ev registry.ChangeEvent, now time.Time) *message.Message {
	op := OpCreateDevice
	switch {
	case ev.Module != nil && ev.Op == registry.Deleted:
		op = OpDeleteModule
	case ev.Module != nil:
		op = OpCreateModule
	case ev.Op == registry.Deleted:
		op = OpDeleteDevice
	}
	body, _ := json.Marshal(identityTwin(ev))
	return hubEvent(hubName, message.SourceDeviceLifecycleEvents, SchemaLifecycle, op, ev.DeviceID, ev.ModuleID, now, body)
}

// ConnectionStateEvent builds the DeviceConnectionStateEvents message; seq becomes the body's
// sequenceNumber, 64 hexadecimal digits that compare as strings in the order of seq.
func ConnectionStateEvent(hubName, deviceID, moduleID string, connected bool, seq uint64, now time.Time) *message.Message {
	op := OpDisconnected
	if connected {
		op = OpConnected
	}
	body := fmt.Appendf(nil, `{"sequenceNumber":"%064X"}`, seq)
	return hubEvent(hubName, message.SourceDeviceConnectionStateEvents, SchemaConnectionState, op, deviceID, moduleID, now, body)
}

// twinIdentity is the twin-like body of lifecycle events: the identity's twin as IoT Hub shows
// it, with the tags Tether keeps and empty desired and reported properties.
type twinIdentity struct {
	DeviceID                  string             `json:"deviceId"`
	ModuleID                  string             `json:"moduleId,omitempty"`
	ETag                      string             `json:"etag"`
	DeviceETag                string             `json:"deviceEtag,omitempty"`
	Status                    string             `json:"status,omitempty"`
	StatusUpdateTime          time.Time          `json:"statusUpdateTime"`
	ConnectionState           string             `json:"connectionState"`
	LastActivityTime          time.Time          `json:"lastActivityTime"`
	CloudToDeviceMessageCount int                `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string             `json:"authenticationType"`
	X509Thumbprint            map[string]*string `json:"x509Thumbprint"`
	Capabilities              *struct {
		IoTEdge bool `json:"iotEdge"`
	} `json:"capabilities,omitempty"`
	Version    int            `json:"version"`
	Tags       map[string]any `json:"tags,omitempty"`
	Properties map[string]any `json:"properties"`
}

func identityTwin(ev registry.ChangeEvent) twinIdentity {
	props := map[string]any{
		"desired":  map[string]any{"$metadata": map[string]any{}, "$version": 1},
		"reported": map[string]any{"$metadata": map[string]any{}, "$version": 1},
	}
	thumb := func(p, s string) map[string]*string {
		return map[string]*string{"primaryThumbprint": nullable(p), "secondaryThumbprint": nullable(s)}
	}
	if m := ev.Module; m != nil {
		return twinIdentity{
			DeviceID: m.DeviceID, ModuleID: m.ModuleID, ETag: m.ETag, DeviceETag: ev.Device.ETag,
			ConnectionState: string(m.ConnectionState), LastActivityTime: m.LastActivityTime,
			CloudToDeviceMessageCount: m.CloudToDeviceMessageCount,
			AuthenticationType:        string(m.Authentication.Type),
			X509Thumbprint:            thumb(m.Authentication.X509Thumbprint.PrimaryThumbprint, m.Authentication.X509Thumbprint.SecondaryThumbprint),
			Version:                   1, Properties: props,
		}
	}
	d := ev.Device
	t := twinIdentity{
		DeviceID: d.DeviceID, ETag: d.ETag, DeviceETag: d.ETag, Status: string(d.Status),
		StatusUpdateTime: d.StatusUpdatedTime, ConnectionState: string(d.ConnectionState),
		LastActivityTime: d.LastActivityTime, CloudToDeviceMessageCount: d.CloudToDeviceMessageCount,
		AuthenticationType: string(d.Authentication.Type),
		X509Thumbprint:     thumb(d.Authentication.X509Thumbprint.PrimaryThumbprint, d.Authentication.X509Thumbprint.SecondaryThumbprint),
		Version:            1, Tags: d.Tags, Properties: props,
	}
	t.Capabilities = &struct {
		IoTEdge bool `json:"iotEdge"`
	}{d.Capabilities.IoTEdge}
	return t
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// newCorrelationID is unique per event (spec 8.6), in the GUID form IoT Hub uses.
func newCorrelationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
