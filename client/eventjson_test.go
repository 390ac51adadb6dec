package client

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/message"
)

// hubLine is an event line as the hub writes it for a `tether bench` device.
const hubLine = `{"deviceId":"bench-1","partition":3,"sequenceNumber":0,"enqueuedTime":"2026-11-25T15:48:35.900093292Z",` +
	`"systemProperties":{"iothub-connection-auth-generation-id":"639312185157875247","iothub-connection-auth-method":` +
	`"{\"scope\":\"device\",\"type\":\"sas\",\"issuer\":\"iothub\",\"acceptingIpFilterRule\":null}","iothub-connection-device-id":"bench-1",` +
	`"iothub-enqueuedtime":"2026-11-25T15:48:35.900093292Z","iothub-message-source":"Telemetry"},"properties":{},` +
	`"body":"01795621715899951812xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`

// reference is what encoding/json makes of a line, as ReadEvents decoded it before.
func reference(line string) (eventLine, error) {
	var x eventLine
	err := json.Unmarshal([]byte(line), &x)
	return x, err
}

// checkDecode decodes line both ways, with and without reuse and SkipProperties, and compares.
func checkDecode(t *testing.T, line string) {
	t.Helper()
	want, wantErr := reference(line)
	for _, skip := range []bool{false, true} {
		d := newEventDecoder(skip)
		wantEv := want.Event
		if skip {
			wantEv.SystemProperties, wantEv.Properties = nil, nil
		}
		for _, reuse := range []bool{false, true, true} { // twice: a reused event is replaced
			var ev api.Event
			streamErr, err := d.decode([]byte(line), &ev, reuse)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("skip %v reuse %v: %q: err %v, encoding/json: %v", skip, reuse, line, err, wantErr)
			}
			if err != nil {
				continue
			}
			if !reflect.DeepEqual(streamErr, want.Error) {
				t.Fatalf("skip %v reuse %v: %q: stream error %+v, encoding/json: %+v", skip, reuse, line, streamErr, want.Error)
			}
			if streamErr == nil && !reflect.DeepEqual(ev, wantEv) {
				t.Fatalf("skip %v reuse %v: %q:\n got %#v\nwant %#v", skip, reuse, line, ev, wantEv)
			}
		}
	}
}

func TestDecodeEventMatchesEncodingJSON(t *testing.T) {
	body := `{"temp":21.5} <&> ü €😀 ` + "\u2028\t\n\x00"
	marshalled := func(ev api.Event) string {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// Lines the hub writes (encoding/json's output for its events) must take the fast path.
	hubLines := map[string]string{
		"bench":   hubLine,
		"minimal": marshalled(api.Event{SystemProperties: map[string]string{}, Properties: map[string]string{}, Body: new(string)}),
		"full": marshalled(api.Event{DeviceID: "d-ü", ModuleID: "m<1>", Partition: 3, SequenceNumber: 1 << 60,
			EnqueuedTime:     time.Date(2026, 11, 25, 14, 0, 0, 120000000, time.UTC),
			SystemProperties: map[string]string{"message-id": "m\"1\\", "content-type": "application/json"},
			Properties:       map[string]string{"a": "1", "\t": "\u2029", "": ""}, Body: &body,
			Routes: []string{"hot", "$fallback"}, Endpoints: []string{"events"}}),
		"binary":      marshalled(api.Event{DeviceID: "d", SystemProperties: map[string]string{}, Properties: map[string]string{}, BodyBase64: "//4="}),
		"empty lists": `{"deviceId":"d","routes":[],"endpoints":[ ]}`,
		"white space": " {\t\"deviceId\" : \"d\" ,\r\n\"partition\": 0 , \"properties\" : { \"k\" : \"v\" } }\n",
		"surrogates":  `{"deviceId":"\ud83d\ude00\u00fc\u0041\/"}`,
		"repeated":    `{"properties":{"a":"1"},"properties":{"b":"2"},"deviceId":"x","deviceId":"y"}`,
		"empty":       `{}`,
	}
	for name, line := range hubLines {
		for _, skip := range []bool{false, true} {
			if !newEventDecoder(skip).fast([]byte(line), &api.Event{}, false) {
				t.Errorf("%s: the fast path (skip %v) refused %s", name, skip, line)
			}
		}
		checkDecode(t, line)
	}
	// The rest is encoding/json's: the result is the same whichever path decodes it.
	others := []string{
		`{"error":{"status":400,"Message":"ErrorCode:ArgumentInvalid;gone","ExceptionMessage":"gone"}}`,
		`{"DeviceID":"case-insensitive"}`,
		`{"deviceId":null,"body":null,"properties":null,"routes":null}`,
		`{"partition":1.5}`, `{"partition":1e2}`, `{"partition":01}`, `{"partition":-0}`, `{"partition":-}`,
		`{"sequenceNumber":123456789012345678901}`, `{"sequenceNumber":"1"}`,
		`{"deviceId":"\ud800"}`, `{"deviceId":"\udc00\ud800"}`, `{"deviceId":"\ud800\u0041"}`, `{"deviceId":"\x"}`, `{"deviceId":"\u12"}`,
		"{\"deviceId\":\"\xff\"}", "{\"deviceId\":\"a\x01\"}", "{\"body\":\"\xed\xa0\x80\"}",
		`{"enqueuedTime":"yesterday"}`, `{"enqueuedTime":"2026-11-25T15:48:35\u002e9Z"}`, `{"enqueuedTime":null}`,
		`{"unknown":1,"deviceId":"d"}`, `{"deviceId":"d"} x`, `{"deviceId":"d",}`, `{"deviceId":"d"`, `{"deviceId" "d"}`, `[]`, ``, `nul`,
		`{"routes":["a",1]}`, `{"properties":{"k":1}}`, `{"properties":{"k":"v",}}`, `{"properties":[]}`,
		`{"deviceId":"d\`,
		`{"properties":{"k":"\x"}}`, `{"systemProperties":{"\u12":"v"}}`, "{\"properties\":{\"k\":\"\xff\"}}", `{"properties":{"k" "v"}}`,
	}
	for _, line := range others {
		checkDecode(t, line)
	}
}

// TestDecodeEventReuse: with reuse, a line without a field does not show the previous line's.
func TestDecodeEventReuse(t *testing.T) {
	d := newEventDecoder(false)
	var ev api.Event
	for _, line := range []string{
		`{"deviceId":"a","properties":{"k":"v"},"routes":["r1","r2"],"body":"one"}`,
		`{"deviceId":"b","properties":{"j":"w"},"routes":["r3"],"bodyBase64":"AA=="}`,
		`{"deviceId":"c"}`,
	} {
		if _, err := d.decode([]byte(line), &ev, true); err != nil {
			t.Fatal(err)
		}
		want, _ := reference(line)
		if !reflect.DeepEqual(ev, want.Event) {
			t.Fatalf("%s:\n got %#v\nwant %#v", line, ev, want.Event)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(hubLine)
	f.Add(`{"deviceId":"\ud83d\ude00","properties":{"a":"\u003c"},"routes":[],"partition":-1}`)
	f.Add(`{"error":{"status":400}}`)
	f.Fuzz(func(t *testing.T, line string) {
		checkDecode(t, line)
	})
}

// BenchmarkDecodeEvent is a reader's work per event: the same event (hubLine's) as an NDJSON
// line and as a binary frame (api.EventStreamBinary), with the event reused (EventStream.Next),
// without (ReadEvents), reused without the properties (as `tether bench --e2e` reads), and
// encoding/json as ReadEvents decoded lines before.
func BenchmarkDecodeEvent(b *testing.B) {
	line := []byte(hubLine)
	var ev api.Event
	if err := json.Unmarshal(line, &ev); err != nil {
		b.Fatal(err)
	}
	m := message.Message{ConnectionDeviceID: ev.DeviceID, ConnectionAuthGenerationID: ev.SystemProperties[message.NameAuthGenerationID],
		ConnectionAuthMethod: ev.SystemProperties[message.NameAuthMethod], EnqueuedTime: ev.EnqueuedTime,
		Source: ev.SystemProperties[message.NameMessageSource], Properties: ev.Properties, Body: []byte(*ev.Body)}
	frame := eventFrame(b, uint64(ev.Partition), uint64(ev.SequenceNumber), m)
	kind, payload, err := newFrameReader(bytes.NewReader(frame)).next()
	if err != nil {
		b.Fatal(err)
	}
	forms := []struct {
		name   string
		size   int
		decode func(d *eventDecoder, ev *api.Event, reuse bool) error
	}{
		{"ndjson", len(line), func(d *eventDecoder, ev *api.Event, reuse bool) error {
			_, err := d.decode(line, ev, reuse)
			return err
		}},
		{"binary", len(frame), func(d *eventDecoder, ev *api.Event, reuse bool) error {
			_, _, err := d.decodeFrame(kind, payload, false, ev, reuse)
			return err
		}},
	}
	for _, form := range forms {
		for _, bc := range []struct {
			name        string
			reuse, skip bool
		}{{"reuse", true, false}, {"new", false, false}, {"reuse-skip-properties", true, true}} {
			b.Run(form.name+"/"+bc.name, func(b *testing.B) {
				d := newEventDecoder(bc.skip)
				var ev api.Event
				b.SetBytes(int64(form.size))
				b.ReportAllocs()
				for b.Loop() {
					if err := form.decode(d, &ev, bc.reuse); err != nil {
						b.Fatal(err)
					}
				}
				if !strings.HasPrefix(*ev.Body, "0179") {
					b.Fatal("wrong body")
				}
			})
		}
	}
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		b.ReportAllocs()
		for b.Loop() {
			var x eventLine
			if err := json.Unmarshal(line, &x); err != nil {
				b.Fatal(err)
			}
		}
	})
}
