package c2d

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/tetherhub/tether/internal/binenc"
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
		b = binenc.AppendString(b, s)
	}
	b = binary.AppendVarint(b, unixNano(c.Enqueued))
	b = binenc.AppendStringMap(b, c.Properties)
	b = binary.AppendUvarint(b, uint64(len(c.Body)))
	return append(b, c.Body...)
}

// decodeContent decodes a stored message, copying everything out of data (which bbolt owns).
func decodeContent(data []byte) (content, error) {
	var c content
	d := binenc.NewDecoder(data, errCorrupt)
	if v := d.Byte(); d.Err() == nil && v != contentVersion {
		return c, fmt.Errorf("%w: unknown message version %d", errCorrupt, v)
	}
	var ack string
	for _, p := range []*string{&c.MessageID, &c.CorrelationID, &c.UserID, &c.ContentType, &c.ContentEncoding, &ack, &c.GenerationID} {
		*p = d.Str()
	}
	c.Ack = AckMode(ack)
	c.Enqueued = fromNano(d.Varint())
	c.Properties = d.StringMap()
	body := d.Bytes()
	if err := d.Finish(); err != nil {
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
	return binenc.AppendString(b, st.LockToken)
}

func decodeState(data []byte) (state, error) {
	var st state
	d := binenc.NewDecoder(data, errCorrupt)
	if v := d.Byte(); d.Err() == nil && v != stateVersion {
		return st, fmt.Errorf("%w: unknown state version %d", errCorrupt, v)
	}
	st.DeliveryCount = int(d.Uvarint())
	st.Expiry = fromNano(d.Varint())
	st.LockedUntil = fromNano(d.Varint())
	st.LockToken = d.Str()
	return st, d.Finish()
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
