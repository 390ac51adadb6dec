package service

import "testing"

func TestAcceptsBinaryEvents(t *testing.T) {
	for _, tc := range []struct {
		accept []string
		want   bool
	}{
		{nil, false},
		{[]string{"*/*"}, false},
		{[]string{"application/x-ndjson"}, false},
		{[]string{"application/vnd.tether.events+binary"}, true},
		{[]string{"application/vnd.tether.events+binary, application/x-ndjson;q=0.5"}, true},
		{[]string{"application/x-ndjson", "application/vnd.tether.events+binary;q=0.9"}, true},
		{[]string{"application/vnd.tether.events+binary;q=0"}, false},
		{[]string{"application/vnd.tether.events+binaryx"}, false},
		{[]string{";;;, application/vnd.tether.events+binary"}, true},
	} {
		if got := acceptsBinaryEvents(tc.accept); got != tc.want {
			t.Errorf("Accept %q: binary %v, want %v", tc.accept, got, tc.want)
		}
	}
}
