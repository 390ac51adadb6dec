package mqtt

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadUsername reports a CONNECT username that names no device.
var ErrBadUsername = errors.New("mqtt: invalid username")

// Username is an IoT Hub MQTT username, spec 3.2.
type Username struct {
	Host       string // as sent, possibly with :port; informational
	DeviceID   string
	ModuleID   string
	APIVersion string
	ClientType string // DeviceClientType
	ModelID    string // model-id (IoT Plug and Play)
}

// ParseUsername parses the username forms devices send:
//
//	{host}/{deviceId}/?api-version=...&DeviceClientType=...&model-id=...
//	{host}/{deviceId}/{moduleId}/?api-version=...
//	{host}/{deviceId}/api-version=2016-11-14&DeviceClientType=...        (legacy, no '?')
//	{host}/{deviceId}/api-version=2017-06-30/DeviceClientType=...        (edgeHub)
//
// and {host}/{deviceId}[/{moduleId}][/] without parameters. Ids end at the next '/' (they cannot
// contain one); a segment after the device id that starts with '?' or "api-version=" begins the
// parameters, anything else is the module id. Unknown parameters are ignored; values are
// percent-decoded ('+' stays '+'), and a value with a malformed escape is kept as sent.
func ParseUsername(s string) (Username, error) {
	var u Username
	host, rest, ok := strings.Cut(s, "/")
	if !ok || host == "" {
		return u, fmt.Errorf("%w: no {host}/{deviceId} in %q", ErrBadUsername, s)
	}
	u.Host = host
	u.DeviceID, rest, _ = strings.Cut(rest, "/")
	if u.DeviceID == "" || u.DeviceID[0] == '?' {
		return u, fmt.Errorf("%w: no device id in %q", ErrBadUsername, s)
	}
	if rest == "" {
		return u, nil
	}
	if q, ok := usernameQuery(rest); ok {
		u.parseQuery(q)
		return u, nil
	}
	u.ModuleID, rest, _ = strings.Cut(rest, "/")
	if u.ModuleID == "" {
		return u, fmt.Errorf("%w: empty module id in %q", ErrBadUsername, s)
	}
	if rest == "" {
		return u, nil
	}
	q, ok := usernameQuery(rest)
	if !ok {
		return u, fmt.Errorf("%w: unexpected %q after the module id", ErrBadUsername, rest)
	}
	u.parseQuery(q)
	return u, nil
}

// usernameQuery returns the parameters if s (the text after an id and its '/') starts them.
func usernameQuery(s string) (string, bool) {
	if q, ok := strings.CutPrefix(s, "?"); ok {
		return q, true
	}
	if hasPrefixFold(s, "api-version=") {
		return s, true
	}
	return "", false
}

var usernameParams = [...]string{"api-version", "DeviceClientType", "model-id"}

func (u *Username) parseQuery(q string) {
	q = strings.TrimSuffix(q, "/")
	for tok := range strings.SplitSeq(q, "&") {
		for tok != "" {
			piece := tok
			if i := nextParamSlash(tok); i >= 0 {
				piece, tok = tok[:i], tok[i+1:]
			} else {
				tok = ""
			}
			k, v, _ := strings.Cut(piece, "=")
			v = unescape(v)
			switch {
			case strings.EqualFold(k, "api-version"):
				u.APIVersion = v
			case strings.EqualFold(k, "DeviceClientType"):
				u.ClientType = v
			case strings.EqualFold(k, "model-id"):
				u.ModelID = v
			}
		}
	}
}

// nextParamSlash finds a '/' that edgeHub's legacy form uses between parameters
// ("api-version=2017-06-30/DeviceClientType=..."): one followed by a known parameter name and
// '='. Other slashes belong to a value.
func nextParamSlash(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] != '/' {
			continue
		}
		rest := s[i+1:]
		for _, p := range usernameParams {
			if len(rest) > len(p) && rest[len(p)] == '=' && hasPrefixFold(rest, p) {
				return i
			}
		}
	}
	return -1
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
