package auth

import (
	"fmt"
	"strings"
)

// ConnectionString is an IoT Hub device, module or service connection
// string (spec 5.5).
type ConnectionString struct {
	HostName              string
	DeviceID              string
	ModuleID              string
	SharedAccessKeyName   string
	SharedAccessKey       string
	SharedAccessSignature string
	GatewayHostName       string
	X509                  bool
}

// ParseConnectionString splits s on ";" and each part on its first "="
// (keys are case-sensitive, as in the SDKs; values such as base64 keys and
// SAS tokens contain "="). Unknown or repeated keys are errors, HostName is
// required, and SharedAccessKey cannot be combined with x509 or
// SharedAccessSignature (the Node SDK refuses those too).
func ParseConnectionString(s string) (ConnectionString, error) {
	var cs ConnectionString
	seen := make(map[string]bool, 4)
	for part := range strings.SplitSeq(s, ";") {
		if strings.TrimSpace(part) == "" {
			continue // tolerate a trailing ";"
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return ConnectionString{}, fmt.Errorf("auth: parse connection string: %q has no '='", part)
		}
		if seen[k] {
			return ConnectionString{}, fmt.Errorf("auth: parse connection string: duplicate key %q", k)
		}
		seen[k] = true
		switch k {
		case "HostName":
			cs.HostName = v
		case "DeviceId":
			cs.DeviceID = v
		case "ModuleId":
			cs.ModuleID = v
		case "SharedAccessKeyName":
			cs.SharedAccessKeyName = v
		case "SharedAccessKey":
			cs.SharedAccessKey = v
		case "SharedAccessSignature":
			cs.SharedAccessSignature = v
		case "GatewayHostName":
			cs.GatewayHostName = v
		case "x509":
			switch strings.ToLower(v) {
			case "true":
				cs.X509 = true
			case "false":
			default:
				return ConnectionString{}, fmt.Errorf("auth: parse connection string: x509=%q is not true or false", v)
			}
		default:
			return ConnectionString{}, fmt.Errorf("auth: parse connection string: unknown key %q", k)
		}
	}
	if cs.HostName == "" {
		return ConnectionString{}, fmt.Errorf("auth: parse connection string: missing HostName")
	}
	if cs.SharedAccessKey != "" && (cs.X509 || cs.SharedAccessSignature != "") {
		return ConnectionString{}, fmt.Errorf("auth: parse connection string: SharedAccessKey cannot be combined with x509 or SharedAccessSignature")
	}
	return cs, nil
}

// String formats cs with the keys in the usual order, omitting empty ones.
func (cs ConnectionString) String() string {
	var b strings.Builder
	add := func(k, v string) {
		if v == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(';')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
	}
	add("HostName", cs.HostName)
	add("DeviceId", cs.DeviceID)
	add("ModuleId", cs.ModuleID)
	add("SharedAccessKeyName", cs.SharedAccessKeyName)
	add("SharedAccessKey", cs.SharedAccessKey)
	add("SharedAccessSignature", cs.SharedAccessSignature)
	add("GatewayHostName", cs.GatewayHostName)
	if cs.X509 {
		add("x509", "true")
	}
	return b.String()
}

// DeviceConnectionString returns "HostName=..;DeviceId=..;SharedAccessKey=..".
func DeviceConnectionString(host, deviceID, key string) ConnectionString {
	return ConnectionString{HostName: host, DeviceID: deviceID, SharedAccessKey: key}
}

// ModuleConnectionString returns
// "HostName=..;DeviceId=..;ModuleId=..;SharedAccessKey=..".
func ModuleConnectionString(host, deviceID, moduleID, key string) ConnectionString {
	return ConnectionString{HostName: host, DeviceID: deviceID, ModuleID: moduleID, SharedAccessKey: key}
}

// ServiceConnectionString returns
// "HostName=..;SharedAccessKeyName=..;SharedAccessKey=..".
func ServiceConnectionString(host, policyName, key string) ConnectionString {
	return ConnectionString{HostName: host, SharedAccessKeyName: policyName, SharedAccessKey: key}
}
