// Package api holds the JSON shapes of Tether's service API: the ones IoT Hub defines (device
// identities, error bodies) and Tether's own for reading the built-in endpoint over HTTPS.
// The server and the Go client both use them, so the two cannot drift apart.
package api

import (
	"strings"
	"time"
)

// Version is the api-version Tether's client sends; the server accepts any.
const Version = "2021-04-12"

// Event is one message read from the built-in endpoint.
type Event struct {
	DeviceID       string    `json:"deviceId"`
	ModuleID       string    `json:"moduleId,omitempty"`
	Partition      int       `json:"partition"`
	SequenceNumber int64     `json:"sequenceNumber"`
	EnqueuedTime   time.Time `json:"enqueuedTime"`
	// SystemProperties are named as the built-in endpoint names them (message-id,
	// iothub-connection-device-id, ...).
	SystemProperties map[string]string `json:"systemProperties"`
	Properties       map[string]string `json:"properties"`
	// Body is set when the body is valid UTF-8, BodyBase64 otherwise.
	Body       *string `json:"body,omitempty"`
	BodyBase64 string  `json:"bodyBase64,omitempty"`
	// Routes are the routes that matched the message when it was accepted ("$fallback" for the
	// fallback route); absent when the hub had no routes. Endpoints are where it went ("events"
	// is the built-in endpoint); both are set on the raw tap (raw=true), where Endpoints may be
	// empty: the message went nowhere.
	Routes    []string `json:"routes,omitempty"`
	Endpoints []string `json:"endpoints,omitempty"`
}

// PartitionInfo describes one partition of the built-in endpoint, like Event Hubs'
// GetPartitionProperties.
type PartitionInfo struct {
	Partition                  int       `json:"partition"`
	BeginningSequenceNumber    int64     `json:"beginningSequenceNumber"`
	LastEnqueuedSequenceNumber int64     `json:"lastEnqueuedSequenceNumber"`
	LastEnqueuedTime           time.Time `json:"lastEnqueuedTimeUtc"`
	IsEmpty                    bool      `json:"isEmpty"`
}

// Device is a device identity as IoT Hub's registry API returns it.
type Device struct {
	DeviceID                   string          `json:"deviceId"`
	GenerationID               string          `json:"generationId,omitempty"`
	ETag                       string          `json:"etag,omitempty"`
	Status                     string          `json:"status,omitempty"`
	StatusReason               *string         `json:"statusReason"`
	StatusUpdatedTime          time.Time       `json:"statusUpdatedTime"`
	ConnectionState            string          `json:"connectionState,omitempty"`
	ConnectionStateUpdatedTime time.Time       `json:"connectionStateUpdatedTime"`
	LastActivityTime           time.Time       `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int             `json:"cloudToDeviceMessageCount"`
	Authentication             *Authentication `json:"authentication,omitempty"`
	Capabilities               *Capabilities   `json:"capabilities,omitempty"`
	// Tags are the device twin's tags, read by routes and enrichments as $twin.tags (a Tether
	// extension of the identity; IoT Hub keeps them in the twin).
	Tags map[string]any `json:"tags,omitempty"`
}

// Authentication is an identity's credentials.
type Authentication struct {
	Type           string          `json:"type"`
	SymmetricKey   *SymmetricKey   `json:"symmetricKey,omitempty"`
	X509Thumbprint *X509Thumbprint `json:"x509Thumbprint,omitempty"`
}

// SymmetricKey holds SAS keys, base64.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// X509Thumbprint holds certificate thumbprints for self-signed X.509 devices.
type X509Thumbprint struct {
	PrimaryThumbprint   *string `json:"primaryThumbprint"`
	SecondaryThumbprint *string `json:"secondaryThumbprint"`
}

// Capabilities of a device.
type Capabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// ErrorBody is IoT Hub's error response: Message carries "ErrorCode:<Name>;<text>", the form
// every SDK parses.
type ErrorBody struct {
	Message          string `json:"Message"`
	ExceptionMessage string `json:"ExceptionMessage,omitempty"`
}

// NewErrorBody formats an IoT Hub error body.
func NewErrorBody(code, text string) ErrorBody {
	return ErrorBody{Message: "ErrorCode:" + code + ";" + text, ExceptionMessage: text}
}

// Code returns the error code name in the body, or "" when the body is not in that form.
func (e ErrorBody) Code() string {
	rest, ok := strings.CutPrefix(e.Message, "ErrorCode:")
	if !ok {
		return ""
	}
	code, _, _ := strings.Cut(rest, ";")
	return code
}

// Text returns the human part of the error.
func (e ErrorBody) Text() string {
	if e.ExceptionMessage != "" {
		return e.ExceptionMessage
	}
	if _, text, ok := strings.Cut(e.Message, ";"); ok {
		return text
	}
	return e.Message
}
