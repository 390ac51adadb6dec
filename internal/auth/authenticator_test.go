package auth

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"
)

// fakeStore is an IdentityStore over a map keyed by "device" or
// "device/module".
type fakeStore struct {
	creds map[string]Credentials
	err   error
}

func (s *fakeStore) DeviceCredentials(_ context.Context, deviceID, moduleID string) (Credentials, error) {
	if s.err != nil {
		return Credentials{}, s.err
	}
	key := deviceID
	if moduleID != "" {
		key += "/" + moduleID
	}
	c, ok := s.creds[key]
	if !ok {
		return Credentials{}, ErrUnknownIdentity
	}
	return c, nil
}

func newTestAuthenticator(hosts ...string) *Authenticator {
	return &Authenticator{
		Identities: &fakeStore{creds: map[string]Credentials{
			"dev1":       {DeviceID: "dev1", GenerationID: "637553997165220462", Enabled: true, PrimaryKey: keyA, SecondaryKey: keyB, AuthType: "sas"},
			"dev10":      {DeviceID: "dev10", GenerationID: "2", Enabled: true, PrimaryKey: keyC, AuthType: "sas"},
			"off":        {DeviceID: "off", GenerationID: "3", Enabled: false, PrimaryKey: keyA, AuthType: "sas"},
			"x509":       {DeviceID: "x509", GenerationID: "4", Enabled: true, AuthType: "selfSigned", PrimaryThumbprint: "AB"},
			"dev1/m1":    {DeviceID: "dev1", ModuleID: "m1", GenerationID: "5", Enabled: true, PrimaryKey: keyC, AuthType: "sas"},
			"off/m1":     {DeviceID: "off", ModuleID: "m1", GenerationID: "6", Enabled: false, PrimaryKey: keyC, AuthType: "sas"},
			"Dev1":       {DeviceID: "Dev1", GenerationID: "7", Enabled: true, PrimaryKey: keyA, AuthType: "sas"},
			"nokeys":     {DeviceID: "nokeys", GenerationID: "8", Enabled: true, AuthType: "sas"},
			"a+b:c(d)$e": {DeviceID: "a+b:c(d)$e", GenerationID: "9", Enabled: true, PrimaryKey: keyA, AuthType: "sas"},
		}},
		Policies: StaticPolicies{
			{Name: "iothubowner", PrimaryKey: keyA, SecondaryKey: keyB, Rights: AllPermissions},
			{Name: "device", PrimaryKey: keyB, SecondaryKey: keyC, Rights: DeviceConnect},
			{Name: "service", PrimaryKey: keyC, Rights: ServiceConnect},
			{Name: "registryRead", PrimaryKey: keyC, Rights: RegistryRead},
		},
		HostNames: hosts,
		Now:       func() time.Time { return beforeExp },
	}
}

func TestAuthenticateDevice(t *testing.T) {
	const (
		srDev1 = "hub.example%2Fdevices%2Fdev1"
		srAll  = "hub.example%2Fdevices"
		srMod  = "hub.example%2Fdevices%2Fdev1%2Fmodules%2Fm1"
	)
	tests := []struct {
		name          string
		hosts         []string
		device, mod   string
		token         string
		wantScope     string
		wantGen       string
		want          error // nil or a sentinel the error must match
		wantErrUnauth bool  // defaults to true when want != nil
	}{
		{name: "node order primary key", device: "dev1", token: tok(keyA, srDev1, testSE, "", nodeOrder), wantScope: "device", wantGen: "637553997165220462"},
		{name: ".NET order", device: "dev1", token: tok(keyA, srDev1, testSE, "", netOrder), wantScope: "device"},
		{name: "secondary key", device: "dev1", token: tok(keyB, srDev1, testSE, "", nodeOrder), wantScope: "device"},
		{name: "C SDK lower-case escapes", device: "dev1", token: tok(keyA, "hub.example%2fdevices%2fdev1", testSE, "", netOrder), wantScope: "device"},
		{name: "host with port (node HostName=localhost:18883)", device: "dev1", token: tok(keyA, "localhost%3A18883%2Fdevices%2Fdev1", testSE, "", nodeOrder), wantScope: "device"},
		{name: "accepted host, other case", hosts: []string{"other.example", "HUB.example"}, device: "dev1", token: tok(keyA, srDev1, testSE, "", nodeOrder), wantScope: "device"},
		{name: "accepted host with port", hosts: []string{"localhost"}, device: "dev1", token: tok(keyA, "localhost%3A18883%2Fdevices%2Fdev1", testSE, "", nodeOrder), wantScope: "device"},
		{name: "unaccepted host", hosts: []string{"other.example"}, device: "dev1", token: tok(keyA, srDev1, testSE, "", nodeOrder), want: ErrScope},
		{name: "special characters in id", device: "a+b:c(d)$e", token: tok(keyA, "hub%2Fdevices%2Fa%2Bb%3Ac%28d%29%24e", testSE, "", nodeOrder), wantScope: "device"},
		{name: "wrong key", device: "dev1", token: tok(keyC, srDev1, testSE, "", nodeOrder), want: ErrBadSignature},
		{name: "expired", device: "dev1", token: tok(keyA, srDev1, strconv.FormatInt(beforeExp.Unix(), 10), "", nodeOrder), want: ErrExpired},
		{name: "token for dev1 used by dev10", device: "dev10", token: tok(keyA, srDev1, testSE, "", nodeOrder), want: ErrScope},
		{name: "segment-wise: devices/dev does not cover dev1", device: "dev1", token: tok(keyA, "hub%2Fdevices%2Fdev", testSE, "", nodeOrder), want: ErrScope},
		{name: "device ids are case-sensitive", device: "Dev1", token: tok(keyA, srDev1, testSE, "", nodeOrder), want: ErrScope},
		{name: "unknown device", device: "ghost", token: tok(keyA, "hub%2Fdevices%2Fghost", testSE, "", nodeOrder), want: ErrUnknownIdentity},
		{name: "disabled device", device: "off", token: tok(keyA, "hub%2Fdevices%2Foff", testSE, "", nodeOrder), want: ErrDeviceDisabled},
		{name: "disabled device, bad signature says bad signature", device: "off", token: tok(keyB, "hub%2Fdevices%2Foff", testSE, "", nodeOrder), want: ErrBadSignature},
		{name: "x509 device cannot use SAS", device: "x509", token: tok(keyA, "hub%2Fdevices%2Fx509", testSE, "", nodeOrder), want: ErrUnauthorized},
		{name: "device without keys", device: "nokeys", token: tok(keyA, "hub%2Fdevices%2Fnokeys", testSE, "", nodeOrder), want: ErrBadSignature},
		{name: "malformed", device: "dev1", token: "Bearer abc", want: ErrMalformedToken},

		{name: "policy token covering all devices", device: "dev1", token: tok(keyB, srAll, testSE, "device", nodeOrder), wantScope: "hub", wantGen: "637553997165220462"},
		{name: "policy token skn first, secondary key", device: "dev1", token: tok(keyC, srDev1, testSE, "device", sknFirst), wantScope: "hub"},
		{name: "owner policy has DeviceConnect", device: "dev1", token: tok(keyA, "hub.example", testSE, "iothubowner", netOrder), wantScope: "hub"},
		{name: "policy without DeviceConnect", device: "dev1", token: tok(keyC, srAll, testSE, "service", nodeOrder), want: ErrInsufficientRights},
		{name: "unknown policy", device: "dev1", token: tok(keyC, srAll, testSE, "nobody", nodeOrder), want: ErrUnauthorized},
		{name: "policy token with device key", device: "dev1", token: tok(keyA, srAll, testSE, "device", nodeOrder), want: ErrBadSignature},
		{name: "policy token for another device", device: "dev10", token: tok(keyB, srDev1, testSE, "device", nodeOrder), want: ErrScope},
		{name: "policy token, disabled device", device: "off", token: tok(keyB, srAll, testSE, "device", nodeOrder), want: ErrDeviceDisabled},

		{name: "module key", device: "dev1", mod: "m1", token: tok(keyC, srMod, testSE, "", nodeOrder), wantScope: "module", wantGen: "5"},
		{name: "device key cannot act as module", device: "dev1", mod: "m1", token: tok(keyA, srDev1, testSE, "", nodeOrder), want: ErrBadSignature},
		{name: "module token for another module", device: "dev1", mod: "m2", token: tok(keyC, srMod, testSE, "", nodeOrder), want: ErrScope},
		{name: "module token used for the device", device: "dev1", token: tok(keyC, srMod, testSE, "", nodeOrder), want: ErrScope},
		{name: "module of a disabled device", device: "off", mod: "m1", token: tok(keyC, "hub%2Fdevices%2Foff%2Fmodules%2Fm1", testSE, "", nodeOrder), want: ErrDeviceDisabled},
		{name: "policy token for a module", device: "dev1", mod: "m1", token: tok(keyB, srAll, testSE, "device", nodeOrder), wantScope: "hub", wantGen: "5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAuthenticator(tt.hosts...)
			id, err := a.AuthenticateDevice(context.Background(), tt.device, tt.mod, tt.token)
			if tt.want != nil {
				if !errors.Is(err, tt.want) || !errors.Is(err, ErrUnauthorized) {
					t.Fatalf("err = %v, want %v and ErrUnauthorized", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("AuthenticateDevice: %v", err)
			}
			if id.DeviceID != tt.device || id.ModuleID != tt.mod || id.Scope != tt.wantScope || !id.Expiry.Equal(testExpiry) {
				t.Fatalf("identity = %+v", id)
			}
			if tt.wantGen != "" && id.GenerationID != tt.wantGen {
				t.Fatalf("GenerationID = %q, want %q", id.GenerationID, tt.wantGen)
			}
		})
	}
}

func TestAuthenticateDeviceStoreFailure(t *testing.T) {
	a := newTestAuthenticator()
	boom := errors.New("disk on fire")
	a.Identities = &fakeStore{err: boom}
	_, err := a.AuthenticateDevice(context.Background(), "dev1", "", tok(keyA, "h%2Fdevices%2Fdev1", testSE, "", nodeOrder))
	if !errors.Is(err, boom) || errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v, want the store error and not ErrUnauthorized", err)
	}
}

func TestAuthMethodJSON(t *testing.T) {
	id := DeviceIdentity{Scope: "device", Type: "sas", Issuer: "iothub"}
	const want = `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`
	if got := id.AuthMethodJSON(); got != want {
		t.Fatalf("AuthMethodJSON() = %s, want %s", got, want)
	}
}

func TestAuthenticateService(t *testing.T) {
	tests := []struct {
		name     string
		hosts    []string
		token    string
		resource string
		need     Permission
		want     error
		missing  Permission
	}{
		{name: "owner, node service form sr=host", token: tok(keyA, "localhost", testSE, "iothubowner", nodeOrder), resource: "devices/dev1", need: RegistryWrite},
		{name: "owner secondary key", token: tok(keyB, "localhost", testSE, "iothubowner", netOrder), resource: "devices/dev1", need: RegistryRead | RegistryWrite},
		{name: "sr=host/devices covers a device", token: tok(keyC, "hub%2Fdevices", testSE, "registryRead", nodeOrder), resource: "/devices/dev1", need: RegistryRead},
		{name: "hub-wide resource", token: tok(keyC, "hub", testSE, "service", nodeOrder), resource: "", need: ServiceConnect},
		{name: "sr=host/devices does not cover statistics", token: tok(keyC, "hub%2Fdevices", testSE, "registryRead", nodeOrder), resource: "statistics/devices", need: RegistryRead, want: ErrScope},
		{name: "missing right", token: tok(keyC, "hub", testSE, "registryRead", nodeOrder), resource: "devices/dev1", need: RegistryRead | RegistryWrite, want: ErrInsufficientRights, missing: RegistryWrite},
		{name: "device policy cannot use service API", token: tok(keyB, "hub", testSE, "device", nodeOrder), need: ServiceConnect, want: ErrInsufficientRights, missing: ServiceConnect},
		{name: "device token refused", token: tok(keyA, "hub%2Fdevices%2Fdev1", testSE, "", nodeOrder), resource: "devices/dev1", need: RegistryRead, want: ErrUnauthorized},
		{name: "unknown policy", token: tok(keyA, "hub", testSE, "root", nodeOrder), need: RegistryRead, want: ErrUnauthorized},
		{name: "wrong key", token: tok(keyC, "hub", testSE, "iothubowner", nodeOrder), need: RegistryRead, want: ErrBadSignature},
		{name: "expired", token: tok(keyA, "hub", "100", "iothubowner", nodeOrder), need: RegistryRead, want: ErrExpired},
		{name: "unaccepted host", hosts: []string{"hub.example"}, token: tok(keyA, "localhost", testSE, "iothubowner", nodeOrder), need: RegistryRead, want: ErrScope},
		{name: "accepted host with port", hosts: []string{"hub.example"}, token: tok(keyA, "hub.example%3A443", testSE, "iothubowner", nodeOrder), need: RegistryRead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAuthenticator(tt.hosts...)
			p, err := a.AuthenticateService(context.Background(), tt.token, tt.resource, tt.need)
			if tt.want != nil {
				if !errors.Is(err, tt.want) || !errors.Is(err, ErrUnauthorized) {
					t.Fatalf("err = %v, want %v and ErrUnauthorized", err, tt.want)
				}
				var re *RightsError
				if tt.missing != 0 && (!errors.As(err, &re) || re.Missing != tt.missing) {
					t.Fatalf("err = %v, want RightsError missing %v", err, tt.missing)
				}
				return
			}
			if err != nil {
				t.Fatalf("AuthenticateService: %v", err)
			}
			tk, _ := ParseToken(tt.token)
			if p.PolicyName != tk.KeyName || !p.Rights.Has(tt.need) || !p.Expiry.Equal(testExpiry) {
				t.Fatalf("principal = %+v", p)
			}
		})
	}
}

// BenchmarkAuthenticateDevice measures the CONNECT hot path: parse, scope
// check, credential lookup in a map, cached key, one HMAC.
func BenchmarkAuthenticateDevice(b *testing.B) {
	a := newTestAuthenticator("hub.example")
	ctx := context.Background()
	token := tok(keyB, "hub.example%2Fdevices%2Fdev1", testSE, "", nodeOrder) // secondary key: worst case, two HMACs
	for _, bc := range []struct{ name, token string }{
		{"primary", tok(keyA, "hub.example%2Fdevices%2Fdev1", testSE, "", nodeOrder)},
		{"secondary", token},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.AuthenticateDevice(ctx, "dev1", "", bc.token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTokenVerify is the uncached path (decodes the key each time) for
// comparison.
func BenchmarkTokenVerify(b *testing.B) {
	t, err := ParseToken(tok(keyA, "hub.example%2Fdevices%2Fdev1", testSE, "", nodeOrder))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := t.Verify(keyA, beforeExp); err != nil {
			b.Fatal(err)
		}
	}
}
