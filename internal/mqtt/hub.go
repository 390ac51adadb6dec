package mqtt

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/tetherhub/tether/internal/message"
)

// Hub is what the MQTT endpoint needs from the hub. Policy (who may connect, message rules,
// storage) lives there, not here.
type Hub interface {
	// Connect authenticates a new device connection. Any error refuses it with CONNACK 0x05 (not
	// authorized), except errors.Is(err, ErrServerUnavailable), which gives 0x03. Password is
	// empty for X.509 (the certificate chain is in PeerCertificates).
	Connect(ctx context.Context, req ConnectRequest) (Device, error)
}

// ConnectRequest is a CONNECT as the hub needs it to decide.
type ConnectRequest struct {
	ClientID, Username, Password string
	// DeviceID and ModuleID are parsed from the username; the client id names the same identity.
	DeviceID, ModuleID string
	// Username query parameters: model-id, api-version and DeviceClientType, percent-decoded.
	ModelID, APIVersion, ClientType string
	PeerCertificates                []*x509.Certificate
	RemoteAddr                      net.Addr
	Transport                       string // "mqtt" or "mqtt-ws"
}

// Device is one authenticated connection as the hub sees it.
type Device interface {
	DeviceID() string
	ModuleID() string
	// Expiry is when the credentials expire (zero = never); the server closes the connection
	// then, as IoT Hub does.
	Expiry() time.Time
	// Submit validates and stamps msg and enqueues it for durable storage in arrival order; the
	// returned Receipt's Wait reports when it is durable. A validation error (message.ErrTooLarge
	// or message.ErrInvalid, wrapped) is returned at once. msg, its Body, its strings and its
	// Properties are the server's again once Submit returns (they point into the connection's
	// read buffer, and the message is reused for the next PUBLISH): Submit must copy (encode)
	// whatever it keeps.
	Submit(ctx context.Context, msg *message.Message) (Receipt, error)
	// Disconnected is called exactly once when the connection ends (graceful=true after a
	// DISCONNECT packet).
	Disconnected(graceful bool)
}

// Receipt reports when a submitted message is durable. Wait may be called more than once, and
// with a context that is already done it must not block: it then returns nil if the message is
// durable by now, else the context's error. The server relies on that to acknowledge every
// message that is already durable in one write.
type Receipt interface {
	Wait(ctx context.Context) error
}

// C2DListener is the seam for cloud-to-device delivery: a Device that also implements it is
// told when the device subscribes to its devicebound topic (after the SUBACK is on the wire, so
// a delivery can never overtake it) and when it unsubscribes. out is valid until Disconnected
// returns; after that its Publish fails with ErrConnectionClosed. Both calls come from the
// connection's reader goroutine and must not block.
type C2DListener interface {
	C2DSubscribed(out Outbound)
	C2DUnsubscribed()
}

// Outbound publishes to one connected device.
type Outbound interface {
	// Publish sends payload on topic (the caller builds it, e.g. with EncodeBag) with the QoS
	// the device subscribed with, at most 1. With QoS 1, acked runs exactly once: with nil when
	// the device's PUBACK arrives (for IoT Hub, the message is complete) or with
	// ErrConnectionClosed when the connection ends first. With QoS 0 it runs with nil once the
	// packet is written. acked runs on a connection goroutine and must not block. An error means
	// nothing was sent and acked will not run.
	Publish(ctx context.Context, topic string, payload []byte, acked func(error)) error
}

// ErrServerUnavailable, returned by Hub.Connect, refuses a connection with CONNACK 0x03.
var ErrServerUnavailable = errors.New("server unavailable")

// ErrConnectionClosed reports that a connection ended before an outbound publish was
// acknowledged, or that it had already ended.
var ErrConnectionClosed = errors.New("mqtt: connection closed")

// ErrNotSubscribed is returned by Outbound.Publish while the device has no C2D subscription.
var ErrNotSubscribed = errors.New("mqtt: device is not subscribed to cloud-to-device messages")

// Options configure a Server. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger // default slog.Default()
	// MaxPacketSize bounds a packet's remaining length; a larger packet closes the connection.
	// Default 512 KiB: IoT Hub's 256 KiB message limit is enforced by the hub on the decoded
	// message, this only bounds memory.
	MaxPacketSize int
	// MaxInflight is how many QoS 1 publishes per connection may await durability before the
	// server stops reading from it. Default 64.
	MaxInflight int
	// KeepAliveCap caps 1.5 × the client's keep-alive (and replaces keep-alive 0). Default 1767 s.
	KeepAliveCap time.Duration
	// ConnectTimeout bounds the TLS handshake plus the arrival of CONNECT and the hub's decision.
	// Default 30 s.
	ConnectTimeout time.Duration
	// WriteTimeout bounds each write to a device, so a stuck client cannot pin a goroutine, and
	// how long a connection whose credentials expired may take to drain its PUBACKs. Default 10 s.
	WriteTimeout time.Duration
	// Now is the clock for credential expiry. Default time.Now.
	Now func() time.Time
	// ParkAfter is how long a connection served by Server.Serve may wait for its next packet
	// before it gives up its goroutine and read buffer until the socket is readable again
	// (Linux; TCP and TLS over TCP). Default 2 s; negative: never.
	ParkAfter time.Duration
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxPacketSize <= 0 {
		o.MaxPacketSize = 512 << 10
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = 64
	}
	if o.KeepAliveCap <= 0 {
		o.KeepAliveCap = 1767 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ParkAfter == 0 {
		o.ParkAfter = 2 * time.Second
	}
	return o
}
