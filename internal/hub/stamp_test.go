package hub

import (
	"testing"

	"github.com/tetherhub/tether/internal/auth"
)

// TestAuthMethodJSON: the prebuilt stamps are what AuthMethodJSON builds.
func TestAuthMethodJSON(t *testing.T) {
	for _, id := range []auth.DeviceIdentity{
		{Scope: "device", Type: "sas", Issuer: "iothub"},
		{Scope: "module", Type: "sas", Issuer: "iothub"},
		{Scope: "hub", Type: "sas", Issuer: "iothub"},
		{Scope: "device", Type: "x509", Issuer: "iothub"},
		{Scope: "device", Type: "sas", Issuer: "other"},
		{Scope: "other", Type: "sas", Issuer: "iothub"},
		{},
	} {
		if got, want := authMethodJSON(id), id.AuthMethodJSON(); got != want {
			t.Errorf("authMethodJSON(%+v) = %s, want %s", id, got, want)
		}
	}
}
