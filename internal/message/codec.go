package message

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

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

// UnmarshalBinary implements encoding.BinaryUnmarshaler. The body is copied out of data.
func (m *Message) UnmarshalBinary(data []byte) error {
	d := binenc.NewDecoder(data, ErrCorrupt)
	version := d.Byte()
	if err := d.Err(); err != nil {
		return err
	}
	if version != codecVersion && version != codecVersionV1 {
		return fmt.Errorf("%w: unknown version %d", ErrCorrupt, version)
	}
	*m = Message{}
	for _, f := range m.stringFields() {
		*f = d.Str()
	}
	if nanos := d.Varint(); nanos != 0 {
		m.EnqueuedTime = time.Unix(0, nanos).UTC()
	}
	m.Properties = d.StringMap()
	body := d.Bytes()
	if version >= 2 && d.Byte() == 1 {
		m.Routing = &Routing{Routes: d.Strings(), Endpoints: d.Strings()}
	}
	if err := d.Finish(); err != nil {
		return err
	}
	if len(body) > 0 {
		m.Body = append([]byte(nil), body...)
	}
	return nil
}
