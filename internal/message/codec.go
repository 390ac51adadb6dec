package message

import (
	"encoding/binary"
	"errors"
	"math/bits"

	"github.com/tetherhub/tether/internal/binenc"
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
		b = binenc.AppendString(b, *f)
	}
	var nanos int64
	if !m.EnqueuedTime.IsZero() {
		nanos = m.EnqueuedTime.UnixNano()
	}
	b = binary.AppendVarint(b, nanos)
	b = binenc.AppendStringMap(b, m.Properties)
	b = binary.AppendUvarint(b, uint64(len(m.Body)))
	b = append(b, m.Body...)
	if m.Routing == nil {
		return append(b, 0), nil
	}
	b = append(b, 1)
	b = binenc.AppendStrings(b, m.Routing.Routes)
	b = binenc.AppendStrings(b, m.Routing.Endpoints)
	return b, nil
}

// MarshalBinary implements encoding.BinaryMarshaler.
func (m *Message) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, m.encodedSize()))
}

// encodedSize is the exact length of the encoding, so MarshalBinary allocates once and no more
// than it needs (the buffer is kept by the telemetry log until it is written).
func (m *Message) encodedSize() int {
	var nanos int64
	if !m.EnqueuedTime.IsZero() {
		nanos = m.EnqueuedTime.UnixNano()
	}
	// Version, enqueued time (zigzag varint), properties count, body, routing flag.
	n := 1 + uvarintLen(uint64(nanos)<<1^uint64(nanos>>63)) + uvarintLen(uint64(len(m.Properties))) +
		uvarintLen(uint64(len(m.Body))) + len(m.Body) + 1
	for _, f := range m.stringFields() {
		n += stringLen(*f)
	}
	for k, v := range m.Properties {
		n += stringLen(k) + stringLen(v)
	}
	if r := m.Routing; r != nil {
		n += uvarintLen(uint64(len(r.Routes))) + uvarintLen(uint64(len(r.Endpoints)))
		for _, s := range r.Routes {
			n += stringLen(s)
		}
		for _, s := range r.Endpoints {
			n += stringLen(s)
		}
	}
	return n
}

// uvarintLen is the length of binary.AppendUvarint's encoding of x.
func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// stringLen is the length of binenc.AppendString's encoding of s.
func stringLen(s string) int { return uvarintLen(uint64(len(s))) + len(s) }

// UnmarshalBinary implements encoding.BinaryUnmarshaler. The body is copied out of data.
//
// A reader of the log decodes every record, so this allocates little: the string fields, the
// property names and values and the routing names are copied into one string they all share
// (keeping any of them keeps that string alive), the body is one copy, the properties one map
// and the routing decision one allocation. A reader that does not keep the message can use a
// View instead, which copies nothing.
func (m *Message) UnmarshalBinary(data []byte) error {
	var props [16]PropertyView
	var names [8][]byte
	v, err := decodeView(data, props[:0], names[:0])
	if err != nil {
		return err
	}
	v.message(m)
	return nil
}
