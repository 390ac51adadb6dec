package message

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fullMessage has every string field set, each to a value of its own (found by reflection, so
// a field added to Message is covered).
func fullMessage() Message {
	m := Message{
		EnqueuedTime: time.Date(2026, 11, 25, 14, 0, 0, 120000000, time.UTC),
		Properties:   map[string]string{"b": "2", "a": "1", "": "", "ü": "ß"},
		Body:         []byte{0, 1, 2, 0xff},
		Routing:      &Routing{Routes: []string{"hot", "$fallback"}, Endpoints: []string{"events", "lake", "hook"}},
	}
	rv := reflect.ValueOf(&m).Elem()
	for i := range rv.NumField() {
		if f := rv.Field(i); f.Kind() == reflect.String {
			f.SetString("v-" + rv.Type().Field(i).Name)
		}
	}
	return m
}

// checkView compares what a View and UnmarshalBinary make of data, field by field.
func checkView(t *testing.T, v *View, m *Message) {
	t.Helper()
	mv, vv := reflect.ValueOf(m).Elem(), reflect.ValueOf(v).Elem()
	strs := 0
	for i := range mv.NumField() {
		f := mv.Type().Field(i)
		if f.Type.Kind() != reflect.String {
			continue
		}
		strs++
		vf := vv.FieldByName(f.Name)
		if !vf.IsValid() {
			t.Fatalf("View has no field %s", f.Name)
		}
		if got := string(vf.Bytes()); got != mv.Field(i).String() {
			t.Errorf("%s: view %q, message %q", f.Name, got, mv.Field(i).String())
		}
	}
	if strs != numStringFields {
		t.Errorf("Message has %d string fields, numStringFields is %d", strs, numStringFields)
	}
	if !v.EnqueuedTime.Equal(m.EnqueuedTime) || v.EnqueuedTime.Location() != m.EnqueuedTime.Location() {
		t.Errorf("enqueued time: view %v, message %v", v.EnqueuedTime, m.EnqueuedTime)
	}
	props := map[string]string{}
	for _, p := range v.Properties {
		props[string(p.Name)] = string(p.Value)
	}
	if len(props) != len(m.Properties) || (len(m.Properties) > 0 && !reflect.DeepEqual(props, m.Properties)) {
		t.Errorf("properties: view %v, message %v", props, m.Properties)
	}
	if !bytes.Equal(v.Body, m.Body) {
		t.Errorf("body: view %q, message %q", v.Body, m.Body)
	}
	if v.Routed != (m.Routing != nil) {
		t.Fatalf("routed: view %v, message %+v", v.Routed, m.Routing)
	}
	if m.Routing != nil {
		if got := joinBytes(v.Routes); got != strings.Join(m.Routing.Routes, ",") || (v.Routes == nil) != (m.Routing.Routes == nil) {
			t.Errorf("routes: view %q, message %q", got, m.Routing.Routes)
		}
		if got := joinBytes(v.Endpoints); got != strings.Join(m.Routing.Endpoints, ",") || (v.Endpoints == nil) != (m.Routing.Endpoints == nil) {
			t.Errorf("endpoints: view %q, message %q", got, m.Routing.Endpoints)
		}
		for _, e := range []string{BuiltInEndpoint, "lake", "other"} {
			if v.ToEndpoint(e) != m.ToEndpoint(e) {
				t.Errorf("ToEndpoint(%q): view %v, message %v", e, v.ToEndpoint(e), m.ToEndpoint(e))
			}
		}
	}
}

func joinBytes(list [][]byte) string {
	s := make([]string, len(list))
	for i, b := range list {
		s[i] = string(b)
	}
	return strings.Join(s, ",")
}

func TestViewMatchesUnmarshalBinary(t *testing.T) {
	many := map[string]string{}
	for i := range 40 {
		many[strings.Repeat("k", i)] = "v"
	}
	full := fullMessage()
	for name, m := range map[string]Message{
		"empty":           {},
		"full":            full,
		"bench":           *benchMessage(),
		"many properties": {Properties: many, Routing: &Routing{Routes: make([]string, 9), Endpoints: []string{"events"}}},
		"routed nowhere":  {Routing: &Routing{}},
	} {
		data, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Message
		if err := got.UnmarshalBinary(data); err != nil {
			t.Fatal(err)
		}
		// One View for every message, so reuse is checked too: nothing of the one before shows.
		for _, v := range []*View{new(View), sharedView} {
			if err := v.Decode(data); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !v.PropertiesInOrder() {
				t.Errorf("%s: properties written by AppendBinary are out of order", name)
			}
			t.Run(name, func(t *testing.T) { checkView(t, v, &got) })
		}
	}
}

var sharedView = new(View)

// TestViewSeesPropertiesOutOfOrder: a record the hub never writes (names out of order, one
// twice) is flagged, and UnmarshalBinary keeps the last value of a name.
func TestViewSeesPropertiesOutOfOrder(t *testing.T) {
	enc := func(names ...string) []byte {
		m := Message{}
		b, _ := m.AppendBinary(nil)
		// Rewrite the empty property list (count 0 after the 18 empty strings and the zero time).
		at := 1 + numStringFields + 1
		var props []byte
		props = append(props, byte(len(names)))
		for i, n := range names {
			props = append(props, byte(len(n)))
			props = append(props, n...)
			props = append(props, 1, byte('0'+i))
		}
		return append(append(b[:at:at], props...), b[at+1:]...)
	}
	for _, tc := range []struct {
		names   []string
		inOrder bool
	}{{[]string{"a", "b"}, true}, {[]string{"b", "a"}, false}, {[]string{"a", "a"}, false}, {nil, true}} {
		data := enc(tc.names...)
		var v View
		if err := v.Decode(data); err != nil {
			t.Fatal(err)
		}
		if v.PropertiesInOrder() != tc.inOrder {
			t.Errorf("%v: in order = %v", tc.names, v.PropertiesInOrder())
		}
		var m Message
		if err := m.UnmarshalBinary(data); err != nil {
			t.Fatal(err)
		}
		if len(tc.names) == 2 && tc.names[0] == tc.names[1] && m.Properties["a"] != "1" {
			t.Errorf("a repeated name keeps %q, want the last value", m.Properties["a"])
		}
	}
}

func TestViewRejectsWhatUnmarshalRejects(t *testing.T) {
	full := fullMessage()
	data, _ := full.MarshalBinary()
	var v View
	for i := range len(data) {
		if err := v.Decode(data[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated at %d: err = %v, want ErrCorrupt", i, err)
		}
	}
	for _, bad := range [][]byte{append(data, 0), {9}, {2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if err := v.Decode(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%x: err = %v, want ErrCorrupt", bad, err)
		}
	}
}

func TestViewDecodeDoesNotAllocate(t *testing.T) {
	full := fullMessage()
	data, _ := full.MarshalBinary()
	var v View
	if allocs := testing.AllocsPerRun(100, func() {
		if err := v.Decode(data); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("Decode into a reused View: %v allocations", allocs)
	}
}

// BenchmarkViewDecode is what the event stream does per record before writing its JSON.
func BenchmarkViewDecode(b *testing.B) {
	data, err := benchMessage().MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	var v View
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzViewDecode: a View accepts what UnmarshalBinary accepts and reads the same message.
func FuzzViewDecode(f *testing.F) {
	full := fullMessage()
	for _, m := range []*Message{&full, benchMessage(), {}} {
		data, err := m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Message
		merr := m.UnmarshalBinary(data)
		var v View
		if verr := v.Decode(data); (verr == nil) != (merr == nil) {
			t.Fatalf("View: %v, UnmarshalBinary: %v", verr, merr)
		}
		if merr == nil {
			checkView(t, &v, &m)
		}
	})
}
