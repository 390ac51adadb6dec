package endpoint

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tetherhub/tether/internal/message"
)

// timeFormat is how IoT Hub writes enqueued times in storage records and Event Grid events:
// UTC with exactly seven fractional digits.
const timeFormat = "2006-01-02T15:04:05.0000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

// Event Grid names of the content properties (spec 2.8): used instead of the Event Hubs names
// content-type and content-encoding in headers, where those would collide with HTTP's own
// Content-Type and Content-Encoding (which means compression in HTTP, a charset in IoT Hub).
const (
	nameEGContentType     = "iothub-content-type"
	nameEGContentEncoding = "iothub-content-encoding"
)

// eventProperties lists the message's system properties as an Event Grid / Event Hubs consumer
// names them (spec 2.8): the Event Hubs names, except content-type and content-encoding, which
// take Event Grid's iothub-content-type and iothub-content-encoding; the enqueued time in
// IoT Hub's ISO form.
func eventProperties(m *message.Message) []message.Property {
	props := m.SystemProperties()
	out := props[:0:0]
	for _, p := range props {
		switch p.Name {
		case message.NameContentType:
			p.Name = nameEGContentType
		case message.NameContentEncoding:
			p.Name = nameEGContentEncoding
		case message.NameEnqueuedTime:
			p.Value = formatTime(m.EnqueuedTime)
		}
		out = append(out, p)
	}
	return out
}

// storageSystemProperties are the system properties under the Azure Storage names of spec 2.8,
// as in IoT Hub's storage records. Properties without a storage name in IoT Hub keep their
// Event Hubs name.
func storageSystemProperties(m *message.Message) map[string]string {
	out := make(map[string]string)
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	set("messageId", m.MessageID)
	set("correlationId", m.CorrelationID)
	set("userId", m.UserID)
	set("connectionDeviceId", m.ConnectionDeviceID)
	set("connectionModuleId", m.ConnectionModuleID)
	set("connectionDeviceGenerationId", m.ConnectionAuthGenerationID)
	set("connectionAuthMethod", m.ConnectionAuthMethod)
	set("contentType", m.ContentType)
	set("contentEncoding", m.ContentEncoding)
	set("dt-dataschema", m.DataSchema)
	set("dt-subject", m.ComponentName)
	set(message.NameTo, m.To)
	set(message.NameExpiryTime, m.ExpiryTime)
	set(message.NameCreationTime, m.CreationTime)
	set(message.NameMessageSchema, m.MessageSchema)
	set(message.NameInterfaceID, m.InterfaceID)
	set(message.NameOutputName, m.OutputName)
	set(message.NameMessageSource, m.Source)
	if !m.EnqueuedTime.IsZero() {
		out["enqueuedTime"] = formatTime(m.EnqueuedTime)
	}
	return out
}

// jsonBody reports whether IoT Hub would store the body as JSON: content type application/json,
// encoding utf-8 (spec 8.4), and a body that is valid JSON.
func jsonBody(m *message.Message) bool {
	ct := strings.ToLower(strings.TrimSpace(m.ContentType))
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = strings.TrimSpace(ct[:i])
	}
	if ct != "application/json" || !strings.EqualFold(strings.TrimSpace(m.ContentEncoding), "utf-8") {
		return false
	}
	return json.Valid(m.Body)
}

// appPropertyPrefix prefixes application properties carried as headers, as IoT Hub's HTTPS
// device API does (spec 2.4).
const appPropertyPrefix = "iothub-app-"

// headerPropertiesName carries, as an ASCII JSON object, all application properties when any
// of them cannot be a header (a name that is not an HTTP token, or a value that is not printable
// ASCII).
const headerPropertiesName = "x-tether-properties"

// headerPairs lists the headers that carry a message's system and application properties, in a
// stable order.
func headerPairs(m *message.Message) []message.Property {
	out := eventProperties(m)
	faithful := true
	for _, k := range m.SortedPropertyNames() {
		v := m.Properties[k]
		if !validHeaderName(k) || !printableASCII(v) {
			faithful = false
			continue
		}
		out = append(out, message.Property{Name: appPropertyPrefix + k, Value: v})
	}
	if !faithful {
		out = append(out, message.Property{Name: headerPropertiesName, Value: asciiJSON(m.Properties)})
	}
	return out
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// asciiJSON encodes a string map as JSON with every non-ASCII character escaped.
func asciiJSON(m map[string]string) string {
	b, _ := json.Marshal(m)
	if printableASCII(string(b)) {
		return string(b)
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		if r >= 0x20 && r < 0x7f {
			sb.WriteRune(r)
			continue
		}
		if r > 0xffff {
			r1, r2 := utf16Surrogates(r)
			sb.WriteString(`\u` + hex4(r1) + `\u` + hex4(r2))
			continue
		}
		sb.WriteString(`\u` + hex4(r))
	}
	return sb.String()
}

func utf16Surrogates(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}

func hex4(r rune) string {
	s := strconv.FormatInt(int64(r), 16)
	return strings.Repeat("0", 4-len(s)) + s
}

// deliveryID identifies a delivery across redeliveries: endpoint/partition/sequence.
func deliveryID(endpoint string, d Delivery) string {
	return endpoint + "/" + strconv.Itoa(d.Partition) + "/" + strconv.FormatInt(d.Sequence, 10)
}
