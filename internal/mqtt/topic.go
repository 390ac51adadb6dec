package mqtt

import "strings"

// parseEventsTopic splits a D2C topic, devices/{d}/messages/events[/{bag}] or
// devices/{d}/modules/{m}/messages/events[/{bag}], into its identity and property bag.
// The bag is everything after the prefix, slashes included (spec 3.3).
func parseEventsTopic(topic string) (deviceID, moduleID, bag string, ok bool) {
	rest, ok := strings.CutPrefix(topic, "devices/")
	if !ok {
		return "", "", "", false
	}
	deviceID, rest, ok = strings.Cut(rest, "/")
	if !ok || deviceID == "" {
		return "", "", "", false
	}
	if r, isModule := strings.CutPrefix(rest, "modules/"); isModule {
		moduleID, rest, ok = strings.Cut(r, "/")
		if !ok || moduleID == "" {
			return "", "", "", false
		}
	}
	rest, ok = strings.CutPrefix(rest, "messages/events")
	if !ok {
		return "", "", "", false
	}
	if rest == "" {
		return deviceID, moduleID, "", true
	}
	if rest[0] != '/' {
		return "", "", "", false
	}
	return deviceID, moduleID, rest[1:], true
}

// isC2DFilter reports whether filter is a devicebound subscription for deviceID: its own
// devices/{id}/messages/devicebound/# or the embedded C SDK's devices/+/messages/devicebound/#.
func isC2DFilter(filter, deviceID string) bool {
	rest, ok := strings.CutPrefix(filter, "devices/")
	if !ok {
		return false
	}
	id, ok := strings.CutSuffix(rest, "/messages/devicebound/#")
	return ok && (id == "+" || id == deviceID)
}
