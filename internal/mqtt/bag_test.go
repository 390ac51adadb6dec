package mqtt

import (
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/tetherhub/tether/internal/message"
)

// wantFromTopic is what each captured topic in testdata/d2c_topics.txt must become.
var wantFromTopic = map[string]message.Message{
	"node-all": {
		MessageID: "m1", CorrelationID: "c1", UserID: "u1", To: "/devices/dev1/messages/events",
		ContentType: "application/octet-stream", ContentEncoding: "binary",
		ExpiryTime: "2030-01-01T00:00:00.000Z", ComponentName: "subj",
		Properties: map[string]string{"a": "b"},
	},
	"node-custom": {
		MessageID: "mid-e14535a0-mqtt-d2c", CorrelationID: "cid-e14535a0-mqtt-d2c",
		ContentType: "application/json", ContentEncoding: "utf-8",
		Properties: map[string]string{"prop-a": "alpha", "prop-b": "x=1&y=2 /z"},
	},
	"node-empty":         {},
	"node-module-output": {OutputName: "out1"},
	"c-raw": {
		MessageID: "m-c", ContentType: "application/json;charset=utf-8", ContentEncoding: "utf-8",
		Properties: map[string]string{"path": "/a/b", "flag": ""},
	},
	"embedded-c": {MessageID: "m1", CorrelationID: "c1"},
	"python": {
		MessageID: "m-py", ContentType: "application/json", ContentEncoding: "utf-8",
		CreationTime: "2024-05-01T12:00:00.123456Z",
		Properties:   map[string]string{"custom key": "custom value", "plus": "a+b"},
	},
	"dotnet-trailing": {
		MessageID: "m-net", ContentType: "application/json", ContentEncoding: "utf-8",
		Properties: map[string]string{"k": "v"},
	},
	"no-slash": {},
	"spoof": {
		MessageID:  "m",
		Properties: map[string]string{"$.diagid": "d1", "$.unknown": "u"},
	},
	"malformed": {Properties: map[string]string{"bad%zz": "v%4", "ok": "1"}},
}

func TestApplyBagCapturedTopics(t *testing.T) {
	names, topics := readTopics(t)
	if len(names) != len(wantFromTopic) {
		t.Fatalf("%d topics in testdata, %d expectations", len(names), len(wantFromTopic))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			d, m, bag, ok := parseEventsTopic(topics[name])
			if !ok || d != "dev1" || (m != "" && m != "mod1") {
				t.Fatalf("parseEventsTopic = %q, %q, %q, %v", d, m, bag, ok)
			}
			var got message.Message
			ApplyBag(&got, bag)
			want, ok := wantFromTopic[name]
			if !ok {
				t.Fatalf("no expectation for %s", name)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseBag(t *testing.T) {
	tests := []struct {
		bag  string
		want []BagEntry
	}{
		{"", nil},
		{"/", nil},
		{"a=1", []BagEntry{{Name: "a", Value: "1"}}},
		{"a=1/", []BagEntry{{Name: "a", Value: "1"}}},
		{"a=1//", []BagEntry{{Name: "a", Value: "1/"}}}, // only one trailing '/' is dropped
		{"a", []BagEntry{{Name: "a", NoValue: true}}},
		{"a=", []BagEntry{{Name: "a"}}},
		{"a=b=c", []BagEntry{{Name: "a", Value: "b=c"}}},
		{"&&a=1&", []BagEntry{{Name: "a", Value: "1"}}},
		{"%24.mid=x", []BagEntry{{Name: "$.mid", Value: "x"}}},
		{"$.mid=x", []BagEntry{{Name: "$.mid", Value: "x"}}},
		{"k=a+b%20c", []BagEntry{{Name: "k", Value: "a+b c"}}},
		{"k=%zz&j=%4", []BagEntry{{Name: "k", Value: "%zz"}, {Name: "j", Value: "%4"}}},
		{"%2F%3D%26=%2F", []BagEntry{{Name: "/=&", Value: "/"}}},
		{"=v", []BagEntry{{Name: "", Value: "v"}}},
		{"p=/a/b?c", []BagEntry{{Name: "p", Value: "/a/b?c"}}},
	}
	for _, tt := range tests {
		if got := ParseBag(tt.bag); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseBag(%q) = %+v, want %+v", tt.bag, got, tt.want)
		}
	}
}

func TestApplyBagSystemProperties(t *testing.T) {
	// Every key of spec table 2.4 a device may send, in the C SDK's form.
	bag := "%24.mid=1&%24.cid=2&%24.uid=3&%24.to=4&%24.ct=5&%24.ce=6&%24.exp=7&%24.ctime=8&" +
		"%24.schema=9&%24.ifid=10&%24.sub=11&%24.on=12&%24.cdid=x&%24.cmid=y&%24.diagid=13&%24.diagctx=14&iothub-ack=full"
	var got message.Message
	ApplyBag(&got, bag)
	want := message.Message{
		MessageID: "1", CorrelationID: "2", UserID: "3", To: "4", ContentType: "5", ContentEncoding: "6",
		ExpiryTime: "7", CreationTime: "8", MessageSchema: "9", InterfaceID: "10", ComponentName: "11",
		OutputName: "12",
		Properties: map[string]string{"$.diagid": "13", "$.diagctx": "14", "iothub-ack": "full"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestEncodeBag(t *testing.T) {
	got := EncodeBag([]BagEntry{
		{Name: "$.mid", Value: "6b822696-f75a"},
		{Name: "$.to", Value: "/devices/fake_device/messages/devicebound"},
		{Name: "$.exp", Value: "3237-07-19T23:06:40.0000000Z"},
		{Name: "prop1", NoValue: true},
		{Name: "prop2"},
		{Name: "prop3", Value: "a string+&="},
	})
	want := "%24.mid=6b822696-f75a&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2Fdevicebound&" +
		"%24.exp=3237-07-19T23%3A06%3A40.0000000Z&prop1&prop2=&prop3=a%20string%2B%26%3D"
	if got != want {
		t.Errorf("EncodeBag =\n%s\nwant\n%s", got, want)
	}
	if strings.Contains(got, "/") {
		t.Error("encoded bag contains '/'")
	}
}

func TestParseEventsTopic(t *testing.T) {
	tests := []struct {
		topic         string
		dev, mod, bag string
		ok            bool
	}{
		{"devices/d/messages/events", "d", "", "", true},
		{"devices/d/messages/events/", "d", "", "", true},
		{"devices/d/messages/events/a=1/b", "d", "", "a=1/b", true},
		{"devices/d/modules/m/messages/events/%24.on=o/", "d", "m", "%24.on=o/", true},
		{"devices/modules/messages/events", "modules", "", "", true},
		{"devices/d/messages/eventsX", "", "", "", false},
		{"devices/d/messages/devicebound/", "", "", "", false},
		{"devices//messages/events", "", "", "", false},
		{"devices/d/modules//messages/events", "", "", "", false},
		{"$iothub/twin/GET/?$rid=1", "", "", "", false},
		{"devices/d", "", "", "", false},
	}
	for _, tt := range tests {
		d, m, bag, ok := parseEventsTopic(tt.topic)
		if d != tt.dev || m != tt.mod || bag != tt.bag || ok != tt.ok {
			t.Errorf("parseEventsTopic(%q) = %q, %q, %q, %v", tt.topic, d, m, bag, ok)
		}
	}
}

func TestUnescape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"a+b", "a+b"}, // '+' is not a space in a topic
		{"%24.mid", "$.mid"},
		{"%2f%2F", "//"}, // hex digits in either case
		{"%aB%Cd", "\xab\xcd"},
		{"x%20y%20", "x y "},
		{"%00", "\x00"},
		{"%ff%FE", "\xff\xfe"},
		{"%25", "%"},
		{"%2525", "%25"}, // decoded once
		{"%", "%"},       // malformed: kept as sent
		{"%4", "%4"},
		{"a%4", "a%4"},
		{"%zz", "%zz"},
		{"%g0", "%g0"},
		{"%0g", "%0g"},
		{"%20%", "%20%"},   // one malformed escape keeps the whole string
		{"%20%2", "%20%2"}, // at the end
		{"ok%20then%x", "ok%20then%x"},
		{"%%20", "%%20"},
		{"ü%C3%BC", "üü"},
	}
	for _, tt := range tests {
		if got := unescape(tt.in); got != tt.want {
			t.Errorf("unescape(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got, want := unescape(tt.in), refUnescape(tt.in); got != want {
			t.Errorf("unescape(%q) = %q, url.PathUnescape gives %q", tt.in, got, want)
		}
	}
}

// TestApplyBagAllocations: a bag costs one allocation for all its escaped names and values, and
// none when nothing is escaped (beyond the properties map, which the plain twin of each bag
// needs as well).
func TestApplyBagAllocations(t *testing.T) {
	tests := []struct{ escaped, plain string }{
		{"%24.mid=m1&%24.ct=application%2Fjson&%24.to=%2Fdevices%2Fd&%24.exp=2030-01-01T00%3A00%3A00Z",
			"%24.mid=m1&%24.ct=application-json&%24.to=-devices-d&%24.exp=2030-01-01T00-00-00Z"},
		{"%24.ct=application%2Fjson&custom%20key=custom%20value&%24.diagid=x",
			"%24.ct=application-json&custom-key=custom-value&$.diagid=x"},
	}
	allocs := func(bag string) float64 {
		return testing.AllocsPerRun(100, func() {
			var m message.Message
			ApplyBag(&m, bag)
		})
	}
	if n := allocs("%24.mid=m1&%24.cid=c1&%24.ce=utf-8"); n != 0 {
		t.Errorf("a bag of system properties without escapes: %v allocations", n)
	}
	for _, tt := range tests {
		if got, want := allocs(tt.escaped), allocs(tt.plain)+1; got != want {
			t.Errorf("ApplyBag(%q): %v allocations, want %v", tt.escaped, got, want)
		}
	}
}

// refUnescape and refApplyBag are the bag decoding as it was written with net/url: the fuzz
// target holds ApplyBag and ParseBag to them.
func refUnescape(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	d, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return d
}

func refApplyBag(msg *message.Message, bag string) {
	eachBagToken(bag, func(rawName, rawValue string, _ bool) {
		if key, ok := strings.CutPrefix(rawName, "%24."); ok && strings.IndexByte(key, '%') < 0 {
			if f := systemField(msg, key); f != nil {
				*f = refUnescape(rawValue)
				return
			}
		}
		name := refUnescape(rawName)
		if name == "" {
			return
		}
		if key, ok := strings.CutPrefix(name, "$."); ok {
			if f := systemField(msg, key); f != nil {
				*f = refUnescape(rawValue)
				return
			}
			if key == "cdid" || key == "cmid" {
				return
			}
		}
		msg.SetProperty(name, refUnescape(rawValue))
	})
}

func refParseBag(bag string) []BagEntry {
	var out []BagEntry
	eachBagToken(bag, func(name, value string, hasValue bool) {
		out = append(out, BagEntry{Name: refUnescape(name), Value: refUnescape(value), NoValue: !hasValue})
	})
	return out
}
