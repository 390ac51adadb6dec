// Package binenc is a sticky-error reader and writer for Tether's length-prefixed record
// encodings (stored telemetry messages, C2D queue records): uvarint counts and lengths, varint
// numbers, length-prefixed strings and byte fields, and string maps in name order.
//
// A Decoder keeps the first error and returns zero values after it, so a record is decoded
// field by field and checked once, with Finish. Errors wrap the sentinel the caller gives, so
// each format keeps its own (errors.Is(err, message.ErrCorrupt)).
package binenc

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// AppendString appends s with its uvarint length.
func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// AppendStrings appends the uvarint count of ss, then each string as AppendString does.
func AppendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = AppendString(b, s)
	}
	return b
}

// AppendStringMap appends the uvarint count of m, then each name and value as AppendString
// does, in name order so equal maps encode equally.
func AppendStringMap(b []byte, m map[string]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	// Sorted names on the stack for the usual handful of properties: no allocation per record.
	var small [16]string
	names := small[:0]
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		b = AppendString(b, k)
		b = AppendString(b, m[k])
	}
	return b
}

// Decoder reads an encoding; the first error sticks and later reads return zero values.
// Byte fields it returns alias the data it reads.
type Decoder struct {
	buf     []byte
	err     error
	corrupt error
}

// NewDecoder reads data; its errors wrap corrupt.
func NewDecoder(data []byte, corrupt error) Decoder {
	return Decoder{buf: data, corrupt: corrupt}
}

// Err is the first error, or nil.
func (d *Decoder) Err() error { return d.err }

// Finish returns the first error, or one for bytes left unread.
func (d *Decoder) Finish() error {
	if d.err != nil {
		return d.err
	}
	if len(d.buf) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", d.corrupt, len(d.buf))
	}
	return nil
}

// fail records err unless an error is already recorded, and stops the decoder.
func (d *Decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.buf = nil
}

func (d *Decoder) truncated(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", d.corrupt, what)
	}
	d.buf = nil
}

// Byte reads one byte (a version or a flag).
func (d *Decoder) Byte() byte {
	if len(d.buf) < 1 {
		d.truncated("version")
		return 0
	}
	c := d.buf[0]
	d.buf = d.buf[1:]
	return c
}

// Uvarint reads an unsigned varint (a count or a length).
func (d *Decoder) Uvarint() uint64 {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.truncated("length")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// Varint reads a signed varint (a time in Unix nanoseconds).
func (d *Decoder) Varint() int64 {
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.truncated("time")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// Bytes reads a length-prefixed field; the result aliases the data.
func (d *Decoder) Bytes() []byte {
	// Most fields of a record are empty or short: a one-byte length needs no varint loop.
	if len(d.buf) > 0 && d.buf[0] < 0x80 && d.err == nil {
		if n := int(d.buf[0]); n < len(d.buf) {
			b := d.buf[1 : 1+n]
			d.buf = d.buf[1+n:]
			return b
		}
	}
	n := d.Uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.truncated("field")
		return nil
	}
	b := d.buf[:n]
	d.buf = d.buf[n:]
	return b
}

// Str reads a length-prefixed string (a copy).
func (d *Decoder) Str() string { return string(d.Bytes()) }

// Strings reads what AppendStrings wrote.
func (d *Decoder) Strings() []string {
	n := d.Uvarint()
	if n > uint64(len(d.buf)) { // each string takes at least one byte
		d.truncated("list")
		return nil
	}
	var out []string
	for i := uint64(0); i < n && d.err == nil; i++ {
		out = append(out, d.Str())
	}
	return out
}

// StringMap reads what AppendStringMap wrote: nil for no entries.
func (d *Decoder) StringMap() map[string]string {
	n := d.Uvarint()
	if n > uint64(len(d.buf)) { // each entry takes at least two bytes
		d.fail(fmt.Errorf("%w: %d properties in %d bytes", d.corrupt, n, len(d.buf)))
		return nil
	}
	var m map[string]string
	if n > 0 {
		m = make(map[string]string, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.Str()
		m[k] = d.Str()
	}
	return m
}
