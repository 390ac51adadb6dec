package query

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/tetherhub/tether/internal/message"
)

// Input is what a condition reads. Implementations return ok=false for anything absent; the
// query turns that into undefined.
type Input interface {
	// SystemProperty returns a system property by its routing keyword without the '$', spelled
	// as the Sys constants are ("contentType", "dt-subject", ...).
	SystemProperty(name string) (string, bool)
	// AppProperty returns an application property. Names are case-insensitive (spec 9.2): the
	// implementation must match them so.
	AppProperty(name string) (string, bool)
	// Body returns the message body decoded from JSON, or false when body queries do not apply
	// (spec 9.2: contentType application/json and contentEncoding utf-8, utf-16 or utf-32).
	Body() (any, bool)
	// Twin returns the value at a twin path such as ["tags", "location", "floor"]. Twin paths are
	// case-insensitive. When the query indexes an array, Twin gets the names before the index
	// and the query walks the rest.
	Twin(path []string) (any, bool)
}

// BodyExplainer is an optional Input interface: why Body returned false, for Explain.
type BodyExplainer interface {
	BodyUnavailableReason() string
}

// TwinSource supplies the device twin (or the module twin, for module messages) of a message.
type TwinSource interface {
	Twin(path []string) (any, bool)
}

// Routing keywords of the system properties (spec 9.2), as Input.SystemProperty receives them.
// In a condition they are written with '$' and matched case-insensitively.
const (
	SysMessageID                    = "messageId"
	SysCorrelationID                = "correlationId"
	SysUserID                       = "userId"
	SysContentType                  = "contentType"
	SysContentEncoding              = "contentEncoding"
	SysConnectionDeviceID           = "connectionDeviceId"
	SysConnectionModuleID           = "connectionModuleId"
	SysConnectionDeviceGenerationID = "connectionDeviceGenerationId"
	SysConnectionAuthMethod         = "connectionAuthMethod"
	SysEnqueuedTime                 = "enqueuedTime"
	SysDataSchema                   = "dt-dataschema"
	SysSubject                      = "dt-subject"
	SysCreationTime                 = "iothub-creation-time-utc"
)

type sysID uint8

const (
	sysMessageID sysID = iota
	sysCorrelationID
	sysUserID
	sysContentType
	sysContentEncoding
	sysConnectionDeviceID
	sysConnectionModuleID
	sysGenerationID
	sysAuthMethod
	sysEnqueuedTime
	sysDataSchema
	sysSubject
	sysCreationTime
)

// sysProp is one system property keyword.
type sysProp struct {
	id      sysID
	keyword string
	wire    string // the built-in endpoint's name, for explanations
}

var sysProps = [...]sysProp{
	{sysMessageID, SysMessageID, message.NameMessageID},
	{sysCorrelationID, SysCorrelationID, message.NameCorrelationID},
	{sysUserID, SysUserID, message.NameUserID},
	{sysContentType, SysContentType, message.NameContentType},
	{sysContentEncoding, SysContentEncoding, message.NameContentEncoding},
	{sysConnectionDeviceID, SysConnectionDeviceID, message.NameConnectionDeviceID},
	{sysConnectionModuleID, SysConnectionModuleID, message.NameConnectionModuleID},
	{sysGenerationID, SysConnectionDeviceGenerationID, message.NameAuthGenerationID},
	{sysAuthMethod, SysConnectionAuthMethod, message.NameAuthMethod},
	{sysEnqueuedTime, SysEnqueuedTime, message.NameEnqueuedTime},
	{sysDataSchema, SysDataSchema, message.NameDataSchema},
	{sysSubject, SysSubject, message.NameComponentName},
	{sysCreationTime, SysCreationTime, message.NameCreationTime},
}

// lookupSysProp finds a keyword case-insensitively. The construct doc names the creation time
// "creation-time-utc", so that spelling is accepted too.
func lookupSysProp(name string) *sysProp {
	if strings.EqualFold(name, "creation-time-utc") {
		return &sysProps[sysCreationTime]
	}
	for i := range sysProps {
		if strings.EqualFold(sysProps[i].keyword, name) {
			return &sysProps[i]
		}
	}
	return nil
}

// enqueuedTimeLayout is IoT Hub's rendering of iothub-enqueuedtime (spec 9.1), so that string
// comparisons with ISO 8601 literals order correctly.
const enqueuedTimeLayout = "2006-01-02T15:04:05.0000000Z"

// MessageInput adapts a message for evaluation. twin may be nil: twin references are then
// undefined. The body is decoded once, on first use; the Input is safe for concurrent use but
// the message must not change while it is in use.
func MessageInput(m *message.Message, twin TwinSource) Input {
	return &messageInput{m: m, twin: twin}
}

type messageInput struct {
	m    *message.Message
	twin TwinSource

	once    sync.Once
	body    any
	bodyOK  bool
	bodyWhy string
}

func (in *messageInput) SystemProperty(name string) (string, bool) {
	p := lookupSysProp(name)
	if p == nil {
		return "", false
	}
	return in.sys(p.id)
}

// sys is the allocation-free path compiled queries take for a *messageInput.
func (in *messageInput) sys(id sysID) (string, bool) {
	m := in.m
	var v string
	switch id {
	case sysMessageID:
		v = m.MessageID
	case sysCorrelationID:
		v = m.CorrelationID
	case sysUserID:
		v = m.UserID
	case sysContentType:
		v = m.ContentType
	case sysContentEncoding:
		v = m.ContentEncoding
	case sysConnectionDeviceID:
		v = m.ConnectionDeviceID
	case sysConnectionModuleID:
		v = m.ConnectionModuleID
	case sysGenerationID:
		v = m.ConnectionAuthGenerationID
	case sysAuthMethod:
		v = m.ConnectionAuthMethod
	case sysEnqueuedTime:
		if m.EnqueuedTime.IsZero() {
			return "", false
		}
		return m.EnqueuedTime.UTC().Format(enqueuedTimeLayout), true
	case sysDataSchema:
		v = m.DataSchema
	case sysSubject:
		v = m.ComponentName
	case sysCreationTime:
		v = m.CreationTime
	}
	return v, v != ""
}

func (in *messageInput) AppProperty(name string) (string, bool) {
	if v, ok := in.m.Properties[name]; ok {
		return v, true
	}
	for k, v := range in.m.Properties {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

func (in *messageInput) Body() (any, bool) {
	in.once.Do(func() {
		in.body, in.bodyWhy = DecodeBody(in.m.ContentType, in.m.ContentEncoding, in.m.Body)
		in.bodyOK = in.bodyWhy == ""
	})
	return in.body, in.bodyOK
}

func (in *messageInput) BodyUnavailableReason() string {
	in.Body()
	return in.bodyWhy
}

func (in *messageInput) Twin(path []string) (any, bool) {
	if in.twin == nil {
		return nil, false
	}
	return in.twin.Twin(path)
}

// DecodeBody decodes a body for routing, spec 9.2: only when contentType is application/json
// and contentEncoding is utf-8, utf-16 or utf-32 (both case-insensitive). When it cannot, it
// returns a reason instead. UTF-16 and UTF-32 honour a byte order mark and are little-endian
// without one, as .NET's "utf-16" and "utf-32" encodings are.
func DecodeBody(contentType, contentEncoding string, body []byte) (v any, reason string) {
	switch {
	case contentType == "":
		return nil, "the message has no contentType (body queries need application/json)"
	case !strings.EqualFold(contentType, "application/json"):
		return nil, "the message's contentType is " + quote(contentType) + ", not application/json"
	case contentEncoding == "":
		return nil, "the message has no contentEncoding (body queries need utf-8, utf-16 or utf-32)"
	}
	var text []byte
	switch {
	case strings.EqualFold(contentEncoding, "utf-8"):
		text = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
		if !utf8.Valid(text) {
			return nil, "the body is not valid UTF-8"
		}
	case strings.EqualFold(contentEncoding, "utf-16"):
		var ok bool
		if text, ok = fromUTF16(body); !ok {
			return nil, "the body is not valid UTF-16"
		}
	case strings.EqualFold(contentEncoding, "utf-32"):
		var ok bool
		if text, ok = fromUTF32(body); !ok {
			return nil, "the body is not valid UTF-32"
		}
	default:
		return nil, "the message's contentEncoding is " + quote(contentEncoding) + ", not utf-8, utf-16 or utf-32"
	}
	if err := json.Unmarshal(text, &v); err != nil {
		return nil, "the body is not valid JSON"
	}
	return v, ""
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func fromUTF16(b []byte) ([]byte, bool) {
	var order binary.ByteOrder = binary.LittleEndian
	switch {
	case bytes.HasPrefix(b, []byte{0xFE, 0xFF}):
		order, b = binary.BigEndian, b[2:]
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE}):
		b = b[2:]
	}
	if len(b)%2 != 0 {
		return nil, false
	}
	out := make([]byte, 0, len(b)/2)
	for i := 0; i < len(b); i += 2 {
		r := rune(order.Uint16(b[i:]))
		if utf16.IsSurrogate(r) {
			if i+4 > len(b) {
				return nil, false
			}
			r = utf16.DecodeRune(r, rune(order.Uint16(b[i+2:])))
			if r == utf8.RuneError {
				return nil, false
			}
			i += 2
		}
		out = utf8.AppendRune(out, r)
	}
	return out, true
}

func fromUTF32(b []byte) ([]byte, bool) {
	var order binary.ByteOrder = binary.LittleEndian
	switch {
	case bytes.HasPrefix(b, []byte{0, 0, 0xFE, 0xFF}):
		order, b = binary.BigEndian, b[4:]
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE, 0, 0}):
		b = b[4:]
	}
	if len(b)%4 != 0 {
		return nil, false
	}
	out := make([]byte, 0, len(b)/4)
	for i := 0; i < len(b); i += 4 {
		u := order.Uint32(b[i:])
		if u > utf8.MaxRune || utf16.IsSurrogate(rune(u)) {
			return nil, false
		}
		out = utf8.AppendRune(out, rune(u))
	}
	return out, true
}

// TwinDocument is a TwinSource over a twin decoded from JSON ({"tags": ..., "properties":
// {"desired": ..., "reported": ...}}). Lookups are case-insensitive, as twin queries are.
func TwinDocument(doc map[string]any) TwinSource { return twinDoc{doc} }

type twinDoc struct{ root map[string]any }

func (t twinDoc) Twin(path []string) (any, bool) {
	var v any = t.root
	for _, name := range path {
		var ok bool
		if v, ok = field(v, name, true); !ok {
			return nil, false
		}
	}
	return v, true
}

// field looks a name up in a decoded JSON object; fold makes the match case-insensitive (an exact
// match still wins).
func field(v any, name string, fold bool) (any, bool) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	if x, ok := obj[name]; ok {
		return x, true
	}
	if fold {
		for k, x := range obj {
			if strings.EqualFold(k, name) {
				return x, true
			}
		}
	}
	return nil, false
}

// walk follows steps from v; fold selects case-insensitive names (twin) or exact ones (body).
func walk(v any, steps []step, fold bool) (any, bool) {
	for _, s := range steps {
		if s.index >= 0 {
			arr, ok := v.([]any)
			if !ok || s.index >= len(arr) {
				return nil, false
			}
			v = arr[s.index]
			continue
		}
		var ok bool
		if v, ok = field(v, s.name, fold); !ok {
			return nil, false
		}
	}
	return v, true
}
