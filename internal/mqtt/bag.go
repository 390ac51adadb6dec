package mqtt

import (
	"strings"

	"github.com/tetherhub/tether/internal/message"
)

// BagEntry is one entry of an MQTT property bag ("name=value" or "name").
type BagEntry struct {
	Name, Value string
	// NoValue marks an entry written as "name" alone (a null value); "name=" is an empty value.
	NoValue bool
}

// ParseBag splits a D2C property bag (the part of the topic after .../messages/events/) into
// percent-decoded entries in wire order, per spec 3.3: the bag is not split on '/' (the C SDK
// writes raw values such as "%24.ct=application/json"); one trailing '/' is dropped (.NET, Node
// module output events); tokens are separated by '&' and empty tokens are skipped; a token
// without '=' has NoValue set; names and values are percent-decoded with '+' kept literal, and
// one with a malformed escape is kept exactly as sent.
func ParseBag(bag string) []BagEntry {
	var out []BagEntry
	d := newBagDecoder(bag)
	eachBagToken(bag, func(name, value string, hasValue bool) {
		out = append(out, BagEntry{Name: d.unescape(name), Value: d.unescape(value), NoValue: !hasValue})
	})
	return out
}

// eachBagToken calls fn with each token's raw (still encoded) name and value.
func eachBagToken(bag string, fn func(name, value string, hasValue bool)) {
	bag = strings.TrimSuffix(bag, "/")
	for bag != "" {
		tok := bag
		if i := strings.IndexByte(bag, '&'); i >= 0 {
			tok, bag = bag[:i], bag[i+1:]
		} else {
			bag = ""
		}
		if tok != "" {
			fn(strings.Cut(tok, "="))
		}
	}
}

// Property names this package sets on messages.
const (
	// PropRetain is set to "true" on a PUBLISH with RETAIN=1 (IoT Hub: mqtt-retain).
	PropRetain = "mqtt-retain"
	// PropMessageType is set to "Will" on a will message.
	PropMessageType = "iothub-MessageType"
)

// ApplyBag parses a D2C property bag (see ParseBag) into msg: the "$."-prefixed names of spec
// table 2.4 set system properties; "$.cdid" and "$.cmid" are dropped because only the hub may
// stamp the connection identity; every other name, including "$.diagid", "$.diagctx" and
// unknown "$." names, becomes an application property under its decoded name. Entries with an
// empty name are dropped. Later entries win.
func ApplyBag(msg *message.Message, bag string) {
	d := newBagDecoder(bag)
	eachBagToken(bag, func(rawName, rawValue string, _ bool) {
		// Fast path for the form every SDK writes system keys in ("%24.mid"): no decoding.
		if key, ok := strings.CutPrefix(rawName, "%24."); ok && strings.IndexByte(key, '%') < 0 {
			if f := systemField(msg, key); f != nil {
				*f = d.unescape(rawValue)
				return
			}
		}
		name := d.unescape(rawName)
		if name == "" {
			return
		}
		if key, ok := strings.CutPrefix(name, "$."); ok {
			if f := systemField(msg, key); f != nil {
				*f = d.unescape(rawValue)
				return
			}
			if key == "cdid" || key == "cmid" {
				return
			}
		}
		msg.SetProperty(name, d.unescape(rawValue))
	})
}

// bagDecoder percent-decodes the names and values of one bag into one shared buffer, so a bag
// costs at most one allocation, and none when nothing in it is escaped (the decoded strings of
// a bag without escapes are substrings of the bag).
type bagDecoder struct {
	buf strings.Builder // only appended to: the strings handed out stay valid
	max int             // what the bag's escaped names and values decode to, at most: one Grow
}

// newBagDecoder decodes the tokens of bag. Each well-formed escape shrinks by two bytes, so
// what decoding writes is bounded by the bag's length less that, unless malformed escapes
// (not decoded) make the bound short: the buffer then grows, and nothing else changes.
func newBagDecoder(bag string) bagDecoder {
	return bagDecoder{max: len(bag) - 2*strings.Count(bag, "%")}
}

// unescape percent-decodes s with url.PathUnescape's rules: "%XX" (hex, either case) is the
// byte XX, '+' stays '+', and s with any malformed escape ('%' not followed by two hex digits)
// is returned as it is.
func (d *bagDecoder) unescape(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 || !wellEscaped(s, i) {
		return s
	}
	if d.buf.Cap() == 0 {
		d.buf.Grow(max(d.max, len(s)))
	}
	start := d.buf.Len()
	for i >= 0 {
		d.buf.WriteString(s[:i])
		d.buf.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
		s = s[i+3:]
		i = strings.IndexByte(s, '%')
	}
	d.buf.WriteString(s)
	return d.buf.String()[start:]
}

// unescape percent-decodes s like bagDecoder.unescape, allocating only when s is escaped.
func unescape(s string) string {
	var d bagDecoder
	return d.unescape(s)
}

// wellEscaped reports whether every '%' in s, the first at i, is followed by two hex digits.
func wellEscaped(s string, i int) bool {
	for {
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return false
		}
		k := strings.IndexByte(s[i+3:], '%')
		if k < 0 {
			return true
		}
		i += 3 + k
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// unhex is the value of the hex digit c (isHex(c) holds).
func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// systemField maps a property-bag system key (without "$.") to the message field it sets.
func systemField(m *message.Message, key string) *string {
	switch key {
	case "mid":
		return &m.MessageID
	case "cid":
		return &m.CorrelationID
	case "uid":
		return &m.UserID
	case "to":
		return &m.To
	case "ct":
		return &m.ContentType
	case "ce":
		return &m.ContentEncoding
	case "exp":
		return &m.ExpiryTime
	case "ctime":
		return &m.CreationTime
	case "schema":
		return &m.MessageSchema
	case "ifid":
		return &m.InterfaceID
	case "sub":
		return &m.ComponentName
	case "on":
		return &m.OutputName
	}
	return nil
}

// EncodeBag writes a property bag for the hub-to-device direction (C2D topics): names and values
// fully percent-encoded (everything but ALPHA, DIGIT, '-', '.', '_', '~'), so '$' is "%24" and
// the result never contains '/' — the SDKs find the bag by splitting the topic on '/'. A
// NoValue entry is written as "name", an empty value as "name=".
func EncodeBag(entries []BagEntry) string {
	n := 0
	for _, e := range entries {
		n += len(e.Name) + len(e.Value) + 2
	}
	var b strings.Builder
	b.Grow(n + n/2)
	for i, e := range entries {
		if i > 0 {
			b.WriteByte('&')
		}
		writeEscaped(&b, e.Name)
		if !e.NoValue {
			b.WriteByte('=')
			writeEscaped(&b, e.Value)
		}
	}
	return b.String()
}

func writeEscaped(b *strings.Builder, s string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
