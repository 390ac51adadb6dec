//go:build linux

package mqtt

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

const testParkAfter = 30 * time.Millisecond

// TestParkedConnectionResumes: an idle connection gives up its goroutine, and whatever the
// device sends next (a publish, a ping, a PUBACK for C2D, a packet split around the park) is
// read and answered as if it had not; C2D is written to a parked connection.
func TestParkedConnectionResumes(t *testing.T) {
	for _, transport := range []string{"tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			hub := newFakeHub()
			s := startServerOver(t, transport, hub, Options{ParkAfter: testParkAfter})
			c := connectDeviceOver(t, transport, s.addr, "dev1", testUsername, connectOpts{})
			waitParked(t, s.Server, 1)

			c.send(publishBytes(eventsTopic, 1, 1, []byte("one"), false))
			c.expectPuback(1)
			waitParked(t, s.Server, 1)
			c.send(pingreqBytes)
			c.expect(packets.Pingresp)

			// A packet whose second half comes after the connection could have parked twice.
			pkt := publishBytes(eventsTopic, 1, 2, []byte("two"), false)
			waitParked(t, s.Server, 1)
			c.send(pkt[:len(pkt)/2])
			time.Sleep(3 * testParkAfter)
			c.send(pkt[len(pkt)/2:])
			c.expectPuback(2)

			c.send(subscribeBytes(3, packets.Subscription{Filter: "devices/dev1/messages/devicebound/#", Qos: 1}))
			c.expect(packets.Suback)
			hub.waitFor(t, "C2DSubscribed", func() bool { return hub.devices[0].out != nil })
			hub.mu.Lock()
			out := hub.devices[0].out
			hub.mu.Unlock()
			waitParked(t, s.Server, 1)
			acked := make(chan error, 1)
			if err := out.Publish(context.Background(), "devices/dev1/messages/devicebound/", []byte("c2d"),
				func(err error) { acked <- err }); err != nil {
				t.Fatal(err)
			}
			pk := c.expect(packets.Publish)
			if string(pk.Payload) != "c2d" {
				t.Fatalf("C2D payload %q", pk.Payload)
			}
			c.send(pubackBytes(pk.PacketID))
			if err := <-acked; err != nil {
				t.Fatalf("C2D completion: %v", err)
			}

			hub.mu.Lock()
			bodies := fmt.Sprintf("%q", hub.devices[0].bodies)
			hub.mu.Unlock()
			if bodies != `["one" "two"]` {
				t.Errorf("bodies %s", bodies)
			}
			waitParked(t, s.Server, 1)
			if n := s.Connections(); n != 1 {
				t.Errorf("Connections() = %d, want 1", n)
			}
		})
	}
}

// TestParkedConnectionEnds: every way a connection ends reaches a parked one, with the same
// outcome as for a reading one: the device is told, the will is published or not, the server
// forgets the connection.
func TestParkedConnectionEnds(t *testing.T) {
	tests := []struct {
		name      string
		keepAlive uint16
		end       func(t *testing.T, s *testServer, c *client)
		will      bool
	}{
		{name: "keep-alive", keepAlive: 1, will: true, end: func(t *testing.T, s *testServer, c *client) {
			start := time.Now()
			c.expectClosed(4 * time.Second)
			// The last packet (CONNACK's CONNECT) came before start.
			if el := time.Since(start); el < 1400*time.Millisecond {
				t.Errorf("closed after %v, want 1.5 s", el)
			}
		}},
		{name: "device drops", will: true, end: func(t *testing.T, s *testServer, c *client) { c.nc.Close() }},
		{name: "identity revoked", end: func(t *testing.T, s *testServer, c *client) {
			if n := s.Disconnect("dev1", ""); n != 1 {
				t.Fatalf("Disconnect closed %d connections", n)
			}
			c.expectClosed(2 * time.Second)
		}},
		{name: "takeover", end: func(t *testing.T, s *testServer, c *client) {
			connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
			c.expectClosed(2 * time.Second)
		}},
		{name: "shutdown", end: func(t *testing.T, s *testServer, c *client) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			c.expectClosed(time.Second)
		}},
		{name: "credentials expire", end: func(t *testing.T, s *testServer, c *client) {
			s.mu.Lock()
			for cn := range s.conns {
				cn.stop(reasonExpired)
			}
			s.mu.Unlock()
			c.expectClosed(2 * time.Second)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			hub := newFakeHub()
			s := startServer(t, hub, Options{ParkAfter: testParkAfter})
			c := connectDevice(t, s.addr, "dev1", testUsername,
				connectOpts{keepAlive: tt.keepAlive, willTopic: eventsTopic, willBody: "gone"})
			waitParked(t, s.Server, 1)
			tt.end(t, s, c)
			hub.waitFor(t, "disconnect", func() bool { return hub.devices[0].disc == 1 })
			if got := len(hub.messages()) == 1; got != tt.will {
				t.Errorf("will published %v, want %v", got, tt.will)
			}
			deadline := time.Now().Add(2 * time.Second)
			for s.Connections() != len(hub.devices)-1 || s.Parked() != len(hub.devices)-1 {
				if time.Now().After(deadline) {
					t.Fatalf("%d connections, %d parked after the end", s.Connections(), s.Parked())
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// TestParkedConnectionsTakeTurns: many connections park and wake at random, concurrently; every
// publish is acknowledged in order and nothing is lost or mixed (run with -race).
func TestParkedConnectionsTakeTurns(t *testing.T) {
	for _, transport := range []string{"tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			hub := newFakeHub()
			s := startServerOver(t, transport, hub, Options{ParkAfter: 5 * time.Millisecond})
			const devices, rounds = 16, 12
			var wg sync.WaitGroup
			errs := make(chan error, devices)
			for d := range devices {
				id := fmt.Sprintf("d%02d", d)
				c := dialOver(t, transport, s.addr)
				wg.Go(func() {
					errs <- func() error {
						c.send(connectBytes(id, "h/"+id+"/?api-version=1", connectOpts{}))
						if pk, err := c.read(5 * time.Second); err != nil || pk.FixedHeader.Type != packets.Connack {
							return fmt.Errorf("%s: CONNACK: %v", id, err)
						}
						for i := range rounds {
							time.Sleep(time.Duration(rand.IntN(12)) * time.Millisecond)
							c.send(publishBytes("devices/"+id+"/messages/events/", 1, uint16(i+1), []byte(fmt.Sprintf("%s-%d", id, i)), false))
							pk, err := c.read(5 * time.Second)
							if err != nil || pk.FixedHeader.Type != packets.Puback || pk.PacketID != uint16(i+1) {
								return fmt.Errorf("%s: round %d: %v %v", id, i, pk.FixedHeader, err)
							}
						}
						return nil
					}()
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			hub.mu.Lock()
			defer hub.mu.Unlock()
			for _, d := range hub.devices {
				for i, b := range d.bodies {
					if want := fmt.Sprintf("%s-%d", d.id, i); string(b) != want {
						t.Errorf("%s: body %d is %q, want %q", d.id, i, b, want)
					}
				}
				if len(d.bodies) != rounds {
					t.Errorf("%s: %d messages, want %d", d.id, len(d.bodies), rounds)
				}
			}
		})
	}
}

// TestParkingRefusedWhenEnding: a connection that is stopping or closed when it would park
// keeps its reader (nothing would wake a parked one).
func TestParkingRefusedWhenEnding(t *testing.T) {
	hub := newFakeHub()
	s := startServer(t, hub, Options{ParkAfter: time.Hour})
	connectDevice(t, s.addr, "dev1", testUsername, connectOpts{})
	hub.waitFor(t, "connect", func() bool { return len(hub.devices) == 1 })
	s.mu.Lock()
	var c *conn
	for cn := range s.conns {
		c = cn
	}
	s.mu.Unlock()
	c.stopping.Store(true)
	if parked, err := s.poller.park(c); parked || err != nil {
		t.Errorf("park of a stopping connection = %v, %v", parked, err)
	}
	c.stopping.Store(false)
	c.cancel()
	if parked, err := s.poller.park(c); parked || err != nil {
		t.Errorf("park of a cancelled connection = %v, %v", parked, err)
	}
	if n := s.Parked(); n != 0 {
		t.Errorf("%d parked", n)
	}
	if _, err := rawConnOf(&scriptConn{}); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("rawConnOf(a non-TCP conn) = %v", err)
	}
}

// TestParkedDeadlinesInOrder: the poller's one timer times out parked connections by their own
// keep-alive, earliest first, and leaves the others parked.
func TestParkedDeadlinesInOrder(t *testing.T) {
	hub := newFakeHub()
	s := startServer(t, hub, Options{ParkAfter: testParkAfter})
	start := time.Now()
	slow := connectDevice(t, s.addr, "dev2", "localhost/dev2/?api-version=1", connectOpts{keepAlive: 2}) // 3 s
	fast := connectDevice(t, s.addr, "dev1", testUsername, connectOpts{keepAlive: 1})                    // 1.5 s
	stays := connectDevice(t, s.addr, "dev3", "localhost/dev3/?api-version=1", connectOpts{keepAlive: 60})
	waitParked(t, s.Server, 3)
	fast.expectClosed(3 * time.Second)
	if el := time.Since(start); el < 1400*time.Millisecond || el > 2900*time.Millisecond {
		t.Errorf("keep-alive 1 s: closed after %v, want 1.5 s", el)
	}
	slow.expectClosed(3 * time.Second)
	if el := time.Since(start); el < 2900*time.Millisecond {
		t.Errorf("keep-alive 2 s: closed after %v, want 3 s", el)
	}
	waitParked(t, s.Server, 1)
	stays.send(pingreqBytes)
	stays.expect(packets.Pingresp)
}
