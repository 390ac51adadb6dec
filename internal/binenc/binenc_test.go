package binenc

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

var errTest = errors.New("corrupt test record")

func TestRoundTripAndEveryTruncationWrapsTheSentinel(t *testing.T) {
	props := map[string]string{"b": "2", "a": "1", "": ""}
	b := []byte{7}
	b = AppendString(b, "hello")
	b = binary.AppendVarint(b, -42)
	b = AppendStringMap(b, props)
	b = AppendStrings(b, []string{"x", "yz"})
	b = binary.AppendUvarint(b, 3)
	b = append(b, "abc"...)

	d := NewDecoder(b, errTest)
	if v, s, n := d.Byte(), d.Str(), d.Varint(); v != 7 || s != "hello" || n != -42 {
		t.Fatalf("got %d %q %d", v, s, n)
	}
	if m := d.StringMap(); !reflect.DeepEqual(m, props) {
		t.Fatalf("map = %v", m)
	}
	if ss := d.Strings(); !reflect.DeepEqual(ss, []string{"x", "yz"}) {
		t.Fatalf("strings = %q", ss)
	}
	if f := d.Bytes(); string(f) != "abc" {
		t.Fatalf("field = %q", f)
	}
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}

	// Equal maps encode equally, whatever their iteration order.
	if a, b := AppendStringMap(nil, props), AppendStringMap(nil, map[string]string{"": "", "a": "1", "b": "2"}); string(a) != string(b) {
		t.Fatalf("map encodings differ: %q %q", a, b)
	}

	for i := range len(b) {
		d := NewDecoder(b[:i], errTest)
		d.Byte()
		d.Str()
		d.Varint()
		d.StringMap()
		d.Strings()
		d.Bytes()
		if err := d.Finish(); !errors.Is(err, errTest) {
			t.Fatalf("truncated at %d: err = %v, want the sentinel", i, err)
		}
	}
	d = NewDecoder(append(b[:1:1], 0, 0), errTest)
	d.Byte()
	d.Str()
	if err := d.Finish(); !errors.Is(err, errTest) {
		t.Fatalf("trailing byte: err = %v", err)
	}
}

func TestFirstErrorSticks(t *testing.T) {
	d := NewDecoder([]byte{0x80}, errTest) // an unterminated varint
	if n := d.Uvarint(); n != 0 {
		t.Fatalf("read %d from a truncated varint", n)
	}
	first := d.Err()
	if first == nil {
		t.Fatal("no error")
	}
	if d.Byte() != 0 || d.Str() != "" || d.Strings() != nil || d.StringMap() != nil || d.Err() != first || d.Finish() != first {
		t.Fatalf("reads after an error: err %v, want %v", d.Err(), first)
	}
}
