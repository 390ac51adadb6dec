package client

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/maphash"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/message"
)

// A reader following a busy hub decodes every event of the stream, so the line is decoded by
// hand for the event's fixed shape rather than by encoding/json's reflection. The fast path
// takes the lines the hub writes; anything else it is not sure of (an unknown or differently
// cased field, a null, a number that is not a plain integer, invalid UTF-8, a lone surrogate,
// the stream's error line) goes to encoding/json, so the result is always what json.Unmarshal
// makes of the line.

// eventDecoder decodes event lines. It remembers recent short strings (device ids, property
// names, the hub's stamps) and hands out the same string again instead of a new copy.
type eventDecoder struct {
	seed      maphash.Seed
	recent    [1024]string
	unquote   []byte       // scratch for strings with escapes
	skipProps bool         // ReadOptions.SkipProperties: the maps are checked, not decoded
	view      message.View // the binary stream's record being decoded

	// reused is what a decode with reuse hands out again: maps (cleared), lists and Body.
	reused struct {
		sys, props        map[string]string
		routes, endpoints []string
		body              string
	}
}

func newEventDecoder(skipProperties bool) *eventDecoder {
	return &eventDecoder{seed: maphash.MakeSeed(), skipProps: skipProperties}
}

// eventLine is what json.Unmarshal decodes a line into: an event or the stream's error.
type eventLine struct {
	api.Event
	Error *api.StreamError `json:"error"`
}

// decode decodes line into ev, replacing it: what json.Unmarshal makes of the line into a
// zero api.Event. With reuse, ev's maps, lists and Body are the decoder's, reused by the next
// decode with reuse; otherwise they are new. A line that is the stream's error line is
// returned as such (streamErr not nil).
func (d *eventDecoder) decode(line []byte, ev *api.Event, reuse bool) (streamErr *api.StreamError, err error) {
	if d.fast(line, ev, reuse) {
		return nil, nil
	}
	var x eventLine
	if err := json.Unmarshal(line, &x); err != nil {
		return nil, err
	}
	if x.Error != nil {
		return x.Error, nil
	}
	*ev = x.Event
	if d.skipProps {
		ev.SystemProperties, ev.Properties = nil, nil
	}
	return nil, nil
}

// fast decodes the lines the hub writes; false leaves the line to encoding/json (ev may then
// hold part of it).
func (d *eventDecoder) fast(line []byte, ev *api.Event, reuse bool) bool {
	*ev = api.Event{}
	var sys, props map[string]string
	var routes, endpoints []string
	var body *string
	if reuse {
		r := &d.reused
		sys, props = d.reusedMaps()
		routes, endpoints, body = r.routes[:0], r.endpoints[:0], &r.body
	}
	p := parser{buf: line}
	p.ws()
	if !p.byte('{') {
		return false
	}
	p.ws()
	if p.byte('}') {
		return p.end()
	}
	for {
		key, ok := p.key()
		if !ok {
			return false
		}
		p.ws()
		if !p.byte(':') {
			return false
		}
		p.ws()
		switch string(key) {
		case "deviceId":
			ev.DeviceID, ok = d.str(&p, true)
		case "moduleId":
			ev.ModuleID, ok = d.str(&p, true)
		case "partition":
			var n int64
			n, ok = p.int()
			ev.Partition = int(n)
			ok = ok && int64(ev.Partition) == n
		case "sequenceNumber":
			ev.SequenceNumber, ok = p.int()
		case "enqueuedTime":
			ok = p.time(&ev.EnqueuedTime)
		case "systemProperties", "properties":
			if d.skipProps {
				ok = d.skipStringMap(&p)
				break
			}
			if key[0] == 'p' {
				if ev.Properties == nil {
					ev.Properties = props
				}
				ev.Properties, ok = d.stringMap(&p, ev.Properties)
				break
			}
			// A repeated field adds to the map, as with encoding/json.
			if ev.SystemProperties == nil {
				ev.SystemProperties = sys
			}
			ev.SystemProperties, ok = d.stringMap(&p, ev.SystemProperties)
		case "body":
			if body == nil {
				body = new(string)
			}
			*body, ok = d.str(&p, false)
			ev.Body = body
		case "bodyBase64":
			ev.BodyBase64, ok = d.str(&p, false)
		case "routes":
			ev.Routes, ok = d.strings(&p, routes[:0])
			routes = ev.Routes
		case "endpoints":
			ev.Endpoints, ok = d.strings(&p, endpoints[:0])
			endpoints = ev.Endpoints
		default: // the error line, or a field this client does not know
			return false
		}
		if !ok {
			return false
		}
		p.ws()
		if p.byte('}') {
			break
		}
		if !p.byte(',') {
			return false
		}
		p.ws()
	}
	if reuse {
		d.reused.routes, d.reused.endpoints = routes, endpoints
	}
	return p.end()
}

// reusedMaps returns the decoder's reused maps, cleared.
func (d *eventDecoder) reusedMaps() (sys, props map[string]string) {
	r := &d.reused
	if r.sys == nil {
		r.sys, r.props = make(map[string]string, 8), make(map[string]string, 8)
	}
	clear(r.sys)
	clear(r.props)
	return r.sys, r.props
}

// str reads a string; intern remembers it (and hands out a remembered equal one).
func (d *eventDecoder) str(p *parser, intern bool) (string, bool) {
	raw, escaped, ok := p.str()
	if !ok {
		return "", false
	}
	if escaped {
		if d.unquote, ok = unescape(d.unquote[:0], raw); !ok {
			return "", false
		}
		raw = d.unquote
	}
	if intern {
		return d.intern(raw), true
	}
	return string(raw), true
}

// intern returns string(b), the same string as last time for recent short values.
func (d *eventDecoder) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > 64 {
		return string(b)
	}
	slot := &d.recent[maphash.Bytes(d.seed, b)%uint64(len(d.recent))]
	if *slot == string(b) {
		return *slot
	}
	*slot = string(b)
	return *slot
}

// stringMap reads an object of strings into m (made when nil; a repeated field adds to it, as
// with encoding/json).
func (d *eventDecoder) stringMap(p *parser, m map[string]string) (map[string]string, bool) {
	if !p.byte('{') {
		return m, false
	}
	if m == nil {
		m = make(map[string]string, 8)
	}
	p.ws()
	if p.byte('}') {
		return m, true
	}
	for {
		k, ok := d.str(p, true)
		if !ok {
			return m, false
		}
		p.ws()
		if !p.byte(':') {
			return m, false
		}
		p.ws()
		v, ok := d.str(p, true)
		if !ok {
			return m, false
		}
		m[k] = v
		p.ws()
		if p.byte('}') {
			return m, true
		}
		if !p.byte(',') {
			return m, false
		}
		p.ws()
	}
}

// skipStringMap reads past an object of strings, checking it as stringMap does.
func (d *eventDecoder) skipStringMap(p *parser) bool {
	if !p.byte('{') {
		return false
	}
	p.ws()
	if p.byte('}') {
		return true
	}
	for {
		if !d.skipStr(p) {
			return false
		}
		p.ws()
		if !p.byte(':') {
			return false
		}
		p.ws()
		if !d.skipStr(p) {
			return false
		}
		p.ws()
		if p.byte('}') {
			return true
		}
		if !p.byte(',') {
			return false
		}
		p.ws()
	}
}

// skipStr reads past a string, checking it as str does.
func (d *eventDecoder) skipStr(p *parser) bool {
	raw, escaped, ok := p.str()
	if ok && escaped {
		d.unquote, ok = unescape(d.unquote[:0], raw)
	}
	return ok
}

// strings reads an array of strings, appended to list.
func (d *eventDecoder) strings(p *parser, list []string) ([]string, bool) {
	if !p.byte('[') {
		return nil, false
	}
	p.ws()
	if p.byte(']') {
		if list == nil {
			list = []string{} // encoding/json makes [] an empty slice, not nil
		}
		return list, true
	}
	for {
		s, ok := d.str(p, true)
		if !ok {
			return nil, false
		}
		list = append(list, s)
		p.ws()
		if p.byte(']') {
			return list, true
		}
		if !p.byte(',') {
			return nil, false
		}
		p.ws()
	}
}

// parser reads JSON tokens from buf at i.
type parser struct {
	buf []byte
	i   int
}

func (p *parser) ws() {
	for p.i < len(p.buf) {
		switch p.buf[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// byte consumes c if it is next.
func (p *parser) byte(c byte) bool {
	if p.i < len(p.buf) && p.buf[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (p *parser) end() bool {
	p.ws()
	return p.i == len(p.buf)
}

// key reads an object key without escapes (every field name of an event).
func (p *parser) key() ([]byte, bool) {
	raw, escaped, ok := p.str()
	return raw, ok && !escaped
}

// str reads a string: its raw bytes between the quotes, and whether they hold escapes. It
// fails on what encoding/json would not take as it is: control characters, invalid UTF-8.
func (p *parser) str() (raw []byte, escaped, ok bool) {
	if !p.byte('"') {
		return nil, false, false
	}
	start := p.i
	// Most strings have no escapes: find the closing quote and check what lies before it.
	if n := bytes.IndexByte(p.buf[start:], '"'); n >= 0 {
		raw = p.buf[start : start+n]
		if bytes.IndexByte(raw, '\\') < 0 {
			p.i += n + 1
			return raw, false, plainString(raw)
		}
	}
	for p.i < len(p.buf) {
		switch c := p.buf[p.i]; {
		case c == '"':
			raw = p.buf[start:p.i]
			p.i++
			return raw, true, plainString(raw)
		case c == '\\':
			p.i += 2 // the escaped character is checked by unescape; a quote never ends here
		default:
			p.i++
		}
	}
	return nil, false, false
}

// plainString reports whether raw, between quotes, is a string as encoding/json takes it as it
// is: no control characters, valid UTF-8.
func plainString(raw []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	high := false
	i := 0
	for ; i+8 <= len(raw); i += 8 {
		w := binary.LittleEndian.Uint64(raw[i:])
		if (w-ones*' '|w)&highs == 0 {
			continue // eight printable ASCII bytes
		}
		for _, c := range raw[i : i+8] {
			if c < ' ' {
				return false
			}
			high = high || c >= utf8.RuneSelf
		}
	}
	for _, c := range raw[i:] {
		if c < ' ' {
			return false
		}
		high = high || c >= utf8.RuneSelf
	}
	return !high || utf8.Valid(raw) // encoding/json would replace invalid bytes
}

// int reads an integer as encoding/json takes it into an int field: no fraction or exponent.
func (p *parser) int() (int64, bool) {
	start := p.i
	p.byte('-')
	digits := p.i
	for p.i < len(p.buf) && p.buf[p.i] >= '0' && p.buf[p.i] <= '9' {
		p.i++
	}
	n := p.i - digits
	if n == 0 || n > 19 || (n > 1 && p.buf[digits] == '0') {
		return 0, false
	}
	if p.i < len(p.buf) {
		switch p.buf[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	v, err := strconv.ParseInt(string(p.buf[start:p.i]), 10, 64)
	return v, err == nil
}

// time reads a time as encoding/json does: the quoted token to time.Time's UnmarshalJSON.
func (p *parser) time(t *time.Time) bool {
	start := p.i
	_, escaped, ok := p.str()
	if !ok || escaped {
		return false
	}
	return t.UnmarshalJSON(p.buf[start:p.i]) == nil
}

// unescape appends the string raw (between its quotes) stands for; false for what it leaves to
// encoding/json (a lone or misordered surrogate, which encoding/json replaces).
func unescape(b, raw []byte) ([]byte, bool) {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			j := i + 1
			for j < len(raw) && raw[j] != '\\' {
				j++
			}
			b = append(b, raw[i:j]...)
			i = j
			continue
		}
		if i+1 >= len(raw) {
			return nil, false
		}
		switch e := raw[i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := hex4(raw[i+2:])
			if !ok {
				return nil, false
			}
			if utf16.IsSurrogate(r) {
				if len(raw) < i+12 || raw[i+6] != '\\' || raw[i+7] != 'u' {
					return nil, false
				}
				r2, ok := hex4(raw[i+8:])
				if !ok {
					return nil, false
				}
				if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
					return nil, false
				}
				i += 6
			}
			b = utf8.AppendRune(b, r)
			i += 4
		default:
			return nil, false
		}
		i += 2
	}
	return b, true
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
