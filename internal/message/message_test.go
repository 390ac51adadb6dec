package message

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		msg  Message
		want error
	}{
		{"empty", Message{}, nil},
		{"id with every allowed symbol", Message{MessageID: "aZ09-:.+%_#*?!(),=@;$'"}, nil},
		{"id with space", Message{MessageID: "a b"}, ErrInvalid},
		{"id with slash", Message{MessageID: "a/b"}, ErrInvalid},
		{"id with non-ASCII", Message{MessageID: "é"}, ErrInvalid},
		{"id at 128", Message{MessageID: strings.Repeat("a", 128)}, nil},
		{"id at 129", Message{MessageID: strings.Repeat("a", 129)}, ErrInvalid},
		{"correlation id at 129", Message{CorrelationID: strings.Repeat("a", 129)}, ErrInvalid},
		{"body at limit", Message{Body: make([]byte, MaxD2CSize)}, nil},
		{"body over limit", Message{Body: make([]byte, MaxD2CSize+1)}, ErrTooLarge},
		{"properties count toward size", Message{Body: make([]byte, MaxD2CSize-3), Properties: map[string]string{"ab": "cd"}}, ErrTooLarge},
		{"system values count toward size", Message{Body: make([]byte, MaxD2CSize-1), ContentType: "ab"}, ErrTooLarge},
		{"stamps do not count", Message{Body: make([]byte, MaxD2CSize), ConnectionDeviceID: "dev"}, nil},
		{"empty property name", Message{Properties: map[string]string{"": "x"}}, ErrInvalid},
		{"size is checked first", Message{Body: make([]byte, MaxD2CSize), Properties: map[string]string{"": "x"}}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.msg.Validate()
			if tt.want == nil && err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Validate() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSetPropertyIsCaseInsensitive(t *testing.T) {
	var m Message
	m.SetProperty("Color", "red")
	m.SetProperty("color", "blue")
	m.SetProperty("size", "L")
	if len(m.Properties) != 2 || m.Properties["color"] != "blue" || m.Properties["size"] != "L" {
		t.Fatalf("properties = %v", m.Properties)
	}
}

func TestSystemPropertiesNames(t *testing.T) {
	m := Message{
		MessageID: "m1", CorrelationID: "c1", ContentType: "application/json", ContentEncoding: "utf-8",
		ConnectionDeviceID: "dev1", ConnectionAuthMethod: `{"scope":"device"}`, Source: SourceTelemetry,
		EnqueuedTime: time.Date(2026, 11, 25, 10, 0, 0, 5, time.UTC),
	}
	got := map[string]string{}
	for _, p := range m.SystemProperties() {
		got[p.Name] = p.Value
	}
	want := map[string]string{
		"message-id": "m1", "correlation-id": "c1", "content-type": "application/json",
		"content-encoding": "utf-8", "iothub-connection-device-id": "dev1",
		"iothub-connection-auth-method": `{"scope":"device"}`, "iothub-message-source": "Telemetry",
		"iothub-enqueuedtime": "2026-11-25T10:00:00.000000005Z",
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	full := Message{
		MessageID: "m", CorrelationID: "c", UserID: "u", To: "/devices/d/messages/events",
		ContentType: "application/json", ContentEncoding: "utf-8", ExpiryTime: "2030-01-01T00:00:00.000Z",
		CreationTime: "2021-04-21T11:30:16Z", MessageSchema: "s", InterfaceID: "i", ComponentName: "comp",
		OutputName: "out", ConnectionDeviceID: "d", ConnectionModuleID: "mod",
		ConnectionAuthGenerationID: "636930642531278483", ConnectionAuthMethod: "{}", DataSchema: "dtmi:x;1",
		EnqueuedTime: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Source: SourceTelemetry,
		Properties: map[string]string{"a": "1", "b": "", "ü": "ß"}, Body: []byte{0, 1, 2, 0xff},
	}
	for _, m := range []Message{{}, {Body: []byte("x")}, full} {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Message
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("UnmarshalBinary: %v", err)
		}
		b2, _ := got.MarshalBinary()
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed the encoding:\n%x\n%x", b, b2)
		}
		if !got.EnqueuedTime.Equal(m.EnqueuedTime) || got.MessageID != m.MessageID || !bytes.Equal(got.Body, m.Body) || len(got.Properties) != len(m.Properties) {
			t.Fatalf("got %+v, want %+v", got, m)
		}
	}
}

func TestUnmarshalRejectsCorruption(t *testing.T) {
	m := Message{MessageID: "m", Properties: map[string]string{"k": "v"}, Body: []byte("body")}
	b, _ := m.MarshalBinary()
	for i := 0; i < len(b); i++ {
		var got Message
		if err := got.UnmarshalBinary(b[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated at %d: err = %v, want ErrCorrupt", i, err)
		}
	}
	var got Message
	if err := got.UnmarshalBinary(append(b, 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: err = %v, want ErrCorrupt", err)
	}
	if err := got.UnmarshalBinary([]byte{9}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown version: err = %v, want ErrCorrupt", err)
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	m := Message{MessageID: "m", ContentType: "application/json", Properties: map[string]string{"k": "v"}, Body: []byte(`{"t":1}`)}
	b, _ := m.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var got Message
		if err := got.UnmarshalBinary(data); err != nil {
			return
		}
		// Anything that decodes must encode back to something that decodes to the same message.
		again, err := got.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var third Message
		if err := third.UnmarshalBinary(again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if third.MessageID != got.MessageID || !bytes.Equal(third.Body, got.Body) || len(third.Properties) != len(got.Properties) {
			t.Fatalf("unstable round trip")
		}
	})
}

func BenchmarkMarshal(b *testing.B) {
	m := Message{MessageID: "mid-1", ContentType: "application/json", ContentEncoding: "utf-8",
		ConnectionDeviceID: "dev1", Properties: map[string]string{"a": "1", "b": "2"}, Body: make([]byte, 256)}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = m.AppendBinary(buf[:0])
	}
}

func TestCodecRouting(t *testing.T) {
	m := Message{Body: []byte("x"), Routing: &Routing{Routes: []string{"hot", "$fallback"}, Endpoints: []string{"events", "lake"}}}
	b, _ := m.MarshalBinary()
	var got Message
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got.Routing == nil || strings.Join(got.Routing.Routes, ",") != "hot,$fallback" || strings.Join(got.Routing.Endpoints, ",") != "events,lake" {
		t.Fatalf("routing = %+v", got.Routing)
	}
	if !got.ToEndpoint("lake") || !got.ToEndpoint("events") || got.ToEndpoint("other") {
		t.Error("ToEndpoint disagrees with the decoded routing")
	}
	routedNowhere := Message{Routing: &Routing{}}
	if routedNowhere.ToEndpoint(BuiltInEndpoint) {
		t.Error("a message routed nowhere is in the built-in endpoint")
	}
	if unrouted := (Message{}); !unrouted.ToEndpoint(BuiltInEndpoint) || unrouted.ToEndpoint("lake") {
		t.Error("a message without a routing decision belongs to the built-in endpoint only")
	}
}

// TestCodecReadsVersion1: records written before the routing decision existed stay readable.
func TestCodecReadsVersion1(t *testing.T) {
	data, err := os.ReadFile("testdata/fuzz/FuzzUnmarshalBinary/seed-1")
	if err != nil {
		t.Fatal(err)
	}
	// The seed file holds a version 1 encoding as a quoted Go string.
	line := strings.TrimSpace(strings.Split(string(data), "\n")[1])
	raw, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(line, "[]byte("), ")"))
	if err != nil {
		t.Fatal(err)
	}
	if raw[0] != 1 {
		t.Fatalf("seed is version %d, want 1", raw[0])
	}
	var m Message
	if err := m.UnmarshalBinary([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	if m.MessageID != "mid-1" || m.Routing != nil || m.Properties["path"] != "x=1&y=2 /z" {
		t.Fatalf("decoded %+v", m)
	}
}
