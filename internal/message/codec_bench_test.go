package message

import (
	"testing"
	"time"
)

// benchMessage is a message as the hub stores it from the Node SDK: system properties, the
// hub's stamps, a few application properties and a 256-byte body.
func benchMessage() *Message {
	return &Message{
		MessageID: "5e3d3f2c-9a8b-4c1d-8e2f-0a1b2c3d4e5f", CorrelationID: "corr-1",
		ContentType: "application/json", ContentEncoding: "utf-8", CreationTime: "2026-11-25T14:00:00.000Z",
		ConnectionDeviceID: "bench-17", ConnectionAuthGenerationID: "638000000000000000",
		ConnectionAuthMethod: `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`,
		EnqueuedTime:         time.Unix(1764079200, 123456789).UTC(), Source: SourceTelemetry,
		Properties: map[string]string{"temperatureAlert": "false", "level": "normal", "app/x": "a b"},
		Body:       make([]byte, 256),
		Routing:    &Routing{Routes: []string{"$fallback"}, Endpoints: []string{"events"}},
	}
}

// BenchmarkMarshalBinary is what hub.Submit does per message: a new buffer and the encoding.
func BenchmarkMarshalBinary(b *testing.B) {
	m := benchMessage()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnmarshalBinary is what a reader of the built-in endpoint does per record.
func BenchmarkUnmarshalBinary(b *testing.B) {
	data, err := benchMessage().MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var m Message
		if err := m.UnmarshalBinary(data); err != nil {
			b.Fatal(err)
		}
	}
}

func TestEncodedSizeBound(t *testing.T) {
	for _, m := range []*Message{{}, benchMessage(), {Properties: map[string]string{"": ""}, Routing: &Routing{}}} {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > m.encodedSize() {
			t.Errorf("encoded %d bytes, bound %d", len(b), m.encodedSize())
		}
	}
}
