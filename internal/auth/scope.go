package auth

import (
	"bytes"
	"strings"
)

// Scope rules (spec 5.1/5.2). A token's decoded sr is "host[/path]"; it
// covers a target "host/path" when
//
//   - the hosts are equal ignoring ASCII case and any ":port" (the Node SDK
//     puts "localhost:18883" into sr when HostName carries a port), and
//   - the sr path is a prefix of the target path by whole segments:
//     "devices" covers "devices/d1", "devices/d" does not.
//
// Path segments compare case-sensitively. Device and module ids are
// case-sensitive in the registry ("Dev1" and "dev1" can be two devices), so
// folding case could let a policy token scoped to one device reach another.
// The doc's canonical "lower-cased URI" only matters for the signature,
// which Token.Verify also tries; strictness here can only refuse, never
// over-grant.

// ScopeCovers reports whether tokenResource (an sr value, URL-encoded or
// not) covers target ("host/path", not encoded).
func ScopeCovers(tokenResource, target string) bool {
	var buf [512]byte
	sr, ok := unescapeAppend(buf[:0], tokenResource)
	if !ok {
		return false
	}
	srHost, srPath := splitResource(sr)
	tHost, tPath, _ := strings.Cut(target, "/")
	return hostEqual(srHost, tHost) && pathCovers(srPath, tPath)
}

// splitResource splits a decoded sr into host and path (without the
// separating slash).
func splitResource(sr []byte) (host, path []byte) {
	host, path, _ = cutSlash(sr)
	return host, path
}

// hostAccepted reports whether host is one of hosts; an empty set accepts
// any host, because a hub behind a load balancer or NAT cannot know every
// name its clients use.
func hostAccepted(host []byte, hosts []string) bool {
	if len(hosts) == 0 {
		return true
	}
	for _, h := range hosts {
		if hostEqual(host, h) {
			return true
		}
	}
	return false
}

// hostEqual compares host names ignoring ASCII case and a ":port" suffix on
// either side.
func hostEqual(a []byte, b string) bool {
	a, b = stripPortBytes(a), stripPort(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// stripPort removes ":port" from "host:port" and "[v6]:port" and the
// brackets from "[v6]"; a bare IPv6 address (several colons) is left alone.
func stripPort(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return h
	}
	if i := strings.IndexByte(h, ':'); i >= 0 && strings.IndexByte(h[i+1:], ':') < 0 {
		return h[:i]
	}
	return h
}

func stripPortBytes(h []byte) []byte {
	if len(h) > 0 && h[0] == '[' {
		for i, c := range h {
			if c == ']' {
				return h[1:i]
			}
		}
		return h
	}
	colon := -1
	for i, c := range h {
		if c == ':' {
			if colon >= 0 {
				return h // bare IPv6
			}
			colon = i
		}
	}
	if colon >= 0 {
		return h[:colon]
	}
	return h
}

// pathCovers reports whether prefix covers target by whole segments. A
// trailing slash on prefix and a leading slash on target are ignored; an
// empty prefix (sr is just the host) covers everything.
func pathCovers(prefix []byte, target string) bool {
	prefix = trimTrailingSlash(prefix)
	target = strings.TrimPrefix(target, "/")
	if len(prefix) == 0 {
		return true
	}
	if len(target) < len(prefix) || string(prefix) != target[:len(prefix)] {
		return false
	}
	return len(target) == len(prefix) || target[len(prefix)] == '/'
}

// pathCoversDevice is pathCovers for the target
// "devices/{deviceID}[/modules/{moduleID}]" without building that string.
func pathCoversDevice(prefix []byte, deviceID, moduleID string) bool {
	prefix = trimTrailingSlash(prefix)
	segs := [4]string{"devices", deviceID, "modules", moduleID}
	n := 2
	if moduleID != "" {
		n = 4
	}
	if len(prefix) == 0 {
		return true
	}
	for i := 0; i < n; i++ {
		seg, rest, more := cutSlash(prefix)
		if string(seg) != segs[i] {
			return false
		}
		if !more {
			return true
		}
		prefix = rest
	}
	return false // sr is longer than the target
}

// cutSlash is bytes.Cut(b, "/") without a separator slice.
func cutSlash(b []byte) (before, after []byte, found bool) {
	if i := bytes.IndexByte(b, '/'); i >= 0 {
		return b[:i], b[i+1:], true
	}
	return b, nil, false
}

func trimTrailingSlash(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '/' {
		return b[:len(b)-1]
	}
	return b
}
