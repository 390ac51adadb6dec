package mqtt

import (
	"context"
	"io"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/message"
)

// FuzzParseBag: parsing never panics, decodes as net/url's PathUnescape did (refApplyBag), and
// what EncodeBag writes ParseBag reads back unchanged. Seeds: testdata/fuzz/FuzzParseBag (the
// captured topics' bags, and malformed and mixed-case escapes).
func FuzzParseBag(f *testing.F) {
	f.Add("%24.mid=m1&a=b", "$.ct", "application/json")
	f.Fuzz(func(t *testing.T, bag, name, value string) {
		var m, ref message.Message
		ApplyBag(&m, bag)
		refApplyBag(&ref, bag)
		if !reflect.DeepEqual(m, ref) {
			t.Fatalf("ApplyBag(%q) = %+v, net/url decoding gives %+v", bag, m, ref)
		}
		entries := ParseBag(bag)
		if ref := refParseBag(bag); !reflect.DeepEqual(entries, ref) {
			t.Fatalf("ParseBag(%q) = %+v, net/url decoding gives %+v", bag, entries, ref)
		}
		for _, s := range []string{bag, name, value} {
			if got, want := unescape(s), refUnescape(s); got != want {
				t.Fatalf("unescape(%q) = %q, url.PathUnescape gives %q", s, got, want)
			}
		}
		for _, e := range entries {
			if e.NoValue && e.Value != "" {
				t.Fatalf("entry %+v has a value and NoValue", e)
			}
		}
		entries = append(entries, BagEntry{Name: name, Value: value}, BagEntry{Name: name, NoValue: true})
		// "name" alone with an empty name encodes to nothing; it cannot round-trip.
		entries = slices.DeleteFunc(entries, func(e BagEntry) bool { return e.Name == "" && e.NoValue })
		enc := EncodeBag(entries)
		if strings.ContainsAny(enc, "/$+ ") {
			t.Fatalf("EncodeBag wrote %q", enc)
		}
		if got := ParseBag(enc); !reflect.DeepEqual(got, entries) && !(len(got) == 0 && len(entries) == 0) {
			t.Fatalf("round trip of %q:\n got %+v\nwant %+v", enc, got, entries)
		}
	})
}

// FuzzParseUsername: parsing never panics, a parsed identity has no '/', and a username built
// from valid parts parses back to them. Seeds: testdata/fuzz/FuzzParseUsername.
func FuzzParseUsername(f *testing.F) {
	f.Add("h/d/?api-version=1", "h", "d", "m")
	f.Fuzz(func(t *testing.T, username, host, device, module string) {
		if u, err := ParseUsername(username); err == nil {
			if u.DeviceID == "" || strings.Contains(u.DeviceID, "/") || strings.Contains(u.ModuleID, "/") {
				t.Fatalf("ParseUsername(%q) = %+v", username, u)
			}
		}
		valid := func(s string) bool {
			return s != "" && !strings.Contains(s, "/") && s[0] != '?' && !hasPrefixFold(s, "api-version=")
		}
		if !valid(host) || !valid(device) {
			return
		}
		ct := "ua/" + module + " (x; y)"
		built := host + "/" + device
		if valid(module) {
			built += "/" + module
		} else {
			module = ""
		}
		built += "/?api-version=2021-04-12&DeviceClientType=" + EncodeBag([]BagEntry{{Name: ct, NoValue: true}})
		u, err := ParseUsername(built)
		want := Username{Host: host, DeviceID: device, ModuleID: module, APIVersion: "2021-04-12", ClientType: ct}
		if err != nil || u != want {
			t.Fatalf("ParseUsername(%q) = %+v, %v; want %+v", built, u, err, want)
		}
	})
}

// FuzzServeConn feeds arbitrary bytes to a connection: it must end (no hang), and never panic
// (a recovered panic is logged at Error and fails here too). Seeds: testdata/fuzz/FuzzServeConn,
// which start with the Node SDK's captured CONNECT.
func FuzzServeConn(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		logs := &logBuffer{t: t, done: true}
		hub := newFakeHub()
		s := NewServer(hub, Options{
			Logger:         newLogger(logs),
			ConnectTimeout: 100 * time.Millisecond,
			KeepAliveCap:   100 * time.Millisecond,
			WriteTimeout:   100 * time.Millisecond,
			MaxPacketSize:  64 << 10,
		})
		srv, cli := net.Pipe()
		done := make(chan struct{})
		go func() {
			s.ServeConn(context.Background(), srv, "mqtt")
			close(done)
		}()
		go io.Copy(io.Discard, cli)
		cli.SetWriteDeadline(time.Now().Add(2 * time.Second))
		cli.Write(data)
		cli.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeConn did not return")
		}
		if n := s.Connections(); n != 0 {
			t.Fatalf("%d connections after ServeConn returned", n)
		}
		if l := logs.lines("level=ERROR"); len(l) > 0 {
			t.Fatalf("error logged: %s", l)
		}
	})
}
