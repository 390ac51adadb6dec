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

// Bytes has a path for one-byte lengths and one for longer ones: fields on both sides of 127
// bytes read back, and a record cut anywhere fails with the sentinel.
func TestBytesAroundOneByteLengths(t *testing.T) {
	sizes := []int{0, 1, 126, 127, 128, 300, 20000}
	var b []byte
	for i, n := range sizes {
		f := make([]byte, n)
		for j := range f {
			f[j] = byte(i + j)
		}
		b = binary.AppendUvarint(b, uint64(n))
		b = append(b, f...)
	}
	d := NewDecoder(b, errTest)
	for i, n := range sizes {
		f := d.Bytes()
		if len(f) != n || (n > 0 && (f[0] != byte(i) || f[n-1] != byte(i+n-1))) {
			t.Fatalf("field %d: %d bytes, want %d", i, len(f), n)
		}
	}
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
	for cut := range len(b) {
		d := NewDecoder(b[:cut], errTest)
		for range sizes {
			d.Bytes()
		}
		if err := d.Finish(); !errors.Is(err, errTest) {
			t.Fatalf("cut at %d: err = %v, want the sentinel", cut, err)
		}
	}
}
