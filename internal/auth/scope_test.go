package auth

import "testing"

func TestScopeCovers(t *testing.T) {
	tests := []struct {
		sr, target string
		want       bool
	}{
		{"hub%2Fdevices", "hub/devices/d1", true},
		{"hub/devices", "hub/devices/d1", true},
		{"hub%2Fdevices%2Fd1", "hub/devices/d1", true},
		{"hub%2Fdevices%2Fd1%2F", "hub/devices/d1", true},
		{"hub%2Fdevices%2Fd", "hub/devices/d1", false},
		{"hub%2Fdevices%2Fd1", "hub/devices/d10", false},
		{"hub%2Fdevices%2Fd1", "hub/devices/d1/modules/m1", true},
		{"hub%2Fdevices%2Fd1%2Fmodules%2Fm1", "hub/devices/d1", false},
		{"hub", "hub/devices/d1", true},
		{"hub", "hub", true},
		{"HUB.Example%2Fdevices", "hub.example/devices/d1", true},
		{"hub.example%3A18883%2Fdevices%2Fd1", "hub.example/devices/d1", true},
		{"hub.example%3a18883%2fdevices%2fd1", "hub.example:8883/devices/d1", true},
		{"other%2Fdevices%2Fd1", "hub/devices/d1", false},
		{"hubx%2Fdevices", "hub/devices/d1", false},
		// Device ids are case-sensitive: see the package comment in scope.go.
		{"hub%2Fdevices%2FDev1", "hub/devices/dev1", false},
		{"hub%2FDevices%2Fdev1", "hub/devices/dev1", false},
		{"%5B%3A%3A1%5D%3A8883%2Fdevices", "[::1]/devices/d1", true},
		{"%5B%3A%3A1%5D%3A8883%2Fdevices", "::1/devices/d1", true},
		{"hub%2Fdevices%2F%2Fd1", "hub/devices/d1", false},
		{"hub%2", "hub/devices/d1", false},
	}
	for _, tt := range tests {
		if got := ScopeCovers(tt.sr, tt.target); got != tt.want {
			t.Errorf("ScopeCovers(%q, %q) = %v, want %v", tt.sr, tt.target, got, tt.want)
		}
	}
}

func TestPathCoversDevice(t *testing.T) {
	tests := []struct {
		path, dev, mod string
		want           bool
	}{
		{"", "d1", "", true},
		{"devices", "d1", "", true},
		{"devices/", "d1", "", true},
		{"devices/d1", "d1", "", true},
		{"devices/d1/", "d1", "", true},
		{"devices/d", "d1", "", false},
		{"devices/d1x", "d1", "", false},
		{"devices/d1/modules", "d1", "", false},
		{"devices/d1/modules", "d1", "m1", true},
		{"devices/d1/modules/m1", "d1", "m1", true},
		{"devices/d1/modules/m2", "d1", "m1", false},
		{"devices/d1/modules/m1/x", "d1", "m1", false},
		{"devices/d1/modulesx/m1", "d1", "m1", false},
		{"twins/d1", "d1", "", false},
		{"devices//d1", "d1", "", false},
	}
	for _, tt := range tests {
		if got := pathCoversDevice([]byte(tt.path), tt.dev, tt.mod); got != tt.want {
			t.Errorf("pathCoversDevice(%q, %q, %q) = %v, want %v", tt.path, tt.dev, tt.mod, got, tt.want)
		}
	}
}
