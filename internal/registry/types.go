package registry

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/tetherhub/tether/internal/auth"
)

// Status is a device's status.
type Status string

// Device statuses (lower-case in JSON, as IoT Hub sends them).
const (
	StatusEnabled  Status = "enabled"
	StatusDisabled Status = "disabled"
)

// ConnectionState is maintained for MQTT and AMQP connections only.
type ConnectionState string

// Connection states.
const (
	Connected    ConnectionState = "Connected"
	Disconnected ConnectionState = "Disconnected"
)

// AuthType is how an identity authenticates.
type AuthType string

// Authentication types.
const (
	AuthSAS                  AuthType = "sas"
	AuthSelfSigned           AuthType = "selfSigned"
	AuthCertificateAuthority AuthType = "certificateAuthority"
	AuthNone                 AuthType = "none"
)

// Device is a device identity; its JSON is IoT Hub's (spec 6.1). Zero
// times encode as "0001-01-01T00:00:00Z" like IoT Hub's; empty
// statusReason, keys and thumbprints encode as null.
type Device struct {
	DeviceID                   string          `json:"deviceId"`
	GenerationID               string          `json:"generationId"`
	ETag                       string          `json:"etag"`
	Status                     Status          `json:"status"`
	StatusReason               string          `json:"statusReason"`
	StatusUpdatedTime          time.Time       `json:"statusUpdatedTime"`
	ConnectionState            ConnectionState `json:"connectionState"`
	ConnectionStateUpdatedTime time.Time       `json:"connectionStateUpdatedTime"`
	LastActivityTime           time.Time       `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int             `json:"cloudToDeviceMessageCount"`
	Authentication             Authentication  `json:"authentication"`
	Capabilities               Capabilities    `json:"capabilities"`
	DeviceScope                string          `json:"deviceScope,omitempty"`
	ParentScopes               []string        `json:"parentScopes,omitempty"`
	// Tags are the device twin's tags (Tether keeps no other twin state): route conditions
	// and enrichments read them as $twin.tags. On update, absent (null) tags are kept and an
	// empty object clears them.
	Tags map[string]any `json:"tags,omitempty"`
}

// MaxTagsSize is IoT Hub's limit for a twin's tags (spec 11.3), as JSON.
const MaxTagsSize = 8 * 1024

// validateTags bounds tags like IoT Hub.
func validateTags(tags map[string]any) error {
	if len(tags) == 0 {
		return nil
	}
	b, err := json.Marshal(tags)
	if err != nil {
		return fmt.Errorf("%w: tags: %v", ErrInvalidArgument, err)
	}
	if len(b) > MaxTagsSize {
		return fmt.Errorf("%w: tags are %d bytes of JSON, the limit is %d", ErrInvalidArgument, len(b), MaxTagsSize)
	}
	return nil
}

// MarshalJSON writes an empty statusReason as null, as IoT Hub does.
func (d Device) MarshalJSON() ([]byte, error) {
	type plain Device // no methods: avoids recursion
	return json.Marshal(struct {
		plain
		StatusReason *string `json:"statusReason"`
	}{plain(d), nullable(d.StatusReason)})
}

// Module is a module identity. Modules have no status of their own.
type Module struct {
	ModuleID                   string          `json:"moduleId"`
	DeviceID                   string          `json:"deviceId"`
	GenerationID               string          `json:"generationId"`
	ETag                       string          `json:"etag"`
	ManagedBy                  string          `json:"managedBy"`
	ConnectionState            ConnectionState `json:"connectionState"`
	ConnectionStateUpdatedTime time.Time       `json:"connectionStateUpdatedTime"`
	LastActivityTime           time.Time       `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int             `json:"cloudToDeviceMessageCount"`
	Authentication             Authentication  `json:"authentication"`
}

// MarshalJSON writes an empty managedBy as null.
func (m Module) MarshalJSON() ([]byte, error) {
	type plain Module
	return json.Marshal(struct {
		plain
		ManagedBy *string `json:"managedBy"`
	}{plain(m), nullable(m.ManagedBy)})
}

// Authentication is an identity's credentials.
type Authentication struct {
	Type           AuthType       `json:"type"`
	SymmetricKey   SymmetricKey   `json:"symmetricKey"`
	X509Thumbprint X509Thumbprint `json:"x509Thumbprint"`
}

// SymmetricKey holds base64 SAS keys.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// MarshalJSON writes empty keys as null.
func (k SymmetricKey) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		PrimaryKey   *string `json:"primaryKey"`
		SecondaryKey *string `json:"secondaryKey"`
	}{nullable(k.PrimaryKey), nullable(k.SecondaryKey)})
}

// X509Thumbprint holds certificate thumbprints for selfSigned identities.
type X509Thumbprint struct {
	PrimaryThumbprint   string `json:"primaryThumbprint"`
	SecondaryThumbprint string `json:"secondaryThumbprint"`
}

// MarshalJSON writes empty thumbprints as null.
func (t X509Thumbprint) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		PrimaryThumbprint   *string `json:"primaryThumbprint"`
		SecondaryThumbprint *string `json:"secondaryThumbprint"`
	}{nullable(t.PrimaryThumbprint), nullable(t.SecondaryThumbprint)})
}

// Capabilities of a device.
type Capabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// Stats is the body of GET /statistics/devices.
type Stats struct {
	TotalDeviceCount    int `json:"totalDeviceCount"`
	EnabledDeviceCount  int `json:"enabledDeviceCount"`
	DisabledDeviceCount int `json:"disabledDeviceCount"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// normalizeAuth validates a, defaults its type to sas and fills keys.
// For sas, an empty key keeps the one in prev (the stored identity on
// update) or, if there is none, gets a fresh one: the service SDKs send
// empty keys to mean "hub, generate them", and an update that does not
// mention keys must not rotate them. Other types carry no keys.
func normalizeAuth(a *Authentication, prev *Authentication) error {
	if a.Type == "" {
		a.Type = AuthSAS
	}
	switch a.Type {
	case AuthSAS:
		a.X509Thumbprint = X509Thumbprint{}
		for _, k := range []struct {
			key  *string
			prev string
		}{{&a.SymmetricKey.PrimaryKey, prev.SymmetricKey.PrimaryKey}, {&a.SymmetricKey.SecondaryKey, prev.SymmetricKey.SecondaryKey}} {
			if *k.key == "" && prev.Type == AuthSAS {
				*k.key = k.prev
			}
			if *k.key == "" {
				var err error
				if *k.key, err = auth.NewKey(); err != nil {
					return err
				}
				continue
			}
			if err := validateKey(*k.key); err != nil {
				return err
			}
		}
	case AuthSelfSigned:
		a.SymmetricKey = SymmetricKey{}
		if a.X509Thumbprint.PrimaryThumbprint == "" {
			return fmt.Errorf("%w: selfSigned authentication needs a primary thumbprint", ErrInvalidArgument)
		}
	case AuthCertificateAuthority, AuthNone:
		a.SymmetricKey = SymmetricKey{}
		a.X509Thumbprint = X509Thumbprint{}
	default:
		return fmt.Errorf("%w: authentication type %q", ErrInvalidArgument, a.Type)
	}
	return nil
}

// validateKey requires standard base64 of 16-64 bytes (the commonly cited
// IoT Hub rule; spec 6.1 marks the bounds unconfirmed). Anything else could
// never verify a token.
func validateKey(k string) error {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil || len(b) < 16 || len(b) > 64 {
		return fmt.Errorf("%w: symmetric keys must be base64 of 16-64 bytes", ErrInvalidArgument)
	}
	return nil
}

// normalizeStatus lower-cases s; "" becomes def.
func normalizeStatus(s, def Status) (Status, error) {
	switch Status(strings.ToLower(string(s))) {
	case "":
		return def, nil
	case StatusEnabled:
		return StatusEnabled, nil
	case StatusDisabled:
		return StatusDisabled, nil
	}
	return "", fmt.Errorf("%w: status %q is not enabled or disabled", ErrInvalidArgument, s)
}
