package httpdevice

import "testing"

func FuzzParseBatch(f *testing.F) {
	for _, s := range []string{
		`[{"body": "aGk=", "properties": {"iothub-app-k": "v", "iothub-messageid": "m1"}}]`,
		`[{"body": "text", "base64Encoded": false}, {"body": "aGk="}]`,
		`[{"body": null, "properties": {"dt-subject": "c", "IoTHub-App-X": "y", "iothub-connection-device-id": "z"}}]`,
		`[]`, `{}`, `[1]`, `[{"body": 5}]`, `[{"body": "!!"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := parseBatch(data)
		if err != nil {
			if msgs != nil {
				t.Fatal("messages returned with an error")
			}
			return
		}
		if len(msgs) == 0 {
			t.Fatal("an empty batch was accepted")
		}
		for _, m := range msgs {
			if m.ConnectionDeviceID != "" || m.ConnectionModuleID != "" {
				t.Fatalf("a batch set a hub stamp: %+v", m)
			}
			if _, err := m.MarshalBinary(); err != nil {
				t.Fatalf("a parsed message does not encode: %v", err)
			}
		}
	})
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/devices/d1/messages/events", "/devices/d%2B1/modules/m1/messages/events",
		"/devices/d1/messages/deviceBound/tok/abandon", "/devices/%zz/messages/events", "/devices//messages/events",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt, ok := parsePath(path)
		if !ok {
			return
		}
		if rt.deviceID == "" || rt.kind == 0 || (rt.kind == routeEvents && len(rt.rest) != 0) || len(rt.rest) > 2 {
			t.Fatalf("parsePath(%q) = %+v", path, rt)
		}
		if rt.kind == routeDeviceBound && rt.moduleID != "" {
			t.Fatalf("module devicebound accepted: %q", path)
		}
	})
}
