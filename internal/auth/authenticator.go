package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// IdentityStore looks up device and module credentials. The registry
// implements it. For a device or module that does not exist it returns an
// error matching ErrUnknownIdentity.
type IdentityStore interface {
	DeviceCredentials(ctx context.Context, deviceID, moduleID string) (Credentials, error)
}

// Credentials are what the Authenticator needs to know about a device or
// module. For a module, Enabled reflects the parent device's status
// (modules cannot be disabled on their own).
type Credentials struct {
	DeviceID, ModuleID, GenerationID string
	Enabled                          bool
	PrimaryKey, SecondaryKey         string
	// AuthType is "sas", "selfSigned", "certificateAuthority" or "none".
	// Only "sas" identities can use SAS tokens signed with their own keys.
	AuthType                               string
	PrimaryThumbprint, SecondaryThumbprint string
}

// PolicyStore looks up hub-level shared access policies by name.
type PolicyStore interface {
	Policy(name string) (Policy, bool)
}

// Authenticator verifies SAS tokens for device and service endpoints. Set
// the exported fields before first use; it is safe for concurrent use.
type Authenticator struct {
	Identities IdentityStore
	Policies   PolicyStore
	// HostNames are the names the hub accepts in a token's sr. Empty means
	// any host: a hub reached through a load balancer cannot know every
	// name its clients were configured with.
	HostNames []string
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	mu   sync.RWMutex
	keys map[string]*macKey // base64 key -> decoded key and HMAC pool
}

// maxCachedKeys bounds the decoded-key cache. Keys of deleted devices or
// rotated keys linger until the cache is full, then it starts over.
const maxCachedKeys = 1 << 14

// DeviceIdentity is an authenticated device or module connection.
type DeviceIdentity struct {
	DeviceID, ModuleID, GenerationID string
	// Scope is "device" or "module" for tokens signed with the identity's
	// own key and "hub" for policy tokens.
	Scope string
	// Type is "sas".
	Type string
	// Issuer is "iothub".
	Issuer string
	// Expiry is when the token expires; connections must end then.
	Expiry time.Time
}

// AuthMethodJSON returns the iothub-connection-auth-method stamp, e.g.
// {"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}.
func (d DeviceIdentity) AuthMethodJSON() string {
	// The fields come from this package's constants; no escaping needed.
	return `{"scope":"` + d.Scope + `","type":"` + d.Type + `","issuer":"` + d.Issuer + `","acceptingIpFilterRule":null}`
}

// ServicePrincipal is a caller authenticated with a hub policy token.
type ServicePrincipal struct {
	PolicyName string
	Rights     Permission
	Expiry     time.Time
}

// AuthenticateDevice checks a device-endpoint token (MQTT password, HTTPS
// Authorization header) for deviceID and, if non-empty, moduleID.
//
// A token without skn must be signed with the identity's primary or
// secondary key and its sr must cover host/devices/{id}[/modules/{mid}].
// A token with skn names a policy that must have DeviceConnect; its sr must
// cover the same target (host/devices covers every device). The identity
// must exist and be enabled; the disabled check comes after the signature
// so that unauthenticated callers learn nothing about a device's status.
//
// All refusals match ErrUnauthorized; errors that do not are internal
// (the identity store failed).
func (a *Authenticator) AuthenticateDevice(ctx context.Context, deviceID, moduleID, token string) (DeviceIdentity, error) {
	t, err := ParseToken(token)
	if err != nil {
		return DeviceIdentity{}, err
	}
	now := a.now()
	if t.expired(now) {
		return DeviceIdentity{}, fmt.Errorf("auth: device %s: %w", deviceID, ErrExpired)
	}
	if !a.covers(&t, deviceID, moduleID) {
		return DeviceIdentity{}, fmt.Errorf("auth: device %s: sr %q: %w", deviceID, t.Resource, ErrScope)
	}
	creds, err := a.Identities.DeviceCredentials(ctx, deviceID, moduleID)
	if errors.Is(err, ErrUnknownIdentity) {
		return DeviceIdentity{}, fmt.Errorf("auth: device %s: %w: %w", deviceID, ErrUnknownIdentity, ErrUnauthorized)
	}
	if err != nil {
		return DeviceIdentity{}, fmt.Errorf("auth: look up device %s: %w", deviceID, err)
	}

	id := DeviceIdentity{
		DeviceID:     deviceID,
		ModuleID:     moduleID,
		GenerationID: creds.GenerationID,
		Type:         "sas",
		Issuer:       "iothub",
		Expiry:       t.Expiry,
	}
	if t.KeyName != "" {
		p, ok := a.policy(t.KeyName)
		if !ok {
			return DeviceIdentity{}, fmt.Errorf("auth: device %s: unknown policy %q: %w", deviceID, t.KeyName, ErrUnauthorized)
		}
		if !p.Rights.Has(DeviceConnect) {
			return DeviceIdentity{}, fmt.Errorf("auth: device %s: %w", deviceID, &RightsError{Policy: p.Name, Missing: DeviceConnect})
		}
		if !a.signedByEither(&t, p.PrimaryKey, p.SecondaryKey) {
			return DeviceIdentity{}, fmt.Errorf("auth: device %s: policy %s: %w", deviceID, p.Name, ErrBadSignature)
		}
		id.Scope = "hub"
	} else {
		if creds.AuthType != "sas" && creds.AuthType != "" {
			return DeviceIdentity{}, fmt.Errorf("auth: device %s uses %s authentication, not SAS: %w", deviceID, creds.AuthType, ErrUnauthorized)
		}
		if !a.signedByEither(&t, creds.PrimaryKey, creds.SecondaryKey) {
			return DeviceIdentity{}, fmt.Errorf("auth: device %s: %w", deviceID, ErrBadSignature)
		}
		id.Scope = "device"
		if moduleID != "" {
			id.Scope = "module"
		}
	}
	if !creds.Enabled {
		return DeviceIdentity{}, fmt.Errorf("auth: device %s: %w", deviceID, ErrDeviceDisabled)
	}
	return id, nil
}

// AuthenticateService checks a hub policy token for the service API:
// skn is required and must name a policy, the signature must match its
// primary or secondary key, the token must not be expired, its sr must
// cover the hub or resource (a path such as "devices/d1"; empty for
// hub-wide operations), and the policy must have every right in need.
// Missing rights yield a *RightsError; IoT Hub answers those with 401
// IotHubUnauthorizedAccess like any other refusal, so it matches
// ErrUnauthorized too.
func (a *Authenticator) AuthenticateService(ctx context.Context, token, resource string, need Permission) (ServicePrincipal, error) {
	if err := ctx.Err(); err != nil {
		return ServicePrincipal{}, err
	}
	t, err := ParseToken(token)
	if err != nil {
		return ServicePrincipal{}, err
	}
	if t.KeyName == "" {
		return ServicePrincipal{}, fmt.Errorf("auth: service token without skn: %w", ErrUnauthorized)
	}
	p, ok := a.policy(t.KeyName)
	if !ok {
		return ServicePrincipal{}, fmt.Errorf("auth: unknown policy %q: %w", t.KeyName, ErrUnauthorized)
	}
	if t.expired(a.now()) {
		return ServicePrincipal{}, fmt.Errorf("auth: policy %s: %w", p.Name, ErrExpired)
	}
	if !a.signedByEither(&t, p.PrimaryKey, p.SecondaryKey) {
		return ServicePrincipal{}, fmt.Errorf("auth: policy %s: %w", p.Name, ErrBadSignature)
	}
	var buf [512]byte
	sr, _ := unescapeAppend(buf[:0], t.Resource) // validated by ParseToken
	host, path := splitResource(sr)
	if !hostAccepted(host, a.HostNames) || !pathCovers(path, resource) {
		return ServicePrincipal{}, fmt.Errorf("auth: policy %s: sr %q for %q: %w", p.Name, t.Resource, resource, ErrScope)
	}
	if !p.Rights.Has(need) {
		return ServicePrincipal{}, fmt.Errorf("auth: %w", &RightsError{Policy: p.Name, Missing: need &^ p.Rights})
	}
	return ServicePrincipal{PolicyName: p.Name, Rights: p.Rights, Expiry: t.Expiry}, nil
}

func (a *Authenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Authenticator) policy(name string) (Policy, bool) {
	if a.Policies == nil {
		return Policy{}, false
	}
	return a.Policies.Policy(name)
}

// covers checks the token's host and path scope for a device target
// without allocating.
func (a *Authenticator) covers(t *Token, deviceID, moduleID string) bool {
	var buf [512]byte
	sr, _ := unescapeAppend(buf[:0], t.Resource) // validated by ParseToken
	host, path := splitResource(sr)
	return hostAccepted(host, a.HostNames) && pathCoversDevice(path, deviceID, moduleID)
}

// signedByEither reports whether the token was signed by the primary or
// the secondary key. Empty or undecodable keys never match.
func (a *Authenticator) signedByEither(t *Token, primary, secondary string) bool {
	return t.signedBy(a.macKey(primary), a.macKey(secondary))
}

// macKey returns the cached decoded key, or nil if key is not valid base64.
func (a *Authenticator) macKey(key string) *macKey {
	if key == "" {
		return nil
	}
	a.mu.RLock()
	k, ok := a.keys[key]
	a.mu.RUnlock()
	if ok {
		return k
	}
	k, err := newMACKey(key)
	if err != nil {
		return nil
	}
	a.mu.Lock()
	if a.keys == nil || len(a.keys) >= maxCachedKeys {
		a.keys = make(map[string]*macKey)
	}
	a.keys[key] = k
	a.mu.Unlock()
	return k
}
