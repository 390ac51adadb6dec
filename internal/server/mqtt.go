package server

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/tetherhub/tether/internal/c2d"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/mqtt"
	"github.com/tetherhub/tether/internal/telemetry"
)

// mqttAdapter lets the MQTT endpoint use the hub, and delivers cloud-to-device messages to
// devices that subscribe to their devicebound topic.
type mqttAdapter struct {
	hub    *hub.Hub
	c2d    c2dQueue // nil: no cloud-to-device delivery
	logger *slog.Logger
}

// c2dQueue is what MQTT delivery needs from the C2D store; *c2d.Store implements it.
type c2dQueue interface {
	Notify(deviceID string) <-chan struct{}
	Receive(ctx context.Context, deviceID string) (c2d.Message, bool, error)
	Complete(ctx context.Context, deviceID, lockToken string) error
	Release(ctx context.Context, deviceID, lockToken string) error
}

func (a mqttAdapter) Connect(ctx context.Context, req mqtt.ConnectRequest) (mqtt.Device, error) {
	id, err := a.hub.AuthenticateDevice(ctx, req.DeviceID, req.ModuleID, req.Password)
	if err != nil {
		return nil, err
	}
	a.hub.Connected(ctx, id)
	logger := a.logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &mqttDevice{hub: a.hub, origin: hub.Origin{Identity: id, ModelID: req.ModelID}, c2d: a.c2d, logger: logger}, nil
}

type mqttDevice struct {
	hub    *hub.Hub
	origin hub.Origin
	c2d    c2dQueue
	logger *slog.Logger

	mu      sync.Mutex
	ended   bool
	stopC2D context.CancelFunc // non-nil while a delivery loop runs
	busy    sync.WaitGroup     // the delivery loop and settlements in progress
}

func (d *mqttDevice) DeviceID() string  { return d.origin.Identity.DeviceID }
func (d *mqttDevice) ModuleID() string  { return d.origin.Identity.ModuleID }
func (d *mqttDevice) Expiry() time.Time { return d.origin.Identity.Expiry }

func (d *mqttDevice) Submit(ctx context.Context, msg *message.Message) (mqtt.Receipt, error) {
	p, err := d.hub.Submit(ctx, d.origin, msg)
	if err != nil {
		return nil, err
	}
	return receipt{p}, nil
}

func (d *mqttDevice) Disconnected(graceful bool) {
	d.endC2D()
	d.hub.Disconnected(context.Background(), d.origin.Identity)
}

// endC2D stops the delivery loop for good and waits until it has stopped and every delivery
// is settled: the MQTT server has failed the unacknowledged publishes before Disconnected, so
// their messages are back in the queue when this returns. A connection that takes over waits
// for Disconnected, so it receives them first, in order.
func (d *mqttDevice) endC2D() {
	d.mu.Lock()
	d.ended = true
	if d.stopC2D != nil {
		d.stopC2D()
		d.stopC2D = nil
	}
	d.mu.Unlock()
	d.busy.Wait()
}

type receipt struct{ p *telemetry.Pending }

func (r receipt) Wait(ctx context.Context) error {
	_, err := r.p.Wait(ctx)
	return err
}

// Cloud-to-device delivery over MQTT (spec 3.4, wire notes §6).
//
// Once a device subscribes to devices/{id}/messages/devicebound/#, a delivery loop for the
// connection locks the device's next visible message (c2d.Store.Receive), publishes it with
// QoS 1 on devices/{id}/messages/devicebound/{bag}, and completes it when the device's PUBACK
// arrives. Up to c2dInflight messages may await their PUBACK at once, in queue order. A message
// whose lock lapses without a PUBACK becomes visible again and is published again on the same
// connection (a new packet id); when the connection ends, its unacknowledged messages are
// released at once (no delivery counted: MQTT has no abandon), so the next connection, over
// any transport, gets them without waiting for the lock. After a crash of the hub they wait
// for their lock to lapse (1 minute), which the store keeps durable. A device that subscribed
// with QoS 0 gets QoS 0 publishes, completed once written.
//
// Subscriptions are not kept across connections (clean session or not): a device that
// reconnects receives once it subscribes again, which every SDK does on connect. Modules have
// no classic C2D; the MQTT server never reports their subscriptions.

// c2dInflight is how many C2D publishes per connection may await their PUBACK. IoT Hub
// delivers several at once; a handful keeps a slow device from hoarding its whole queue under
// locks it cannot settle in time.
const c2dInflight = 8

// c2dRetryDelay is how long the loop waits after a storage error before trying again.
const c2dRetryDelay = time.Second

// c2dSettleTimeout bounds a completion or release, which run detached from the connection.
const c2dSettleTimeout = 30 * time.Second

// C2DSubscribed implements mqtt.C2DListener.
func (d *mqttDevice) C2DSubscribed(out mqtt.Outbound) {
	if d.c2d == nil || d.ModuleID() != "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended || d.stopC2D != nil {
		return // a repeated SUBSCRIBE: the loop already runs and publishes with the new QoS
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.stopC2D = cancel
	d.busy.Add(1)
	go func() {
		defer d.busy.Done()
		d.deliver(ctx, out)
	}()
}

// C2DUnsubscribed implements mqtt.C2DListener. Messages already published stay locked until
// their PUBACK (complete) or the end of the connection (released).
func (d *mqttDevice) C2DUnsubscribed() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopC2D != nil {
		d.stopC2D()
		d.stopC2D = nil
	}
}

// deliver is one connection's delivery loop; it returns when ctx is cancelled (unsubscribe,
// disconnect) or the connection is gone.
func (d *mqttDevice) deliver(ctx context.Context, out mqtt.Outbound) {
	dev := d.DeviceID()
	slots := make(chan struct{}, c2dInflight)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		m, ok := d.next(ctx, dev)
		if !ok {
			return
		}
		// The slot frees on the PUBACK, or when the lock lapses: the store then makes the
		// message visible again and this loop publishes it again.
		free := sync.OnceFunc(func() { <-slots })
		lapse := time.AfterFunc(time.Until(m.LockedUntil), free)
		token := m.LockToken
		err := out.Publish(ctx, c2dTopic(dev, m), m.Body, func(err error) {
			lapse.Stop()
			free()
			d.busy.Add(1) // before Disconnected: the server fails publishes before it calls it
			go func() {
				defer d.busy.Done()
				d.settle(dev, token, err)
			}()
		})
		if err == nil {
			continue
		}
		lapse.Stop()
		free()
		d.settle(dev, token, err)
		if ctx.Err() != nil || errors.Is(err, mqtt.ErrConnectionClosed) || errors.Is(err, mqtt.ErrNotSubscribed) {
			return
		}
		// The message cannot be published (a topic over MQTT's 64 KB limit): it would come
		// back forever, so wait for a lock period before trying again rather than spin.
		d.logger.Warn("c2d: publish to MQTT device failed", "device", dev, "sequenceNumber", m.SequenceNumber, "err", err)
		select {
		case <-time.After(c2dRetryDelay):
		case <-ctx.Done():
			return
		}
	}
}

// next waits for and locks the device's next visible message; ok is false once ctx ends.
func (d *mqttDevice) next(ctx context.Context, dev string) (c2d.Message, bool) {
	for {
		ch := d.c2d.Notify(dev)
		m, ok, err := d.c2d.Receive(ctx, dev)
		switch {
		case ctx.Err() != nil:
			if err == nil && ok {
				d.settle(dev, m.LockToken, ctx.Err()) // locked just as the loop stopped
			}
			return c2d.Message{}, false
		case err != nil:
			d.logger.Error("c2d: receive for MQTT device", "device", dev, "err", err)
			ch = nil
		case ok:
			return m, true
		}
		retry := time.After(c2dRetryDelay)
		if ch != nil {
			retry = nil
		}
		select {
		case <-ch:
		case <-retry:
		case <-ctx.Done():
			return c2d.Message{}, false
		}
	}
}

// settle completes a delivered message (err nil: the device's PUBACK) or releases it to the
// queue (the connection ended first, or the publish failed).
func (d *mqttDevice) settle(dev, token string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), c2dSettleTimeout)
	defer cancel()
	op, serr := "complete", error(nil)
	if err == nil {
		serr = d.c2d.Complete(ctx, dev, token)
	} else {
		op, serr = "release", d.c2d.Release(ctx, dev, token)
	}
	switch {
	case serr == nil:
	case errors.Is(serr, c2d.ErrLockLost):
		// The lock lapsed (the message was or will be delivered again) or the queue was purged.
		d.logger.Debug("c2d: lock lost before "+op, "device", dev, "lockToken", token)
	default:
		d.logger.Error("c2d: "+op+" of MQTT delivery failed", "device", dev, "err", serr)
	}
}

// c2dExpiryLayout is how IoT Hub writes $.exp: seven fractional digits and Z (.NET's "o").
const c2dExpiryLayout = "2006-01-02T15:04:05.0000000Z"

// c2dTopic is the topic a C2D message is published on: devices/{id}/messages/devicebound/
// followed by its property bag, percent-encoded so it holds no '/' (the SDKs find the bag by
// splitting on '/'). The bag has $.mid (when the sender set one), $.to, $.cid, $.uid, $.ct,
// $.ce, $.exp, iothub-ack (unless none), then the application properties in name order.
func c2dTopic(deviceID string, m c2d.Message) string {
	entries := make([]mqtt.BagEntry, 0, 8+len(m.Properties))
	add := func(name, value string) {
		if value != "" {
			entries = append(entries, mqtt.BagEntry{Name: name, Value: value})
		}
	}
	add("$.mid", m.MessageID)
	to := m.To
	if to == "" {
		to = c2d.DeviceboundPath(deviceID)
	}
	add("$.to", to)
	add("$.cid", m.CorrelationID)
	add("$.uid", m.UserID)
	add("$.ct", m.ContentType)
	add("$.ce", m.ContentEncoding)
	if !m.ExpiryTime.IsZero() {
		add("$.exp", m.ExpiryTime.UTC().Format(c2dExpiryLayout))
	}
	if m.Ack != "" && m.Ack != c2d.AckNone {
		add(c2d.AckProperty, string(m.Ack))
	}
	names := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		entries = append(entries, mqtt.BagEntry{Name: k, Value: m.Properties[k]})
	}
	return "devices/" + deviceID + "/messages/devicebound/" + mqtt.EncodeBag(entries)
}
