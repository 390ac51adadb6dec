package c2d

import (
	"fmt"
	"strings"
	"time"
)

// AckMode is the feedback a sender asked for (iothub-ack, spec 2.3).
type AckMode string

// Ack modes.
const (
	AckNone     AckMode = "none"     // no feedback
	AckPositive AckMode = "positive" // feedback when completed
	AckNegative AckMode = "negative" // feedback when dead-lettered or purged
	AckFull     AckMode = "full"     // both
)

// ParseAck parses an iothub-ack value, ignoring case; "" is AckNone. Errors wrap ErrInvalid.
func ParseAck(s string) (AckMode, error) {
	switch strings.ToLower(s) {
	case "", "none":
		return AckNone, nil
	case "positive":
		return AckPositive, nil
	case "negative":
		return AckNegative, nil
	case "full":
		return AckFull, nil
	}
	return "", fmt.Errorf("%w: iothub-ack %q is not none, positive, negative or full", ErrInvalid, s)
}

// wants reports whether a message with this ack mode produces feedback with status st.
func (a AckMode) wants(st FeedbackStatus) bool {
	switch a {
	case AckFull:
		return true
	case AckPositive:
		return st == StatusSuccess
	case AckNegative:
		return st != StatusSuccess
	}
	return false
}

// AckProperty is the application-property name IoT Hub carries the ack mode in.
const AckProperty = "iothub-ack"

// Message is one cloud-to-device message. On Send the caller sets the user-settable fields
// (MessageID, CorrelationID, UserID, ContentType, ContentEncoding, ExpiryTime, Ack,
// Properties, Body); the store assigns the rest.
type Message struct {
	SequenceNumber  uint64 // per device, increasing, never reused
	MessageID       string
	CorrelationID   string
	UserID          string
	To              string // /devices/{id}/messages/devicebound
	ContentType     string
	ContentEncoding string
	ExpiryTime      time.Time // absolute; zero on Send means now + DefaultTTL
	Ack             AckMode   // "" on Send means AckNone
	Properties      map[string]string
	Body            []byte

	EnqueuedTime  time.Time
	DeliveryCount int       // explicit abandons so far
	LockToken     string    // set by Receive
	LockedUntil   time.Time // set by Receive
}

// Size is the message size as IoT Hub counts it (spec 2.6): body bytes, plus the values of
// the string system properties the sender sets (message id, correlation id, user id, content
// type and encoding, and the ack mode unless none), plus application property names and
// values. The hub-set "to" and the binary expiry time are not counted.
func (m *Message) Size() int {
	n := len(m.Body) + len(m.MessageID) + len(m.CorrelationID) + len(m.UserID) +
		len(m.ContentType) + len(m.ContentEncoding)
	if m.Ack != "" && m.Ack != AckNone {
		n += len(m.Ack)
	}
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}

// normalize validates a message for Send and fills the defaults that do not depend on time.
// Errors wrap ErrInvalid or ErrTooLarge.
func (m *Message) normalize() error {
	ack, err := ParseAck(string(m.Ack))
	if err != nil {
		return err
	}
	// A caller translating AMQP may pass iothub-ack as an application property (where IoT Hub
	// carries it); take it from there rather than delivering it to the device.
	for k, v := range m.Properties {
		if !strings.EqualFold(k, AckProperty) {
			continue
		}
		pa, err := ParseAck(v)
		if err != nil {
			return err
		}
		if m.Ack != "" && pa != ack {
			return fmt.Errorf("%w: Ack %q conflicts with property %s=%q", ErrInvalid, m.Ack, k, v)
		}
		ack = pa
		props := make(map[string]string, len(m.Properties)-1)
		for k2, v2 := range m.Properties {
			if k2 != k {
				props[k2] = v2
			}
		}
		m.Properties = props
		break
	}
	m.Ack = ack
	if size := m.Size(); size > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, size, MaxMessageSize)
	}
	if err := validateID("message-id", m.MessageID); err != nil {
		return err
	}
	if len(m.CorrelationID) > maxIDLength {
		return fmt.Errorf("%w: correlation-id is longer than %d characters", ErrInvalid, maxIDLength)
	}
	for k, v := range m.Properties {
		if k == "" {
			return fmt.Errorf("%w: application property with an empty name", ErrInvalid)
		}
		if c, ok := firstNonToken(k); !ok {
			return fmt.Errorf("%w: application property name %q contains %q", ErrInvalid, k, c)
		}
		if c, ok := firstNonToken(v); !ok {
			return fmt.Errorf("%w: application property %s value contains %q", ErrInvalid, k, c)
		}
	}
	if len(m.Properties) == 0 {
		m.Properties = nil
	}
	return nil
}

const maxIDLength = 128

// validateID checks IoT Hub's message-id rule (spec 2.5): at most 128 ASCII alphanumerics and
// - : . + % _ # * ? ! ( ) , = @ ; $ '. An empty id is allowed; feedback then cannot be
// correlated, which is the sender's choice.
func validateID(what, id string) error {
	if len(id) > maxIDLength {
		return fmt.Errorf("%w: %s is longer than %d characters", ErrInvalid, what, maxIDLength)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if isAlnum(c) || strings.IndexByte("-:.+%_#*?!(),=@;$'", c) >= 0 {
			continue
		}
		return fmt.Errorf("%w: %s contains %q, which IoT Hub does not allow", ErrInvalid, what, c)
	}
	return nil
}

// firstNonToken returns the first byte of s outside the RFC 7230 tchar set, which IoT Hub
// requires of C2D property names and values (spec 2.5).
func firstNonToken(s string) (byte, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || strings.IndexByte("!#$%&'*+-.^_|~`", c) >= 0 {
			continue
		}
		return c, false
	}
	return 0, true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// DeviceboundPath is the "to" the hub sets on a device's C2D messages.
func DeviceboundPath(deviceID string) string {
	return "/devices/" + deviceID + "/messages/devicebound"
}
