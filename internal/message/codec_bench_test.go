package message

import (
	"math"
	"strings"
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

// TestEncodedSize: MarshalBinary's buffer is exactly as long as the encoding, at every varint
// length boundary.
func TestEncodedSize(t *testing.T) {
	many := map[string]string{}
	for i := range 130 {
		many[strings.Repeat("k", i)] = strings.Repeat("v", i*3)
	}
	for i, m := range []*Message{
		{},
		benchMessage(),
		{Properties: map[string]string{"": ""}, Routing: &Routing{}},
		{MessageID: strings.Repeat("x", 127), CorrelationID: strings.Repeat("y", 128), UserID: strings.Repeat("z", 16384),
			Properties: many, Body: make([]byte, 1<<21)},
		{EnqueuedTime: time.Unix(0, 1)},
		{EnqueuedTime: time.Unix(0, -1)},
		{EnqueuedTime: time.Unix(0, 63)},
		{EnqueuedTime: time.Unix(0, 64)},
		{EnqueuedTime: time.Unix(0, -64)},
		{EnqueuedTime: time.Unix(0, -65)},
		{EnqueuedTime: time.Unix(0, math.MaxInt64)},
		{EnqueuedTime: time.Unix(0, math.MinInt64)},
		{EnqueuedTime: time.Date(1200, 1, 1, 0, 0, 0, 0, time.UTC)}, // UnixNano out of range
		{Routing: &Routing{Routes: make([]string, 128), Endpoints: []string{strings.Repeat("e", 200)}}},
	} {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != m.encodedSize() || cap(b) != len(b) {
			t.Errorf("message %d: encoded %d bytes into a buffer of %d, encodedSize %d", i, len(b), cap(b), m.encodedSize())
		}
	}
}
