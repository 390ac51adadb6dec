package auth

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// Permission is a set of hub access rights (spec 5.3).
type Permission uint8

// The four IoT Hub access rights. RegistryReadWrite in the portal is
// RegistryRead|RegistryWrite in ARM.
const (
	RegistryRead Permission = 1 << iota
	RegistryWrite
	ServiceConnect
	DeviceConnect

	AllPermissions = RegistryRead | RegistryWrite | ServiceConnect | DeviceConnect
)

var permissionNames = [...]struct {
	p    Permission
	name string
}{
	{RegistryRead, "RegistryRead"},
	{RegistryWrite, "RegistryWrite"},
	{ServiceConnect, "ServiceConnect"},
	{DeviceConnect, "DeviceConnect"},
}

// String returns the ARM form, e.g. "RegistryRead, RegistryWrite". The
// empty set is "".
func (p Permission) String() string {
	var b strings.Builder
	for _, n := range permissionNames {
		if p&n.p == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n.name)
	}
	if rest := p &^ AllPermissions; rest != 0 {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "Permission(%#x)", uint8(rest))
	}
	return b.String()
}

// Has reports whether p contains every right in need.
func (p Permission) Has(need Permission) bool { return p&need == need }

// ParsePermissions parses a comma separated list of rights as ARM writes it
// ("RegistryRead, RegistryWrite"). Names are matched case-insensitively and
// the portal's "RegistryReadWrite" is accepted. An empty string is the empty
// set.
func ParsePermissions(s string) (Permission, error) {
	var p Permission
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if strings.EqualFold(part, "RegistryReadWrite") {
			p |= RegistryRead | RegistryWrite
			continue
		}
		found := false
		for _, n := range permissionNames {
			if strings.EqualFold(part, n.name) {
				p |= n.p
				found = true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("auth: parse permissions %q: unknown right %q", s, part)
		}
	}
	return p, nil
}

// MarshalText encodes p in ARM form; encoding/json and YAML use it, so a
// Permission appears as "RegistryRead, RegistryWrite" in JSON.
func (p Permission) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (p *Permission) UnmarshalText(b []byte) error {
	v, err := ParsePermissions(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Policy is a hub-level shared access policy (ARM
// SharedAccessSignatureAuthorizationRule).
type Policy struct {
	Name         string     `json:"keyName"`
	PrimaryKey   string     `json:"primaryKey"`
	SecondaryKey string     `json:"secondaryKey"`
	Rights       Permission `json:"rights"`
}

// DefaultPolicies returns the five policies every new IoT Hub has, each
// with fresh random keys.
func DefaultPolicies() ([]Policy, error) {
	ps := []Policy{
		{Name: "iothubowner", Rights: AllPermissions},
		{Name: "service", Rights: ServiceConnect},
		{Name: "device", Rights: DeviceConnect},
		{Name: "registryRead", Rights: RegistryRead},
		{Name: "registryReadWrite", Rights: RegistryRead | RegistryWrite},
	}
	for i := range ps {
		var err error
		if ps[i].PrimaryKey, err = NewKey(); err != nil {
			return nil, err
		}
		if ps[i].SecondaryKey, err = NewKey(); err != nil {
			return nil, err
		}
	}
	return ps, nil
}

// NewKey returns 32 random bytes in standard base64, the form IoT Hub uses
// for device and policy keys.
func NewKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("auth: generate key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b[:]), nil
}

// StaticPolicies is a PolicyStore over a fixed list, e.g. from the hub's
// configuration file. IoT Hub allows at most 16 policies, so a linear scan
// is fine. Policy names are case-sensitive.
type StaticPolicies []Policy

// Policy implements PolicyStore.
func (ps StaticPolicies) Policy(name string) (Policy, bool) {
	for _, p := range ps {
		if p.Name == name {
			return p, true
		}
	}
	return Policy{}, false
}
