package service

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/binenc"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/telemetry"
)

// referenceEvent is the event stream's line as it was made before appendEvent: the message
// decoded, turned into an api.Event, and written by encoding/json. appendEvent must write the
// same bytes.
func referenceEvent(t testing.TB, rec telemetry.Record, raw bool) []byte {
	t.Helper()
	var m message.Message
	if err := m.UnmarshalBinary(rec.Data); err != nil {
		t.Fatal(err)
	}
	ev := api.Event{
		DeviceID:         m.ConnectionDeviceID,
		ModuleID:         m.ConnectionModuleID,
		Partition:        rec.Partition,
		SequenceNumber:   rec.Sequence,
		EnqueuedTime:     m.EnqueuedTime,
		SystemProperties: make(map[string]string),
		Properties:       m.Properties,
	}
	if m.Routing != nil {
		ev.Routes = m.Routing.Routes
	}
	if ev.Properties == nil {
		ev.Properties = map[string]string{}
	}
	for _, p := range m.SystemProperties() {
		ev.SystemProperties[p.Name] = p.Value
	}
	if utf8.Valid(m.Body) {
		body := string(m.Body)
		ev.Body = &body
	} else {
		ev.BodyBase64 = base64.StdEncoding.EncodeToString(m.Body)
	}
	if raw {
		ev.Endpoints = []string{}
		if m.Routing == nil {
			ev.Endpoints = []string{message.BuiltInEndpoint}
		} else if len(m.Routing.Endpoints) > 0 {
			ev.Endpoints = m.Routing.Endpoints
		}
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(&ev); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// everyField is a message with every string field set (found by reflection, so a field added
// to Message is covered), each to a value of its own.
func everyField() message.Message {
	m := message.Message{
		EnqueuedTime: time.Date(2026, 11, 25, 14, 0, 0, 120000000, time.UTC),
		Properties:   map[string]string{"b": "2", "a": "1", "Z": "<&>"},
		Body:         []byte(`{"temp":21.5}`),
		Routing:      &message.Routing{Routes: []string{"hot", "$fallback"}, Endpoints: []string{"events", "lake"}},
	}
	rv := reflect.ValueOf(&m).Elem()
	for i := range rv.NumField() {
		if f := rv.Field(i); f.Kind() == reflect.String {
			f.SetString("v-" + rv.Type().Field(i).Name + "\u2028\"")
		}
	}
	return m
}

func TestAppendEventMatchesEncodingJSON(t *testing.T) {
	enq := time.Unix(1764079200, 123456789).UTC()
	messages := map[string]message.Message{
		"empty":         {},
		"every field":   everyField(),
		"bench device":  {ConnectionDeviceID: "bench-7", ConnectionAuthGenerationID: "639312185157875247", ConnectionAuthMethod: `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`, EnqueuedTime: enq, Source: message.SourceTelemetry, Body: []byte("01795621715899951812xxxx")},
		"module":        {ConnectionDeviceID: "d", ConnectionModuleID: "m", EnqueuedTime: enq},
		"binary body":   {ConnectionDeviceID: "d", Body: []byte{0xff, 0xfe, 0}},
		"whole seconds": {EnqueuedTime: time.Unix(1764079200, 0).UTC()},
		"escapes": {ConnectionDeviceID: "a\"b\\c/d", MessageID: "\x00\x01\x1f\x7f", ContentType: "<script>&",
			Properties: map[string]string{"\t\n\r\b\f": "\u2028\u2029", "ü": "ß€😀", "": ""},
			Body:       []byte("line\nnext \"quoted\" <b> & \u2029 tab\t")},
		"invalid UTF-8 in strings": {ConnectionDeviceID: "d\xff", Properties: map[string]string{"k\xc3": "\xed\xa0\x80v"}, Body: []byte("ok")},
		"routed nowhere":           {ConnectionDeviceID: "d", Routing: &message.Routing{}},
		"routed to events":         {ConnectionDeviceID: "d", Routing: &message.Routing{Routes: []string{"$fallback"}, Endpoints: []string{"events"}}},
		"many properties": {Properties: func() map[string]string {
			p := map[string]string{}
			for i := range 40 {
				p[strings.Repeat("k", i)] = strings.Repeat("v", 40-i)
			}
			return p
		}()},
	}
	for name, m := range messages {
		data, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		rec := telemetry.Record{Partition: 3, Sequence: 1234567890123, Data: data}
		for _, raw := range []bool{false, true} {
			var v message.View
			if err := v.Decode(data); err != nil {
				t.Fatal(err)
			}
			got := appendEvent(nil, rec.Partition, rec.Sequence, &v, raw)
			if want := referenceEvent(t, rec, raw); !bytes.Equal(got, want) {
				t.Errorf("%s (raw %v):\n got %s\nwant %s", name, raw, got, want)
			}
		}
	}
}

func FuzzAppendEvent(f *testing.F) {
	f.Add("bench-1", "", "Telemetry", "k", "v", []byte("body"), int64(1764079200123456789), true)
	f.Add("d\"<>&", "m\u2028", "", "\x00", "\xff", []byte{0xff}, int64(0), false)
	f.Fuzz(func(t *testing.T, device, module, source, key, value string, body []byte, nanos int64, routed bool) {
		m := message.Message{ConnectionDeviceID: device, ConnectionModuleID: module, Source: source,
			Properties: map[string]string{key: value, key + "x": value + value}, Body: body}
		if nanos != 0 {
			m.EnqueuedTime = time.Unix(0, nanos).UTC()
		}
		if routed {
			m.Routing = &message.Routing{Routes: []string{key}, Endpoints: []string{value, message.BuiltInEndpoint}}
		}
		data, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		rec := telemetry.Record{Partition: 1, Sequence: 42, Data: data}
		var v message.View
		if err := v.Decode(data); err != nil {
			t.Fatal(err)
		}
		for _, raw := range []bool{false, true} {
			if got, want := appendEvent(nil, 1, 42, &v, raw), referenceEvent(t, rec, raw); !bytes.Equal(got, want) {
				t.Fatalf("raw %v:\n got %s\nwant %s", raw, got, want)
			}
		}
	})
}

// benchRecord is a record as the hub stores it from `tether bench`: the hub's stamps and a
// 256-byte payload.
func benchRecord(b *testing.B) telemetry.Record {
	m := message.Message{ConnectionDeviceID: "bench-17", ConnectionAuthGenerationID: "639312185157875247",
		ConnectionAuthMethod: `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`,
		EnqueuedTime:         time.Unix(1764079200, 123456789).UTC(), Source: message.SourceTelemetry,
		Body: []byte("01795621715899951812" + strings.Repeat("x", 236))}
	data, err := m.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	return telemetry.Record{Partition: 2, Sequence: 1234567, Data: data}
}

// BenchmarkEncodeEvent is the hub's work per event of the stream: decode the record and write
// its JSON line or its binary frame.
func BenchmarkEncodeEvent(b *testing.B) {
	rec := benchRecord(b)
	s := &Server{}
	b.Run("appendEvent", func(b *testing.B) {
		var v message.View
		var buf []byte
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := s.builtInRecord(rec, &v, "", false); err != nil || !ok {
				b.Fatal(ok, err)
			}
			buf = appendEvent(buf[:0], rec.Partition, rec.Sequence, &v, false)
		}
		b.SetBytes(int64(len(buf)))
	})
	b.Run("binary", func(b *testing.B) { // api.EventStreamBinary
		var v message.View
		var buf []byte
		b.ReportAllocs()
		for b.Loop() {
			data, ok, err := s.builtInRecord(rec, &v, "", false)
			if err != nil || !ok {
				b.Fatal(ok, err)
			}
			buf = appendBinaryEvent(buf[:0], rec.Partition, rec.Sequence, data)
		}
		b.SetBytes(int64(len(buf)))
	})
	b.Run("encoding-json", func(b *testing.B) { // the reference, as the stream wrote events before
		b.ReportAllocs()
		for b.Loop() {
			referenceEvent(b, rec, false)
		}
	})
}

// TestPropertiesOutOfOrder: a record whose properties are not stored by name, each once (the
// hub never writes one), is written as the map it decodes to, like any other.
func TestPropertiesOutOfOrder(t *testing.T) {
	data := []byte{2} // version
	for range 18 {    // the string fields, empty
		data = binenc.AppendString(data, "")
	}
	data = binary.AppendVarint(data, 0)
	data = binary.AppendUvarint(data, 3)
	for _, kv := range [][2]string{{"b", "1"}, {"a", "2"}, {"b", "3"}} {
		data = binenc.AppendString(binenc.AppendString(data, kv[0]), kv[1])
	}
	data = binenc.AppendString(data, "body")
	data = append(data, 0) // no routing decision
	rec := telemetry.Record{Partition: 1, Sequence: 7, Data: data}
	var v message.View
	if _, ok, err := (&Server{}).builtInRecord(rec, &v, "", false); err != nil || !ok {
		t.Fatal(ok, err)
	}
	got := appendEvent(nil, rec.Partition, rec.Sequence, &v, false)
	if want := referenceEvent(t, rec, false); !bytes.Equal(got, want) {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
	if !bytes.Contains(got, []byte(`"properties":{"a":"2","b":"3"}`)) {
		t.Fatalf("properties not as the map decodes them: %s", got)
	}
}

// recorder is a ResponseWriter's flushing side that records what was flushed.
type recorder struct {
	mu      sync.Mutex
	written bytes.Buffer
	flushed int // bytes written when last flushed
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.written.Write(p)
}

func (r *recorder) Flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushed = r.written.Len()
}

// TestEventWriterFlushesLastWrite: whatever writers skip a flush for one waiting, everything
// written is flushed once they are done, and lines are never interleaved.
func TestEventWriterFlushesLastWrite(t *testing.T) {
	rec := &recorder{}
	out := &eventWriter{w: bufio.NewWriterSize(rec, 32<<10), flusher: rec}
	const writers, writes = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			line := []byte(strings.Repeat(string(rune('a'+w)), 100) + "\n")
			for i := range writes {
				if err := out.write(line, i%10 == 0); err != nil {
					t.Error(err)
				}
			}
			if err := out.write(line, false); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if want := writers * (writes + 1) * 101; rec.written.Len() != want || rec.flushed != want {
		t.Fatalf("written %d, flushed %d, want %d", rec.written.Len(), rec.flushed, want)
	}
	for _, line := range strings.Split(strings.TrimSuffix(rec.written.String(), "\n"), "\n") {
		if len(line) != 100 || strings.Count(line, line[:1]) != 100 {
			t.Fatalf("interleaved line %q", line)
		}
	}
}

// TestNeedsLook: every byte appendJSONString escapes, or that is not ASCII, is seen at every
// position of a word; a word of bytes written as they are is passed over.
func TestNeedsLook(t *testing.T) {
	for c := range 256 {
		special := c >= utf8.RuneSelf || !jsonSafe[c]
		for at := range 8 {
			word := []byte("abcdefgh")
			word[at] = byte(c)
			if got := needsLook(word); got != special {
				t.Fatalf("byte %#x at %d: needsLook %v, want %v", c, at, got, special)
			}
		}
	}
}
