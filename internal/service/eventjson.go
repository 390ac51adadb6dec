package service

import (
	"encoding/base64"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tetherhub/tether/internal/message"
)

// The event stream writes every record of the log as one JSON line: its CPU cost per event
// bounds how fast a reader can follow the hub. appendEvent writes the line straight from the
// encoded record (a message.View), byte for byte what encoding/json writes for the api.Event
// eventFromMessage makes of it (eventjson_test.go holds that reference and compares the two),
// without the Event, its maps or reflection.

// systemProperty is one system property of the event's systemProperties object.
type systemProperty struct {
	key   string                     // `"name":`
	value func(*message.View) []byte // nil for iothub-enqueuedtime, which is formatted
}

// systemProperties are the built-in endpoint's system properties in name order, the order
// encoding/json writes a map in.
var systemProperties = func() []systemProperty {
	out := make([]systemProperty, 0, len(message.ViewSystemProperties)+1)
	for _, p := range message.ViewSystemProperties {
		out = append(out, systemProperty{key: string(appendJSONString(nil, []byte(p.Name))) + ":", value: p.Value})
	}
	out = append(out, systemProperty{key: string(appendJSONString(nil, []byte(message.NameEnqueuedTime))) + ":"})
	slices.SortFunc(out, func(a, b systemProperty) int { return strings.Compare(a.key, b.key) })
	return out
}()

// appendEvent appends the JSON line (with its newline) of the event at partition and seq whose
// record v holds. raw adds the endpoints, as the tap before routing shows them.
func appendEvent(b []byte, partition int, seq int64, v *message.View, raw bool) []byte {
	b = append(b, `{"deviceId":`...)
	b = appendJSONString(b, v.ConnectionDeviceID)
	if len(v.ConnectionModuleID) > 0 {
		b = append(b, `,"moduleId":`...)
		b = appendJSONString(b, v.ConnectionModuleID)
	}
	b = append(b, `,"partition":`...)
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, `,"sequenceNumber":`...)
	b = strconv.AppendInt(b, seq, 10)
	var enqueued [64]byte
	enqueuedTime := v.EnqueuedTime.AppendFormat(enqueued[:0], time.RFC3339Nano)
	b = append(b, `,"enqueuedTime":"`...)
	b = append(b, enqueuedTime...)
	b = append(b, `","systemProperties":{`...)
	first := true
	for _, p := range systemProperties {
		if p.value == nil { // the enqueued time
			if v.EnqueuedTime.IsZero() {
				continue
			}
			b = appendComma(b, &first)
			b = append(b, p.key...)
			b = append(b, '"')
			b = append(b, enqueuedTime...)
			b = append(b, '"')
			continue
		}
		val := p.value(v)
		if len(val) == 0 {
			continue
		}
		b = appendComma(b, &first)
		b = append(b, p.key...)
		b = appendJSONString(b, val)
	}
	b = append(b, `},"properties":{`...)
	// A View holds them by name, each once (the caller checks PropertiesInOrder): the order
	// encoding/json writes a map in.
	for i, p := range v.Properties {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, p.Name)
		b = append(b, ':')
		b = appendJSONString(b, p.Value)
	}
	b = append(b, '}')
	if utf8.Valid(v.Body) {
		b = append(b, `,"body":`...)
		b = appendJSONString(b, v.Body)
	} else {
		b = append(b, `,"bodyBase64":"`...)
		b = base64.StdEncoding.AppendEncode(b, v.Body)
		b = append(b, '"')
	}
	if v.Routed && len(v.Routes) > 0 {
		b = append(b, `,"routes":`...)
		b = appendJSONStrings(b, v.Routes)
	}
	if raw {
		switch {
		case !v.Routed:
			b = append(b, `,"endpoints":["`+message.BuiltInEndpoint+`"]`...)
		case len(v.Endpoints) > 0:
			b = append(b, `,"endpoints":`...)
			b = appendJSONStrings(b, v.Endpoints)
		}
	}
	return append(b, "}\n"...)
}

func appendComma(b []byte, first *bool) []byte {
	if *first {
		*first = false
		return b
	}
	return append(b, ',')
}

func appendJSONStrings(b []byte, ss [][]byte) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// jsonSafe marks the ASCII bytes encoding/json writes as they are in a string (with its default
// HTML escaping): everything printable but `"`, `\`, `<`, `>` and `&`.
var jsonSafe = func() (safe [utf8.RuneSelf]bool) {
	for c := byte(' '); c < utf8.RuneSelf; c++ {
		safe[c] = strings.IndexByte(`"\<>&`, c) < 0
	}
	return safe
}()

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string exactly as encoding/json does (with HTML
// escaping, as json.Marshal and json.Encoder do by default): `"` and `\` and the control
// characters \b \f \n \r \t escaped by name, other control characters and <, >, & as \u00XX,
// U+2028 and U+2029 as \u2028 and \u2029, and each byte of invalid UTF-8 as \ufffd.
func appendJSONString(b []byte, s []byte) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		// Eight bytes at a time while none needs a look: most of a body or a value.
		for i+8 <= len(s) && !needsLook(s[i:i+8]) {
			i += 8
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// needsLook reports whether any of eight bytes is one appendJSONString escapes or is not ASCII
// (it may say so of bytes that are none, never the other way round).
func needsLook(s []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	w := binary.LittleEndian.Uint64(s)
	angle := (w | ones*0x02) ^ ones*'>'    // zero bytes where w has < or >
	quoteAmp := (w | ones*0x04) ^ ones*'&' // where w has " or &
	backslash := w ^ ones*'\\'             // where w has \
	zero := (angle-ones)&^angle | (quoteAmp-ones)&^quoteAmp | (backslash-ones)&^backslash
	return (zero|(w-ones*' ')|w)&highs != 0 // or a control character, or not ASCII
}
