package c2d

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Record versions lead every stored value so the format can evolve without a migration.
const (
	contentVersion = 1
	stateVersion   = 1
)

// errCorrupt reports a stored value that cannot be decoded.
var errCorrupt = errors.New("corrupt stored value")

// content is the immutable part of a queued message.
type content struct {
	MessageID, CorrelationID, UserID, ContentType, ContentEncoding string
	Ack                                                            AckMode
	GenerationID                                                   string // device generation id, for feedback
	Enqueued                                                       time.Time
	Properties                                                     map[string]string
	Body                                                           []byte
}

// state is the mutable part of a queued message. A zero LockedUntil means Enqueued.
type state struct {
	DeliveryCount int
	Expiry        time.Time
	LockedUntil   time.Time
	LockToken     string
}

func (st *state) locked() bool { return !st.LockedUntil.IsZero() }

// lockValid reports whether the message is locked and the lock has not expired at now.
func (st *state) lockValid(now time.Time) bool { return st.locked() && now.Before(st.LockedUntil) }

// deadline is when the sweeper must look at the message next.
func (st *state) deadline() time.Time {
	if st.locked() {
		return st.LockedUntil
	}
	return st.Expiry
}

func (c *content) encode() []byte {
	b := make([]byte, 0, 64+len(c.Body))
	b = append(b, contentVersion)
	for _, s := range []string{c.MessageID, c.CorrelationID, c.UserID, c.ContentType, c.ContentEncoding, string(c.Ack), c.GenerationID} {
		b = appendString(b, s)
	}
	b = binary.AppendVarint(b, unixNano(c.Enqueued))
	b = binary.AppendUvarint(b, uint64(len(c.Properties)))
	for _, k := range sortedNames(c.Properties) {
		b = appendString(b, k)
		b = appendString(b, c.Properties[k])
	}
	b = binary.AppendUvarint(b, uint64(len(c.Body)))
	return append(b, c.Body...)
}

// decodeContent decodes a stored message, copying everything out of data (which bbolt owns).
func decodeContent(data []byte) (content, error) {
	var c content
	d := decoder{buf: data}
	if v := d.byte(); d.err == nil && v != contentVersion {
		return c, fmt.Errorf("%w: unknown message version %d", errCorrupt, v)
	}
	var ack string
	for _, p := range []*string{&c.MessageID, &c.CorrelationID, &c.UserID, &c.ContentType, &c.ContentEncoding, &ack, &c.GenerationID} {
		*p = d.string()
	}
	c.Ack = AckMode(ack)
	c.Enqueued = fromNano(d.varint())
	n := d.uvarint()
	if n > uint64(len(d.buf)) { // each property takes at least two bytes
		return c, fmt.Errorf("%w: %d properties in %d bytes", errCorrupt, n, len(d.buf))
	}
	if n > 0 {
		c.Properties = make(map[string]string, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.string()
		c.Properties[k] = d.string()
	}
	body := d.bytes()
	if err := d.finish(); err != nil {
		return c, err
	}
	if len(body) > 0 {
		c.Body = append([]byte(nil), body...)
	}
	return c, nil
}

func (st *state) encode() []byte {
	b := make([]byte, 0, 32+len(st.LockToken))
	b = append(b, stateVersion)
	b = binary.AppendUvarint(b, uint64(st.DeliveryCount))
	b = binary.AppendVarint(b, unixNano(st.Expiry))
	b = binary.AppendVarint(b, unixNano(st.LockedUntil))
	return appendString(b, st.LockToken)
}

func decodeState(data []byte) (state, error) {
	var st state
	d := decoder{buf: data}
	if v := d.byte(); d.err == nil && v != stateVersion {
		return st, fmt.Errorf("%w: unknown state version %d", errCorrupt, v)
	}
	st.DeliveryCount = int(d.uvarint())
	st.Expiry = fromNano(d.varint())
	st.LockedUntil = fromNano(d.varint())
	st.LockToken = d.string()
	return st, d.finish()
}

// unixNano maps the zero time to 0 so "unset" round-trips.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoder reads the encoding; the first error sticks and later reads return zero values.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", errCorrupt, what)
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
		d.fail("number")
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

func (d *decoder) finish() error {
	if d.err != nil {
		return d.err
	}
	if len(d.buf) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.buf))
	}
	return nil
}

// Keys.

const (
	countKey   = "n"
	prefixMsg  = 'm'
	prefixStat = 's'
	prefixLock = 'l'
)

func seqKey(prefix byte, seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefix
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

func lockKey(token string) []byte {
	return append([]byte{prefixLock}, token...)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// timerKey orders a message by deadline; deviceID "" is the feedback queue.
func timerKey(deadline time.Time, seq uint64, deviceID string) []byte {
	k := make([]byte, 16, 16+len(deviceID))
	binary.BigEndian.PutUint64(k, uint64(unixNano(deadline)))
	binary.BigEndian.PutUint64(k[8:], seq)
	return append(k, deviceID...)
}

func parseTimerKey(k []byte) (deadline time.Time, seq uint64, deviceID string, ok bool) {
	if len(k) < 16 {
		return time.Time{}, 0, "", false
	}
	return fromNano(int64(binary.BigEndian.Uint64(k))), binary.BigEndian.Uint64(k[8:]), string(k[16:]), true
}
