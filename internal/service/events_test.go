package service_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/message"
)

// TestBinaryStreamMatchesNDJSON: the client reads the binary event stream; every event must be
// what encoding/json makes of the hub's NDJSON line for it, whatever the record holds, on the
// built-in endpoint and on the raw tap.
func TestBinaryStreamMatchesNDJSON(t *testing.T) {
	f := newFixture(t)
	enq := time.Date(2026, 11, 25, 14, 0, 0, 120000000, time.UTC)
	records := []message.Message{
		{},
		{ConnectionDeviceID: "d1", EnqueuedTime: enq, Source: message.SourceTelemetry, Body: []byte(`{"temp":21.5}`),
			MessageID: "m", CorrelationID: "c", UserID: "u", To: "/devices/d1/messages/events", ContentType: "application/json",
			ContentEncoding: "utf-8", ExpiryTime: "2026-12-01T00:00:00Z", CreationTime: "2026-11-25T13:59:59Z", MessageSchema: "s",
			InterfaceID: "dtmi:x;1", ComponentName: "thermostat", OutputName: "out", DataSchema: "ds",
			ConnectionAuthGenerationID: "639312185157875247", ConnectionAuthMethod: `{"scope":"device","type":"sas"}`,
			Properties: map[string]string{"b": "2", "a": "1", "Z": "<&>"}},
		{ConnectionDeviceID: "d2", ConnectionModuleID: "m", EnqueuedTime: time.Unix(1764079200, 0).UTC()},
		{ConnectionDeviceID: "d3", Body: []byte{0xff, 0xfe, 0}},
		{ConnectionDeviceID: "a\"b\\c/d", MessageID: "\x00\x01\x1f\x7f", ContentType: "<script>&",
			Properties: map[string]string{"\t\n\r\b\f": "\u2028\u2029", "ü": "ß€😀", "": ""},
			Body:       []byte("line\nnext \"quoted\" <b> & \u2029 tab\t")},
		{ConnectionDeviceID: "d\xff", Properties: map[string]string{"k\xc3": "\xed\xa0\x80v", "\xef\xbf\xbd": "\xff\xfe"}, Body: []byte("ok")},
		{ConnectionDeviceID: "d4", Routing: &message.Routing{}},
		{ConnectionDeviceID: "d5", Routing: &message.Routing{Routes: []string{"$fallback"}, Endpoints: []string{"events"}}},
		{ConnectionDeviceID: "d6", Routing: &message.Routing{Routes: []string{"hot", "r\xff"}, Endpoints: []string{"events", "lake"}}},
		{ConnectionDeviceID: "d7", Routing: &message.Routing{Routes: []string{"cold"}, Endpoints: []string{"lake"}}},
	}
	for i, m := range records {
		data, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Log.Append(context.Background(), strconv.Itoa(i), enq, data); err != nil {
			t.Fatal(err)
		}
	}
	owner := f.Policy(t, "iothubowner")
	c := f.client(t, "iothubowner")
	for _, raw := range []bool{false, true} {
		n := len(records) - 2 // d4 went nowhere, d7 only to "lake"
		if raw {
			n = len(records)
		}
		want := ndjsonEvents(t, f.srv.URL, owner, raw, n)
		got, err := readN(t, c, client.ReadOptions{From: "start", Raw: raw}, n)
		if err != nil {
			t.Fatal(err)
		}
		sortEvents(got)
		if len(got) != len(want) {
			t.Fatalf("raw %v: %d events, want %d", raw, len(got), len(want))
		}
		for i := range want {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Errorf("raw %v, event %d:\n got %+v\nwant %+v", raw, i, got[i], want[i])
			}
		}
	}
}

// ndjsonEvents reads n events of the NDJSON stream and decodes them with encoding/json.
func ndjsonEvents(t *testing.T, base string, p auth.Policy, raw bool, n int) []api.Event {
	t.Helper()
	q := url.Values{"from": {"start"}, "api-version": {api.Version}, "raw": {strconv.FormatBool(raw)}}
	req, err := http.NewRequest(http.MethodGet, base+"/messages/events?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	token, err := auth.Sign("localhost", p.Name, p.PrimaryKey, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", token)
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("Content-Type %q", ct)
	}
	var evs []api.Event
	sc := bufio.NewScanner(resp.Body)
	for len(evs) < n && sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%s: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	if len(evs) < n {
		t.Fatalf("NDJSON stream ended after %d events (%v)", len(evs), sc.Err())
	}
	sortEvents(evs)
	return evs
}

// sortEvents orders events by partition and sequence number: partitions interleave freely.
func sortEvents(evs []api.Event) {
	slices.SortFunc(evs, func(a, b api.Event) int {
		if a.Partition != b.Partition {
			return a.Partition - b.Partition
		}
		return int(a.SequenceNumber - b.SequenceNumber)
	})
}
