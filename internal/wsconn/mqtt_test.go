package wsconn_test

import (
	"bytes"
	"context"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/mqtt"
	"github.com/tetherhub/tether/internal/wsconn"
)

// hub admits everyone; its receipts complete when released.
type hub struct {
	submitted chan *message.Message
	release   chan struct{}
	ended     chan bool
}

func (h *hub) Connect(ctx context.Context, req mqtt.ConnectRequest) (mqtt.Device, error) {
	return &device{h: h, id: req.DeviceID}, nil
}

type device struct {
	h  *hub
	id string
}

func (d *device) DeviceID() string  { return d.id }
func (d *device) ModuleID() string  { return "" }
func (d *device) Expiry() time.Time { return time.Time{} }
func (d *device) Submit(ctx context.Context, m *message.Message) (mqtt.Receipt, error) {
	// The server reuses m once Submit returns (mqtt.Device): pass on a copy of what is checked.
	d.h.submitted <- &message.Message{MessageID: strings.Clone(m.MessageID), Body: bytes.Clone(m.Body)}
	return receipt{d.h.release}, nil
}
func (d *device) Disconnected(graceful bool) { d.h.ended <- graceful }

type receipt struct{ release chan struct{} }

func (r receipt) Wait(ctx context.Context) error {
	select {
	case <-r.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestMQTTOverWebSocketDrainsOnShutdown runs the real MQTT server behind the WebSocket handler
// with an independent client: a QoS 1 publish is acknowledged, and one still being stored when
// Shutdown starts is acknowledged before the connection closes — the reader stops through a read
// deadline, which must not take the WebSocket down.
func TestMQTTOverWebSocketDrainsOnShutdown(t *testing.T) {
	h := &hub{submitted: make(chan *message.Message, 4), release: make(chan struct{}), ended: make(chan bool, 1)}
	srv := mqtt.NewServer(h, mqtt.Options{})
	web := httptest.NewServer(&wsconn.Handler{
		Context: context.Background(),
		Serve:   func(ctx context.Context, nc net.Conn) { srv.ServeConn(ctx, nc, "mqtt-ws") },
	})
	defer web.Close()

	lost := make(chan error, 1)
	opts := paho.NewClientOptions().
		AddBroker("ws" + strings.TrimPrefix(web.URL, "http") + "/$iothub/websocket").
		SetClientID("dev1").
		SetUsername("localhost/dev1/?api-version=2021-04-12").
		SetPassword("token").
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect over WebSocket: %v", tok.Error())
	}
	if n := srv.Connections(); n != 1 {
		t.Fatalf("server has %d connections", n)
	}

	first := c.Publish("devices/dev1/messages/events/%24.mid=m1", 1, false, "one")
	if m := <-h.submitted; m.MessageID != "m1" || string(m.Body) != "one" {
		t.Fatalf("submitted %+v", m)
	}
	h.release <- struct{}{}
	if !first.WaitTimeout(5*time.Second) || first.Error() != nil {
		t.Fatalf("first PUBACK: %v", first.Error())
	}

	second := c.Publish("devices/dev1/messages/events/", 1, false, "two")
	<-h.submitted
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdown <- srv.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond) // Shutdown has stopped the reader
	select {
	case err := <-lost:
		t.Fatalf("connection lost before its PUBACK was sent: %v", err)
	default:
	}
	close(h.release)
	if !second.WaitTimeout(5*time.Second) || second.Error() != nil {
		t.Fatalf("PUBACK of the publish in flight at shutdown: %v", second.Error())
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if graceful := <-h.ended; graceful {
		t.Error("the device was told it disconnected gracefully")
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Error("the client did not see the connection close")
	}
}
