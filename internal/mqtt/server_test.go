package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tetherhub/tether/internal/message"
)

const eventsTopic = "devices/dev1/messages/events/"

func TestConnectNodeCapture(t *testing.T) {
	hub := newFakeHub()
	s := startServer(t, hub, Options{})
	c := dial(t, s.addr)
	c.send(readHex(t, "testdata/connect_node.hex"))
	if pk := c.expect(packets.Connack); pk.ReasonCode != 0 || pk.SessionPresent {
		t.Fatalf("CONNACK code 0x%02x session %v", pk.ReasonCode, pk.SessionPresent)
	}
	hub.mu.Lock()
	req := hub.connects[0]
	hub.mu.Unlock()
	if req.RemoteAddr == nil {
		t.Error("no RemoteAddr")
	}
	req.RemoteAddr = nil
	want := ConnectRequest{
		ClientID:   "dev1",
		Username:   "localhost/dev1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)",
		Password:   "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=ncIsSWyiSemdhWNR5RNnOOI7Z9AfnK52hJTri9fyQNA%3D&se=1795615865",
		DeviceID:   "dev1",
		APIVersion: "2021-04-12",
		ClientType: "azure-iot-device/1.18.4 (node v20.20.2; Debian 12; x64)",
		Transport:  "mqtt",
	}
	if !reflect.DeepEqual(req, want) {
		t.Errorf("ConnectRequest\n got %+v\nwant %+v", req, want)
	}
	c.send(pingreqBytes)
	c.expect(packets.Pingresp)
}

func TestConnectRefused(t *testing.T) {
	tests := []struct {
		name       string
		hubErr     error
		packet     []byte
		code       byte
		hubCalled  bool
		logMessage string
	}{
		{"hub error", errors.New("bad signature"), connectBytes("dev1", testUsername, connectOpts{}), 0x05, true, "bad signature"},
		{"server unavailable", fmt.Errorf("registry: %w", ErrServerUnavailable), connectBytes("dev1", testUsername, connectOpts{}), 0x03, true, "server unavailable"},
		{"mqtt 5", nil, connectBytes("dev1", testUsername, connectOpts{level: 5}), 0x01, false, "protocol level 5"},
		{"mqtt 3.1", nil, connectBytes("dev1", testUsername, connectOpts{level: 3}), 0x01, false, "protocol level 3"},
		{"client id of another device", nil, connectBytes("dev2", testUsername, connectOpts{}), 0x05, false, "does not name"},
		{"client id with a module", nil, connectBytes("dev1/mod1", testUsername, connectOpts{}), 0x05, false, "does not name"},
		{"no username", nil, connectBytes("dev1", "", connectOpts{noUsername: true}), 0x05, false, "no username"},
		{"bad username", nil, connectBytes("dev1", "dev1", connectOpts{}), 0x05, false, "invalid username"},
		{"will on another device's topic", nil, connectBytes("dev1", testUsername, connectOpts{willTopic: "devices/dev2/messages/events/", willBody: "x"}), 0x05, false, "will topic"},
		{"will on the twin topic", nil, connectBytes("dev1", testUsername, connectOpts{willTopic: "$iothub/twin/PATCH/properties/reported/", willBody: "x"}), 0x05, false, "will topic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub()
			hub.connectErr = tt.hubErr
			s := startServer(t, hub, Options{})
			c := dial(t, s.addr)
			c.send(tt.packet)
			if pk := c.expect(packets.Connack); pk.ReasonCode != tt.code {
				t.Errorf("CONNACK 0x%02x, want 0x%02x", pk.ReasonCode, tt.code)
			}
			c.expectClosed(2 * time.Second)
			hub.mu.Lock()
			called := len(hub.connects) > 0
			hub.mu.Unlock()
			if called != tt.hubCalled {
				t.Errorf("hub.Connect called = %v, want %v", called, tt.hubCalled)
			}
			waitLog(t, s.logs, "level=INFO", "connect refused", tt.logMessage)
		})
	}
}

// waitLog waits until a log line contains all subs.
func waitLog(t *testing.T, logs *logBuffer, subs ...string) []string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if l := logs.lines(subs...); len(l) > 0 {
			return l
		}
	}
	t.Fatalf("no log line with %q in:\n%s", subs, logs.String())
	return nil
}

func TestUsernameFormsEndToEnd(t *testing.T) {
	tests := []struct {
		clientID, username string
		dev, mod, api, ct  string
		model              string
	}{
		{"dev1", testUsername + "&DeviceClientType=ua%2F1", "dev1", "", "2021-04-12", "ua/1", ""},
		{"dev1", "hub.example:8883/dev1/?api-version=2020-09-30&model-id=dtmi%3Acom%3Ax%3B1", "dev1", "", "2020-09-30", "", "dtmi:com:x;1"},
		{"dev1/mod1", "h/dev1/mod1/?api-version=2021-04-12", "dev1", "mod1", "2021-04-12", "", ""},
		{"dev1", "h/dev1/api-version=2016-11-14&DeviceClientType=c", "dev1", "", "2016-11-14", "c", ""},
		{"dev1/m", "h/dev1/m/api-version=2017-06-30/DeviceClientType=edge", "dev1", "m", "2017-06-30", "edge", ""},
	}
	hub := newFakeHub()
	s := startServer(t, hub, Options{})
	for i, tt := range tests {
		connectDevice(t, s.addr, tt.clientID, tt.username, connectOpts{})
		hub.mu.Lock()
		req := hub.connects[i]
		hub.mu.Unlock()
		if req.DeviceID != tt.dev || req.ModuleID != tt.mod || req.APIVersion != tt.api || req.ClientType != tt.ct || req.ModelID != tt.model {
			t.Errorf("%s: got %+v", tt.username, req)
		}
	}
}

func TestD2CCapturedTopics(t *testing.T) {
	names, topics := readTopics(t)
	hub := newFakeHub()
	s := startServer(t, hub, Options{})
	dev := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	mod := connectDevice(t, s.addr, "dev1/mod1", "localhost/dev1/mod1/?api-version=2021-04-12", connectOpts{})
	for i, name := range names {
		c := dev
		if strings.Contains(topics[name], "/modules/") {
			c = mod
		}
		id := uint16(i + 1)
		body := []byte(`{"n":` + fmt.Sprint(i) + `}`)
		c.send(publishBytes(topics[name], 1, id, body, false))
		c.expectPuback(id)
		got := hub.messages()[i]
		want := wantFromTopic[name]
		want.Body = body
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, *got, want)
		}
	}
}

func TestQoS0IsSubmittedWithoutPuback(t *testing.T) {
	hub := newFakeHub()
	hub.manual = true // never durable: QoS 0 must not wait
	s := startServer(t, hub, Options{})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	c.send(publishBytes(eventsTopic+"a=1", 0, 0, []byte("x"), false))
	c.send(pingreqBytes)
	c.expect(packets.Pingresp)
	if m := hub.messages(); len(m) != 1 || m[0].Properties["a"] != "1" {
		t.Fatalf("submitted %v", m)
	}
}

func TestPubackOnlyAfterDurableInArrivalOrder(t *testing.T) {
	hub := newFakeHub()
	hub.manual = true
	s := startServer(t, hub, Options{})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	for id := uint16(1); id <= 3; id++ {
		c.send(publishBytes(eventsTopic, 1, id, []byte{byte(id)}, false))
	}
	// Pipelining: all three are submitted although none is durable.
	hub.waitFor(t, "3 submitted", func() bool { return len(hub.submitted) == 3 })
	c.expectNothing(100 * time.Millisecond)
	// Durability completes out of order; nothing may be acknowledged before the first.
	hub.release(2, nil)
	hub.release(1, nil)
	c.expectNothing(100 * time.Millisecond)
	hub.release(0, nil)
	for id := uint16(1); id <= 3; id++ {
		c.expectPuback(id)
	}
}

func TestPubackWaitsForDelayedDurability(t *testing.T) {
	const delay = 80 * time.Millisecond
	hub := newFakeHub()
	hub.delay = delay
	s := startServer(t, hub, Options{})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	start := time.Now()
	for id := uint16(1); id <= 5; id++ {
		c.send(publishBytes(eventsTopic, 1, id, nil, false))
	}
	for id := uint16(1); id <= 5; id++ {
		c.expectPuback(id)
		if id == 1 && time.Since(start) < delay {
			t.Fatalf("PUBACK after %v, before the message was durable (%v)", time.Since(start), delay)
		}
	}
	// Pipelined: five messages took about one durability delay, not five.
	if el := time.Since(start); el > 4*delay {
		t.Errorf("5 pipelined publishes took %v; durability waits are serialised", el)
	}
}

func TestInflightWindowIsBackpressure(t *testing.T) {
	hub := newFakeHub()
	hub.manual = true
	s := startServer(t, hub, Options{MaxInflight: 2})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	for id := uint16(1); id <= 4; id++ {
		c.send(publishBytes(eventsTopic, 1, id, nil, false))
	}
	hub.waitFor(t, "2 submitted", func() bool { return len(hub.submitted) == 2 })
	time.Sleep(100 * time.Millisecond)
	if n := len(hub.messages()); n != 2 {
		t.Fatalf("%d submitted with a window of 2", n)
	}
	hub.release(0, nil)
	c.expectPuback(1)
	hub.waitFor(t, "3 submitted", func() bool { return len(hub.submitted) == 3 })
	hub.release(1, nil)
	hub.release(2, nil)
	hub.waitFor(t, "4 submitted", func() bool { return len(hub.submitted) == 4 })
	hub.release(3, nil)
	for id := uint16(2); id <= 4; id++ {
		c.expectPuback(id)
	}
}

func TestForbiddenPublishClosesConnection(t *testing.T) {
	tests := []struct {
		name   string
		packet []byte
		reason string
	}{
		{"qos 2", publishBytes(eventsTopic, 2, 1, []byte("x"), false), "QoS 2"},
		{"another device", publishBytes("devices/dev2/messages/events/", 1, 1, []byte("x"), false), "another identity's topic"},
		{"a module of the device", publishBytes("devices/dev1/modules/m/messages/events/", 1, 1, []byte("x"), false), "another identity's topic"},
		{"twin get", publishBytes("$iothub/twin/GET/?$rid=1", 0, 0, []byte(" "), false), "unsupported topic"},
		{"devicebound", publishBytes("devices/dev1/messages/devicebound/", 1, 1, nil, false), "unsupported topic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub()
			s := startServer(t, hub, Options{})
			c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
			c.send(tt.packet)
			c.expectClosed(2 * time.Second)
			hub.waitFor(t, "disconnect", func() bool { return hub.devices[0].disc == 1 })
			if m := hub.messages(); len(m) != 0 {
				t.Errorf("%d messages stored", len(m))
			}
			if l := waitLog(t, s.logs, "level=WARN", "device=dev1"); len(l) != 1 || !strings.Contains(l[0], tt.reason) {
				t.Errorf("want one warning with %q, got %q", tt.reason, l)
			}
		})
	}
}

func TestRetainBecomesProperty(t *testing.T) {
	hub := newFakeHub()
	s := startServer(t, hub, Options{})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	c.send(publishBytes(eventsTopic+"a=1", 1, 9, []byte("r"), true))
	c.expectPuback(9)
	want := map[string]string{"a": "1", "mqtt-retain": "true"}
	if got := hub.messages()[0].Properties; !reflect.DeepEqual(got, want) {
		t.Errorf("properties %v, want %v", got, want)
	}
}

func TestWill(t *testing.T) {
	will := connectOpts{willTopic: eventsTopic + "%24.mid=w1&k=v", willBody: "gone"}
	t.Run("network drop", func(t *testing.T) {
		hub := newFakeHub()
		s := startServer(t, hub, Options{})
		c := connectDevice(t, s.addr, "dev1", testUsername, will)
		c.nc.Close()
		hub.waitFor(t, "disconnect", func() bool { return len(hub.devices) == 1 && hub.devices[0].disc == 1 })
		msgs := hub.messages()
		if len(msgs) != 1 {
			t.Fatalf("%d messages, want the will", len(msgs))
		}
		want := message.Message{MessageID: "w1", Body: []byte("gone"),
			Properties: map[string]string{"k": "v", "iothub-MessageType": "Will"}}
		if !reflect.DeepEqual(*msgs[0], want) {
			t.Errorf("will\n got %+v\nwant %+v", *msgs[0], want)
		}
		if hub.devices[0].graceful {
			t.Error("Disconnected(graceful=true) after a network drop")
		}
	})
	t.Run("clean disconnect", func(t *testing.T) {
		hub := newFakeHub()
		s := startServer(t, hub, Options{})
		c := connectDevice(t, s.addr, "dev1", testUsername, will)
		c.send(disconnectBytes)
		c.expectClosed(2 * time.Second)
		hub.waitFor(t, "disconnect", func() bool { return hub.devices[0].disc == 1 })
		if m := hub.messages(); len(m) != 0 {
			t.Errorf("will submitted after DISCONNECT: %+v", m[0])
		}
		if !hub.devices[0].graceful {
			t.Error("Disconnected(graceful=false) after DISCONNECT")
		}
	})
	t.Run("protocol violation", func(t *testing.T) {
		hub := newFakeHub()
		s := startServer(t, hub, Options{})
		c := connectDevice(t, s.addr, "dev1", testUsername, will)
		c.send(publishBytes(eventsTopic, 2, 1, nil, false))
		c.expectClosed(2 * time.Second)
		hub.waitFor(t, "will", func() bool { return len(hub.submitted) == 1 })
	})
}

func TestTakeoverClosesOlderConnection(t *testing.T) {
	hub := newFakeHub()
	hub.disconnectDelay = 100 * time.Millisecond // the new connection must wait for it
	s := startServer(t, hub, Options{})
	old := connectDevice(t, s.addr, "dev1", testUsername,
		connectOpts{willTopic: eventsTopic, willBody: "gone"})
	other := connectDevice(t, s.addr, "dev2", "localhost/dev2/?api-version=1", connectOpts{})
	newer := dial(t, s.addr)
	newer.send(connectBytes("dev1", testUsername, connectOpts{}))
	if pk := newer.expect(packets.Connack); pk.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02x", pk.ReasonCode)
	}
	// The old connection reported its end before the new one was acknowledged.
	hub.mu.Lock()
	events := strings.Join(hub.events, ", ")
	hub.mu.Unlock()
	if want := "connect 0, connect 1, connect 2, disconnect 0 false"; events != want {
		t.Errorf("events %q, want %q", events, want)
	}
	old.expectClosed(2 * time.Second)
	if m := hub.messages(); len(m) != 0 {
		t.Errorf("will submitted on takeover")
	}
	waitLog(t, s.logs, "400027", "device=dev1", "ConnectionForcefullyClosedOnNewConnection")
	// Others are untouched, and the new connection works.
	other.send(pingreqBytes)
	other.expect(packets.Pingresp)
	newer.send(publishBytes(eventsTopic, 1, 1, nil, false))
	newer.expectPuback(1)
	if n := s.Connections(); n != 2 {
		t.Errorf("Connections() = %d, want 2", n)
	}
}

func TestKeepAlive(t *testing.T) {
	t.Run("one and a half times the client's", func(t *testing.T) {
		t.Parallel()
		hub := newFakeHub()
		s := startServer(t, hub, Options{})
		c := connectDevice(t, s.addr, "dev1", testUsername,
			connectOpts{keepAlive: 1, willTopic: eventsTopic, willBody: "gone"})
		// Traffic resets the timer.
		time.Sleep(900 * time.Millisecond)
		c.send(pingreqBytes)
		c.expect(packets.Pingresp)
		start := time.Now()
		c.expectClosed(3 * time.Second)
		if el := time.Since(start); el < 1400*time.Millisecond {
			t.Errorf("closed after %v, want 1.5 s", el)
		}
		// A keep-alive timeout is a device that went away: the will is published.
		hub.waitFor(t, "will", func() bool { return len(hub.submitted) == 1 })
	})
	for _, ka := range []uint16{0, 60} {
		t.Run(fmt.Sprintf("capped, keep-alive %d", ka), func(t *testing.T) {
			t.Parallel()
			hub := newFakeHub()
			s := startServer(t, hub, Options{KeepAliveCap: 300 * time.Millisecond})
			c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{keepAlive: ka})
			start := time.Now()
			c.expectClosed(3 * time.Second)
			if el := time.Since(start); el < 250*time.Millisecond || el > 2*time.Second {
				t.Errorf("closed after %v, want 300 ms", el)
			}
		})
	}
}

func TestConnectTimeout(t *testing.T) {
	hub := newFakeHub()
	s := startServer(t, hub, Options{ConnectTimeout: 200 * time.Millisecond})
	c := dial(t, s.addr)
	c.expectClosed(2 * time.Second)
}

func TestSubscribeGrants(t *testing.T) {
	hub := newFakeHub()
	s := startServer(t, hub, Options{})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	c.send(subscribeBytes(7,
		packets.Subscription{Filter: "devices/dev1/messages/devicebound/#", Qos: 1},
		packets.Subscription{Filter: "$iothub/twin/res/#", Qos: 0},
		packets.Subscription{Filter: "$iothub/methods/POST/#", Qos: 0},
		packets.Subscription{Filter: "devices/+/messages/devicebound/#", Qos: 2},
		packets.Subscription{Filter: "devices/dev2/messages/devicebound/#", Qos: 1},
		packets.Subscription{Filter: "devices/dev1/messages/devicebound/#", Qos: 0},
		packets.Subscription{Filter: "$iothub/twin/PATCH/properties/desired/#", Qos: 0},
		packets.Subscription{Filter: "#", Qos: 1},
	))
	pk := c.expect(packets.Suback)
	if want := []byte{1, 0x80, 0x80, 1, 0x80, 0, 0x80, 0x80}; pk.PacketID != 7 || !reflect.DeepEqual(pk.ReasonCodes, want) {
		t.Errorf("SUBACK %d %x, want 7 %x", pk.PacketID, pk.ReasonCodes, want)
	}
	c.send(unsubscribeBytes(8, "devices/dev1/messages/devicebound/#", "$iothub/twin/res/#"))
	if pk := c.expect(packets.Unsuback); pk.PacketID != 8 {
		t.Errorf("UNSUBACK %d", pk.PacketID)
	}
	c.send(pingreqBytes)
	c.expect(packets.Pingresp)
	c.send(pubackBytes(999)) // never sent: ignored
	c.send(pingreqBytes)
	c.expect(packets.Pingresp)

	m := connectDevice(t, s.addr, "dev1/mod1", "h/dev1/mod1/?api-version=1", connectOpts{})
	m.send(subscribeBytes(1, packets.Subscription{Filter: "devices/dev1/messages/devicebound/#", Qos: 1}))
	if pk := m.expect(packets.Suback); !reflect.DeepEqual(pk.ReasonCodes, []byte{0x80}) {
		t.Errorf("module devicebound SUBACK %x, want 80", pk.ReasonCodes)
	}
}

func TestOversizedPacketCloses(t *testing.T) {
	hub := newFakeHub()
	s := startServer(t, hub, Options{MaxPacketSize: 1024})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	c.send(publishBytes(eventsTopic, 1, 1, make([]byte, 900), false)) // fits
	c.expectPuback(1)
	c.send(publishBytes(eventsTopic, 1, 2, make([]byte, 2000), false))
	c.expectClosed(2 * time.Second)

	// A remaining length announcing 256 MB and no bytes.
	c = connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	c.send([]byte{0x32, 0xff, 0xff, 0xff, 0x7f})
	c.expectClosed(2 * time.Second)
	if n := len(hub.messages()); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
}

func TestExpiryCloses(t *testing.T) {
	hub := newFakeHub()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	hub.expiry = now.Add(300 * time.Millisecond)
	s := startServer(t, hub, Options{Now: func() time.Time { return now }})
	start := time.Now()
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{willTopic: eventsTopic, willBody: "x"})
	c.expectClosed(3 * time.Second)
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Errorf("closed after %v, want 300 ms", el)
	}
	hub.waitFor(t, "disconnect", func() bool { return hub.devices[0].disc == 1 })
	if m := hub.messages(); len(m) != 0 {
		t.Error("will submitted on credential expiry")
	}
}

func TestExpiryDrainsPendingPubacks(t *testing.T) {
	hub := newFakeHub()
	hub.manual = true
	now := time.Now()
	s := startServer(t, hub, Options{Now: func() time.Time { return now }})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	c.send(publishBytes(eventsTopic, 1, 5, nil, false))
	hub.waitFor(t, "submitted", func() bool { return len(hub.submitted) == 1 })
	hub.mu.Lock()
	hub.expiry = now // takes effect on the next connection only; expire this one by hand
	hub.mu.Unlock()
	s.mu.Lock()
	for cn := range s.conns {
		cn.stop(reasonExpired)
	}
	s.mu.Unlock()
	c.expectNothing(100 * time.Millisecond)
	hub.release(0, nil)
	c.expectPuback(5)
	c.expectClosed(2 * time.Second)
}

// A stop must reach a reader that waits for room in a full window, even if nothing the device
// sent ever becomes durable.
func TestStopReachesAFullWindow(t *testing.T) {
	hub := newFakeHub()
	hub.manual = true
	s := startServer(t, hub, Options{MaxInflight: 1, WriteTimeout: 200 * time.Millisecond})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	c.send(publishBytes(eventsTopic, 1, 1, nil, false))
	c.send(publishBytes(eventsTopic, 1, 2, nil, false))
	hub.waitFor(t, "submitted", func() bool { return len(hub.submitted) == 1 })
	s.mu.Lock()
	for cn := range s.conns {
		cn.stop(reasonExpired)
	}
	s.mu.Unlock()
	c.expectClosed(2 * time.Second)
	if n := len(hub.messages()); n != 1 {
		t.Errorf("%d submitted, want 1: the reader went on after the stop", n)
	}
}

func TestShutdownWaitsForInflight(t *testing.T) {
	hub := newFakeHub()
	hub.manual = true
	s := startServer(t, hub, Options{})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	c.send(publishBytes(eventsTopic, 1, 7, nil, false))
	hub.waitFor(t, "submitted", func() bool { return len(hub.submitted) == 1 })

	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a publish in flight", err)
	case <-time.After(150 * time.Millisecond):
	}
	hub.release(0, nil)
	c.expectPuback(7)
	c.expectClosed(2 * time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := s.Connections(); n != 0 {
		t.Errorf("Connections() = %d after Shutdown", n)
	}
	if _, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

func TestShutdownDeadline(t *testing.T) {
	hub := newFakeHub()
	hub.manual = true
	s := startServer(t, hub, Options{})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	c.send(publishBytes(eventsTopic, 1, 7, nil, false))
	hub.waitFor(t, "submitted", func() bool { return len(hub.submitted) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	c.expectClosed(time.Second) // no PUBACK
}

func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	hub := newFakeHub()
	s := startServer(t, hub, Options{})
	good := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	inputs := map[string][]byte{
		"http":               []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"publish first":      publishBytes(eventsTopic, 0, 0, nil, false),
		"bad protocol name":  append([]byte{0x10, 0x06, 0, 4}, "MQTX"...),
		"reserved type":      {0x00, 0x00},
		"long length":        {0x10, 0x80, 0x80, 0x80, 0x80, 0x01},
		"bad connect flags":  {0x11, 0x00},
		"zero-length string": {0x10, 0x02, 0x00, 0x00},
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			c := dial(t, s.addr)
			c.send(in)
			c.expectClosed(2 * time.Second)
		})
	}
	after := map[string][]byte{
		"second connect":   connectBytes("dev2", "h/dev2/", connectOpts{}),
		"garbage":          {0xff, 0xff, 0xff, 0xff},
		"invalid utf-8":    publishBytes("devices/dev2/messages/events/\xff", 0, 0, nil, false),
		"qos1 without id":  {0x32, 0x05, 0x00, 0x01, 'x', 0x00, 0x00},
		"subscribe qos 3":  {0x82, 0x06, 0x00, 0x01, 0x00, 0x01, '#', 0x03},
		"short puback":     {0x40, 0x00},
		"pubrel":           {0x62, 0x02, 0x00, 0x01},
		"empty subscribe":  {0x82, 0x02, 0x00, 0x01},
		"connack from dev": {0x20, 0x02, 0x00, 0x00},
	}
	for name, in := range after {
		t.Run(name, func(t *testing.T) {
			c := connectDevice(t, s.addr, "dev2", "h/dev2/", connectOpts{})
			c.send(in)
			c.expectClosed(2 * time.Second)
		})
	}
	good.send(pingreqBytes)
	good.expect(packets.Pingresp)
	good.send(publishBytes(eventsTopic, 1, 1, nil, false))
	good.expectPuback(1)
}

func TestRefusedMessageClosesWithoutPuback(t *testing.T) {
	t.Run("submit", func(t *testing.T) {
		hub := newFakeHub()
		s := startServer(t, hub, Options{})
		c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
		c.send(publishBytes(eventsTopic+"%24.mid=bad%20id", 1, 1, nil, false)) // ' ' is not a message-id character
		c.expectClosed(2 * time.Second)
		waitLog(t, s.logs, "level=WARN", "device=dev1", "invalid message")
	})
	t.Run("wait", func(t *testing.T) {
		hub := newFakeHub()
		hub.waitErr = errors.New("disk full")
		s := startServer(t, hub, Options{})
		c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
		c.send(publishBytes(eventsTopic, 1, 1, nil, false))
		c.expectClosed(2 * time.Second)
		waitLog(t, s.logs, "level=WARN", "device=dev1", "disk full")
	})
}

// A panic while handling a connection ends that connection, not the hub: in Submit (the
// reader) or in Connect (CONNECT runs on a goroutine of its own, see conn.serve).
func TestPanicIsContained(t *testing.T) {
	for name, set := range map[string]func(h *fakeHub, on bool){
		"submit":  func(h *fakeHub, on bool) { h.panicSubmit = on },
		"connect": func(h *fakeHub, on bool) { h.panicConnect = on },
	} {
		t.Run(name, func(t *testing.T) {
			hub := newFakeHub()
			set(hub, true)
			s := startServer(t, hub, Options{})
			c := dial(t, s.addr)
			c.send(connectBytes("dev1", testUsername, connectOpts{}))
			c.send(publishBytes(eventsTopic, 1, 1, nil, false))
			c.expectClosed(2 * time.Second)
			if name == "submit" { // the device was admitted: it is told of the disconnect
				hub.waitFor(t, "disconnect", func() bool { return hub.devices[0].disc == 1 })
			}
			waitLog(t, s.logs, "level=ERROR", "panicked")
			hub.mu.Lock()
			set(hub, false)
			hub.mu.Unlock()
			c = connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
			c.send(publishBytes(eventsTopic, 1, 1, nil, false))
			c.expectPuback(1)
		})
	}
}

func TestC2DSeam(t *testing.T) {
	hub := newFakeHub()
	s := startServer(t, hub, Options{})
	c := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	dev := func() *fakeDevice {
		hub.mu.Lock()
		defer hub.mu.Unlock()
		return hub.devices[0]
	}()
	c.send(subscribeBytes(1, packets.Subscription{Filter: "devices/dev1/messages/devicebound/#", Qos: 1}))
	c.expect(packets.Suback)
	hub.waitFor(t, "C2DSubscribed", func() bool { return dev.out != nil })
	hub.mu.Lock()
	out := dev.out
	hub.mu.Unlock()

	topic := "devices/dev1/messages/devicebound/" + EncodeBag([]BagEntry{{Name: "$.mid", Value: "c1"}, {Name: "path", Value: "/a/b"}})
	acks := make(chan error, 2)
	if err := out.Publish(context.Background(), topic, []byte("hello"), func(err error) { acks <- err }); err != nil {
		t.Fatal(err)
	}
	pk := c.expect(packets.Publish)
	if pk.TopicName != topic || string(pk.Payload) != "hello" || pk.FixedHeader.Qos != 1 || pk.PacketID == 0 {
		t.Fatalf("C2D publish %+v", pk)
	}
	select {
	case err := <-acks:
		t.Fatalf("acked (%v) before the device's PUBACK", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.send(pubackBytes(pk.PacketID))
	if err := <-acks; err != nil {
		t.Fatalf("ack: %v", err)
	}
	if err := out.Publish(context.Background(), topic, nil, func(err error) { acks <- err }); err != nil {
		t.Fatal(err)
	}
	c.expect(packets.Publish)
	c.nc.Close()
	if err := <-acks; !errors.Is(err, ErrConnectionClosed) {
		t.Fatalf("pending ack on close: %v", err)
	}
	hub.waitFor(t, "disconnect", func() bool { return dev.disc == 1 })
	if err := out.Publish(context.Background(), topic, nil, nil); !errors.Is(err, ErrConnectionClosed) {
		t.Fatalf("Publish after close = %v", err)
	}

	c = connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	c.send(subscribeBytes(1, packets.Subscription{Filter: "devices/+/messages/devicebound/#", Qos: 1}))
	c.expect(packets.Suback)
	hub.waitFor(t, "C2DSubscribed", func() bool { return hub.devices[1].out != nil })
	c.send(unsubscribeBytes(2, "devices/+/messages/devicebound/#"))
	c.expect(packets.Unsuback)
	hub.waitFor(t, "C2DUnsubscribed", func() bool { return hub.devices[1].unsubs == 1 })
	if err := out.Publish(context.Background(), topic, nil, nil); err == nil {
		t.Fatal("Publish on an old connection succeeded")
	}
}

func TestTLSClientCertificate(t *testing.T) {
	serverCert := selfSigned(t, "localhost")
	clientCert := selfSigned(t, "dev1")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAnyClientCert, // the hub checks the thumbprint or CA
	})
	if err != nil {
		t.Fatal(err)
	}
	hub := newFakeHub()
	s := NewServer(hub, Options{Logger: discardLogger()})
	go s.Serve(context.Background(), ln, "mqtt")
	defer s.Shutdown(context.Background())

	nc, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		InsecureSkipVerify: true,
		Certificates:       []tls.Certificate{clientCert},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &client{t: t, nc: nc, br: bufio.NewReader(nc)}
	c.send(connectBytes("dev1", testUsername, connectOpts{}))
	if pk := c.expect(packets.Connack); pk.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02x", pk.ReasonCode)
	}
	hub.mu.Lock()
	req := hub.connects[0]
	hub.mu.Unlock()
	if req.Password != "" || len(req.PeerCertificates) != 1 || req.PeerCertificates[0].Subject.CommonName != "dev1" {
		t.Errorf("password %q, certificates %d", req.Password, len(req.PeerCertificates))
	}
}

func TestTLSHandshakeTimeout(t *testing.T) {
	serverCert := selfSigned(t, "localhost")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert}})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(newFakeHub(), Options{Logger: discardLogger(), ConnectTimeout: 200 * time.Millisecond})
	go s.Serve(context.Background(), ln, "mqtt")
	defer s.Shutdown(context.Background())
	// A client that never starts the handshake does not hold its goroutine.
	c := dial(t, ln.Addr().String())
	c.expectClosed(2 * time.Second)
}

func selfSigned(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{cn},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestDisconnectRevokedIdentity(t *testing.T) {
	hub := newFakeHub()
	s := startServer(t, hub, Options{})
	victim := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{willTopic: eventsTopic, willBody: "gone"})
	other := connectDevice(t, s.addr, "dev2", "localhost/dev2/?api-version=1", connectOpts{})
	if n := s.Disconnect("dev1", ""); n != 1 {
		t.Fatalf("Disconnect closed %d connections for dev1, want 1", n)
	}
	victim.expectClosed(2 * time.Second)
	for deadline := time.Now().Add(2 * time.Second); s.Connections() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Connections() = %d after Disconnect, want 1", s.Connections())
		}
	}
	if n := s.Disconnect("dev9", ""); n != 0 {
		t.Errorf("Disconnect closed %d connections for an unknown device", n)
	}
	if m := hub.messages(); len(m) != 0 {
		t.Errorf("will submitted for a revoked identity: %v", m)
	}
	other.send(pingreqBytes)
	other.expect(packets.Pingresp)
}

// TLS connections hold a read buffer only while they read a packet and share a pool of them
// (conn.poolsReader): packets of every size around the buffer's, back to back or one at a time,
// from connections taking turns, must arrive whole, in order and unmixed.
func TestTLSPacketsAroundTheReadBuffer(t *testing.T) {
	hub := newFakeHub()
	s := startTLSServer(t, hub, Options{})
	sizes := []int{0, 1, 100, readBufferSize - 40, readBufferSize - 1, readBufferSize, readBufferSize + 1, 3 * readBufferSize, 70 << 10}
	want := make([][][]byte, 2) // each device's bodies in the order it sent them
	body := func(dev, n int) []byte {
		b := make([]byte, sizes[n%len(sizes)])
		for j := range b {
			b[j] = byte(dev*31 + n*7 + j)
		}
		return b
	}
	var devs []*client
	for d := range 2 {
		id := fmt.Sprintf("dev%d", d+1)
		c := dialTLS(t, s.addr)
		c.send(connectBytes(id, "localhost/"+id+"/?api-version=2021-04-12", connectOpts{}))
		if pk := c.expect(packets.Connack); pk.ReasonCode != 0 {
			t.Fatalf("CONNACK 0x%02x", pk.ReasonCode)
		}
		devs = append(devs, c)
	}
	topic := func(dev int) string { return fmt.Sprintf("devices/dev%d/messages/events/", dev+1) }
	// Back to back: all of a device's packets in one write.
	for d, c := range devs {
		var burst []byte
		for n := range sizes {
			burst = append(burst, publishBytes(topic(d), 1, uint16(n+1), body(d, n), false)...)
			want[d] = append(want[d], body(d, n))
		}
		c.send(burst)
	}
	for _, c := range devs {
		for n := range sizes {
			c.expectPuback(uint16(n + 1))
		}
	}
	// One at a time, the connections taking turns.
	for n := len(sizes); n < 2*len(sizes); n++ {
		for d, c := range devs {
			c.send(publishBytes(topic(d), 1, uint16(n+1), body(d, n), false))
			want[d] = append(want[d], body(d, n))
			c.expectPuback(uint16(n + 1))
		}
	}
	hub.mu.Lock()
	defer hub.mu.Unlock()
	for d, dev := range hub.devices {
		if len(dev.bodies) != len(want[d]) {
			t.Fatalf("dev%d: %d messages submitted, want %d", d+1, len(dev.bodies), len(want[d]))
		}
		for n, b := range dev.bodies {
			if !bytes.Equal(b, want[d][n]) {
				t.Fatalf("dev%d: message %d is %d bytes (%.4x...), want %d bytes (%.4x...)", d+1, n, len(b), b, len(want[d][n]), want[d][n])
			}
		}
	}
}

// TestCancelAbortsConnections: cancelling Serve's context ends its connections at once, whether
// they are reading or parked, and a publish waiting to become durable is not acknowledged.
func TestCancelAbortsConnections(t *testing.T) {
	for _, parked := range []bool{false, true} {
		if parked && runtime.GOOS != "linux" {
			continue
		}
		t.Run(fmt.Sprintf("parked=%v", parked), func(t *testing.T) {
			hub := newFakeHub()
			hub.manual = true
			opts := Options{Logger: discardLogger(), ParkAfter: -1}
			if parked {
				opts.ParkAfter = 20 * time.Millisecond
			}
			s := NewServer(hub, opts)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := make(chan error, 1)
			go func() { served <- s.Serve(ctx, ln, "mqtt") }()
			busy := connectDevice(t, ln.Addr().String(), "dev1", testUsername, connectOpts{})
			idle := connectDevice(t, ln.Addr().String(), "dev2", "localhost/dev2/?api-version=1", connectOpts{})
			busy.send(publishBytes(eventsTopic, 1, 1, nil, false)) // its receipt never completes
			hub.waitFor(t, "submitted", func() bool { return len(hub.submitted) == 1 })
			if parked {
				waitParked(t, s, 2) // the acknowledger waits on its own
			}
			cancel()
			busy.expectClosed(2 * time.Second)
			idle.expectClosed(2 * time.Second)
			hub.waitFor(t, "disconnects", func() bool {
				return len(hub.devices) == 2 && hub.devices[0].disc == 1 && hub.devices[1].disc == 1
			})
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
			for deadline := time.Now().Add(2 * time.Second); s.Connections() != 0; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("Connections() = %d after cancel", s.Connections())
				}
			}
		})
	}
	t.Run("ServeConn", func(t *testing.T) {
		hub := newFakeHub()
		s := NewServer(hub, Options{Logger: discardLogger()})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			if nc, err := ln.Accept(); err == nil {
				s.ServeConn(ctx, nc, "mqtt-ws")
			}
		}()
		c := connectDevice(t, ln.Addr().String(), "dev1", testUsername, connectOpts{})
		cancel()
		c.expectClosed(2 * time.Second)
		select {
		case <-ended:
		case <-time.After(2 * time.Second):
			t.Fatal("ServeConn still running after its context was cancelled")
		}
		hub.waitFor(t, "disconnect", func() bool { return hub.devices[0].disc == 1 })
	})
}
