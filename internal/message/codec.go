package message

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// codecVersion leads every encoded message so the format can evolve without a migration:
// records stay readable for the whole retention period. Version 2 added the routing decision.
const (
	codecVersion   = 2
	codecVersionV1 = 1
)

// ErrCorrupt reports an encoded message that cannot be decoded.
var ErrCorrupt = errors.New("corrupt encoded message")

// stringFields lists the string fields in encoding order. Appending to it needs a new version.
func (m *Message) stringFields() []*string {
	return []*string{
		&m.MessageID, &m.CorrelationID, &m.UserID, &m.To, &m.ContentType, &m.ContentEncoding,
		&m.ExpiryTime, &m.CreationTime, &m.MessageSchema, &m.InterfaceID, &m.ComponentName,
		&m.OutputName, &m.ConnectionDeviceID, &m.ConnectionModuleID, &m.ConnectionAuthGenerationID,
		&m.ConnectionAuthMethod, &m.DataSchema, &m.Source,
	}
}

// AppendBinary appends the message's encoding to b. Properties are written in name order so equal
// messages encode equally.
func (m *Message) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, codecVersion)
	for _, f := range m.stringFields() {
		b = appendString(b, *f)
	}
	var nanos int64
	if !m.EnqueuedTime.IsZero() {
		nanos = m.EnqueuedTime.UnixNano()
	}
	b = binary.AppendVarint(b, nanos)
	b = binary.AppendUvarint(b, uint64(len(m.Properties)))
	// Sorted names on the stack for the usual handful of properties: no allocation per message.
	var small [16]string
	names := small[:0]
	for k := range m.Properties {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		b = appendString(b, k)
		b = appendString(b, m.Properties[k])
	}
	b = binary.AppendUvarint(b, uint64(len(m.Body)))
	b = append(b, m.Body...)
	if m.Routing == nil {
		return append(b, 0), nil
	}
	b = append(b, 1)
	b = appendStrings(b, m.Routing.Routes)
	b = appendStrings(b, m.Routing.Endpoints)
	return b, nil
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

// MarshalBinary implements encoding.BinaryMarshaler.
func (m *Message) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, m.encodedSize()))
}

// encodedSize is an upper bound of the encoding's length, so MarshalBinary allocates once.
func (m *Message) encodedSize() int {
	const lenMax = binary.MaxVarintLen64
	n := 1 + lenMax + lenMax + lenMax + len(m.Body) + 1
	for _, f := range m.stringFields() {
		n += lenMax + len(*f)
	}
	for k, v := range m.Properties {
		n += 2*lenMax + len(k) + len(v)
	}
	if r := m.Routing; r != nil {
		n += 2 * lenMax
		for _, s := range r.Routes {
			n += lenMax + len(s)
		}
		for _, s := range r.Endpoints {
			n += lenMax + len(s)
		}
	}
	return n
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// UnmarshalBinary implements encoding.BinaryUnmarshaler. The body is copied out of data.
func (m *Message) UnmarshalBinary(data []byte) error {
	d := decoder{buf: data}
	version := d.byte()
	if d.err != nil {
		return d.err
	}
	if version != codecVersion && version != codecVersionV1 {
		return fmt.Errorf("%w: unknown version %d", ErrCorrupt, version)
	}
	*m = Message{}
	for _, f := range m.stringFields() {
		*f = d.string()
	}
	if nanos := d.varint(); nanos != 0 {
		m.EnqueuedTime = time.Unix(0, nanos).UTC()
	}
	n := d.uvarint()
	if n > uint64(len(d.buf)) { // each property takes at least two bytes
		return fmt.Errorf("%w: %d properties in %d bytes", ErrCorrupt, n, len(d.buf))
	}
	if n > 0 {
		m.Properties = make(map[string]string, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.string()
		m.Properties[k] = d.string()
	}
	body := d.bytes()
	if version >= 2 && d.byte() == 1 {
		m.Routing = &Routing{Routes: d.strings(), Endpoints: d.strings()}
	}
	if d.err != nil {
		return d.err
	}
	if len(d.buf) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.buf))
	}
	if len(body) > 0 {
		m.Body = append([]byte(nil), body...)
	}
	return nil
}

// decoder reads the encoding; the first error sticks and later reads return zero values.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", ErrCorrupt, what)
	}
	d.buf = nil
}

func (d *decoder) byte() byte {
	if len(d.buf) < 1 {
		d.fail("version")
		return 0
	}
	c := d.buf[0]
	d.buf = d.buf[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("length")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("time")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.fail("field")
		return nil
	}
	b := d.buf[:n]
	d.buf = d.buf[n:]
	return b
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) strings() []string {
	n := d.uvarint()
	if n > uint64(len(d.buf)) { // each string takes at least one byte
		d.fail("list")
		return nil
	}
	var out []string
	for i := uint64(0); i < n && d.err == nil; i++ {
		out = append(out, d.string())
	}
	return out
}
