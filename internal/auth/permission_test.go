package auth

import (
	"encoding/base64"
	"encoding/json"
	"testing"
)

func TestPermissions(t *testing.T) {
	tests := []struct {
		in      string
		want    Permission
		str     string
		wantErr bool
	}{
		{"RegistryRead, RegistryWrite", RegistryRead | RegistryWrite, "RegistryRead, RegistryWrite", false},
		{"DeviceConnect,ServiceConnect", ServiceConnect | DeviceConnect, "ServiceConnect, DeviceConnect", false},
		{"RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect", AllPermissions, "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect", false},
		{" registryread ,  DEVICECONNECT ", RegistryRead | DeviceConnect, "RegistryRead, DeviceConnect", false},
		{"RegistryReadWrite", RegistryRead | RegistryWrite, "RegistryRead, RegistryWrite", false},
		{"", 0, "", false},
		{"RegistryRead, Owner", 0, "", true},
	}
	for _, tt := range tests {
		got, err := ParsePermissions(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParsePermissions(%q) err = %v", tt.in, err)
			continue
		}
		if got != tt.want || got.String() != tt.str {
			t.Errorf("ParsePermissions(%q) = %v (%q), want %v (%q)", tt.in, uint8(got), got, uint8(tt.want), tt.str)
		}
	}
}

func TestPolicyJSON(t *testing.T) {
	p := Policy{Name: "registryReadWrite", PrimaryKey: keyA, SecondaryKey: keyB, Rights: RegistryRead | RegistryWrite}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"keyName":"registryReadWrite","primaryKey":"` + keyA + `","secondaryKey":"` + keyB + `","rights":"RegistryRead, RegistryWrite"}`
	if string(b) != want {
		t.Fatalf("json = %s\nwant   %s", b, want)
	}
	var back Policy
	if err := json.Unmarshal(b, &back); err != nil || back != p {
		t.Fatalf("round trip = %+v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"rights":"Everything"}`), &back); err == nil {
		t.Fatal("unknown right accepted")
	}
}

func TestDefaultPolicies(t *testing.T) {
	ps, err := DefaultPolicies()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Permission{
		"iothubowner":       AllPermissions,
		"service":           ServiceConnect,
		"device":            DeviceConnect,
		"registryRead":      RegistryRead,
		"registryReadWrite": RegistryRead | RegistryWrite,
	}
	if len(ps) != len(want) {
		t.Fatalf("got %d policies, want %d", len(ps), len(want))
	}
	seen := map[string]bool{}
	for _, p := range ps {
		if want[p.Name] != p.Rights {
			t.Errorf("%s rights = %v, want %v", p.Name, p.Rights, want[p.Name])
		}
		for _, k := range []string{p.PrimaryKey, p.SecondaryKey} {
			b, err := base64.StdEncoding.DecodeString(k)
			if err != nil || len(b) != 32 {
				t.Errorf("%s key %q: %d bytes, %v", p.Name, k, len(b), err)
			}
			if seen[k] {
				t.Errorf("key %q repeated", k)
			}
			seen[k] = true
		}
	}
	if _, ok := StaticPolicies(ps).Policy("registryRead"); !ok {
		t.Error("StaticPolicies lookup failed")
	}
	if _, ok := StaticPolicies(ps).Policy("RegistryRead"); ok {
		t.Error("policy names must be case-sensitive")
	}
}
