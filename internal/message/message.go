// Package message is Tether's model of a device-to-cloud message: the system properties IoT Hub
// defines, the application properties a device sets, and an opaque body. Transports translate
// their wire forms into a Message; the hub validates and stamps it; the telemetry log stores its
// binary encoding.
package message

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// MaxD2CSize is IoT Hub's limit for one device-to-cloud message, counted as Size does.
const MaxD2CSize = 256 * 1024

// MaxIDLength bounds message-id (and correlation-id) like IoT Hub.
const MaxIDLength = 128

// Sources of messages, as stamped in iothub-message-source.
const (
	SourceTelemetry = "Telemetry"
	// Hub events (spec 8.6), stamped on messages the hub itself generates.
	SourceDeviceLifecycleEvents       = "deviceLifecycleEvents"
	SourceDeviceConnectionStateEvents = "deviceConnectionStateEvents"
)

// Sentinel errors callers branch on to pick the protocol's error (HTTP status, MQTT disconnect).
var (
	ErrTooLarge = errors.New("message too large")
	ErrInvalid  = errors.New("invalid message")
)

// Message is one device-to-cloud message. The zero value is an empty message.
type Message struct {
	// System properties a device may set.
	MessageID       string
	CorrelationID   string
	UserID          string
	To              string
	ContentType     string
	ContentEncoding string
	// ExpiryTime is absolute-expiry-time as the device sent it. SDKs disagree on its format (the
	// Node HTTP transport sends Date.toString()), so it is carried, not interpreted.
	ExpiryTime    string
	CreationTime  string // iothub-creation-time-utc
	MessageSchema string
	InterfaceID   string
	ComponentName string // dt-subject
	OutputName    string // iothub-outputname, module output events

	// Properties the hub stamps; whatever a device claims for them is overwritten.
	ConnectionDeviceID         string
	ConnectionModuleID         string
	ConnectionAuthGenerationID string
	ConnectionAuthMethod       string
	DataSchema                 string // dt-dataschema, from the MQTT model-id
	EnqueuedTime               time.Time
	Source                     string // iothub-message-source

	// Properties are the application properties. Names are unique regardless of case.
	Properties map[string]string

	Body []byte

	// Routing is the routing decision made when the message was accepted; nil for messages
	// stored before any routing existed, which belong to the built-in endpoint only.
	Routing *Routing
}

// Routing records where the router sent a message. It is decided once, at ingestion, with the
// routes in force then, and stored with the message: the built-in endpoint and each custom
// endpoint's deliverer read the same log and pick what is theirs.
type Routing struct {
	// Routes are the names of the enabled routes whose condition matched ("$fallback" when only
	// the fallback route did).
	Routes []string
	// Endpoints are the endpoints the message goes to, each once; "events" is the built-in one.
	Endpoints []string
}

// BuiltInEndpoint is the name of the built-in endpoint, as in IoT Hub.
const BuiltInEndpoint = "events"

// ToEndpoint reports whether the message goes to the named endpoint.
func (m *Message) ToEndpoint(name string) bool {
	if m.Routing == nil {
		return name == BuiltInEndpoint
	}
	for _, e := range m.Routing.Endpoints {
		if e == name {
			return true
		}
	}
	return false
}

// SetProperty sets an application property. IoT Hub treats D2C property names
// case-insensitively and keeps one of a set of names that differ only by case: here the last.
func (m *Message) SetProperty(name, value string) {
	if m.Properties == nil {
		m.Properties = make(map[string]string)
	}
	for k := range m.Properties {
		if k != name && strings.EqualFold(k, name) {
			delete(m.Properties, k)
		}
	}
	m.Properties[name] = value
}

// Property is one named value, used where order matters.
type Property struct {
	Name  string
	Value string
}

// Built-in endpoint (Event Hubs) names of the system properties, spec 2.8.
const (
	NameMessageID          = "message-id"
	NameCorrelationID      = "correlation-id"
	NameUserID             = "user-id"
	NameTo                 = "to"
	NameContentType        = "content-type"
	NameContentEncoding    = "content-encoding"
	NameExpiryTime         = "absolute-expiry-time"
	NameCreationTime       = "iothub-creation-time-utc"
	NameMessageSchema      = "iothub-message-schema"
	NameInterfaceID        = "iothub-interface-id"
	NameComponentName      = "dt-subject"
	NameOutputName         = "iothub-outputname"
	NameDataSchema         = "dt-dataschema"
	NameConnectionDeviceID = "iothub-connection-device-id"
	NameConnectionModuleID = "iothub-connection-module-id"
	NameAuthGenerationID   = "iothub-connection-auth-generation-id"
	NameAuthMethod         = "iothub-connection-auth-method"
	NameEnqueuedTime       = "iothub-enqueuedtime"
	NameMessageSource      = "iothub-message-source"
)

// SystemProperties lists the set system properties under their built-in endpoint names, in a
// fixed order. The enqueued time is RFC 3339 with nanoseconds, in UTC.
func (m *Message) SystemProperties() []Property {
	all := []Property{
		{NameMessageID, m.MessageID},
		{NameCorrelationID, m.CorrelationID},
		{NameUserID, m.UserID},
		{NameTo, m.To},
		{NameContentType, m.ContentType},
		{NameContentEncoding, m.ContentEncoding},
		{NameExpiryTime, m.ExpiryTime},
		{NameCreationTime, m.CreationTime},
		{NameMessageSchema, m.MessageSchema},
		{NameInterfaceID, m.InterfaceID},
		{NameComponentName, m.ComponentName},
		{NameOutputName, m.OutputName},
		{NameDataSchema, m.DataSchema},
		{NameConnectionDeviceID, m.ConnectionDeviceID},
		{NameConnectionModuleID, m.ConnectionModuleID},
		{NameAuthGenerationID, m.ConnectionAuthGenerationID},
		{NameAuthMethod, m.ConnectionAuthMethod},
		{NameMessageSource, m.Source},
	}
	out := all[:0]
	for _, p := range all {
		if p.Value != "" {
			out = append(out, p)
		}
	}
	if !m.EnqueuedTime.IsZero() {
		out = append(out, Property{NameEnqueuedTime, m.EnqueuedTime.UTC().Format(time.RFC3339Nano)})
	}
	return out
}

// userSystemValues are the system properties a device supplies; they count toward Size.
func (m *Message) userSystemValues() []string {
	return []string{
		m.MessageID, m.CorrelationID, m.UserID, m.To, m.ContentType, m.ContentEncoding,
		m.ExpiryTime, m.CreationTime, m.MessageSchema, m.InterfaceID, m.ComponentName, m.OutputName,
	}
}

// Size is the message size as IoT Hub counts it (spec 2.6): body bytes, plus the values of the
// system properties the device set, plus application property names and values. Stamps the hub
// adds are not counted: a device cannot control them.
func (m *Message) Size() int {
	n := len(m.Body)
	for _, v := range m.userSystemValues() {
		n += len(v)
	}
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}

// Validate applies IoT Hub's rules for a device-to-cloud message. Errors wrap ErrTooLarge or
// ErrInvalid.
func (m *Message) Validate() error {
	// Size, with the check for an empty property name in the same pass over the properties.
	size, emptyName := len(m.Body), false
	for _, v := range m.userSystemValues() {
		size += len(v)
	}
	for k, v := range m.Properties {
		size += len(k) + len(v)
		emptyName = emptyName || k == ""
	}
	if size > MaxD2CSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, size, MaxD2CSize)
	}
	if err := validateID("message-id", m.MessageID); err != nil {
		return err
	}
	if len(m.CorrelationID) > MaxIDLength {
		return fmt.Errorf("%w: correlation-id is longer than %d characters", ErrInvalid, MaxIDLength)
	}
	if emptyName {
		return fmt.Errorf("%w: application property with an empty name", ErrInvalid)
	}
	return nil
}

// validateID checks IoT Hub's message-id rule: at most 128 ASCII alphanumerics and
// - : . + % _ # * ? ! ( ) , = @ ; $ '.
func validateID(what, id string) error {
	if len(id) > MaxIDLength {
		return fmt.Errorf("%w: %s is longer than %d characters", ErrInvalid, what, MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		if !isIDChar(id[i]) {
			return fmt.Errorf("%w: %s contains %q, which IoT Hub does not allow", ErrInvalid, what, id[i])
		}
	}
	return nil
}

func isIDChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-:.+%_#*?!(),=@;$'", c) >= 0
}

// SortedPropertyNames returns the application property names in byte order, for stable output.
func (m *Message) SortedPropertyNames() []string {
	names := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
