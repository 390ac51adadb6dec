package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// mqttDevice connects an independent MQTT 3.1.1 client (Eclipse Paho) as a device the way the
// Azure SDKs do: client id = device id, IoT Hub username, SAS token password, clean session off.
func (h *hubProcess) mqttDevice(t *testing.T, deviceID, conn string, useTLS bool, onLost func(error)) (paho.Client, error) {
	t.Helper()
	return h.mqttDeviceWithToken(t, deviceID, deviceToken(t, deviceID, conn), useTLS, onLost)
}

// mqttDeviceWithToken is mqttDevice with the password given: any SAS token.
func (h *hubProcess) mqttDeviceWithToken(t *testing.T, deviceID, token string, useTLS bool, onLost func(error)) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().
		SetClientID(deviceID).
		SetUsername("localhost/" + deviceID + "/?api-version=2021-04-12").
		SetPassword(token).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(60 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second)
	if onLost != nil {
		opts.SetConnectionLostHandler(func(_ paho.Client, err error) { onLost(err) })
	}
	if useTLS {
		opts.AddBroker("ssl://" + h.mqttAddr).SetTLSConfig(h.tlsConfig(t))
	} else {
		opts.AddBroker("tcp://" + h.tcpAddr)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("connect %s: timeout", deviceID)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

// TestForeignTopicClosesConnection: a device publishing on another device's topic, or on a
// topic IoT Hub does not have, is disconnected and nothing is stored; twin and method
// subscriptions are refused with SUBACK 0x80 without a disconnect.
func TestForeignTopicClosesConnection(t *testing.T) {
	h := startHub(t)
	connA := h.createDevice("dev-a")
	h.createDevice("dev-b")

	for _, topic := range []string{
		"devices/dev-b/messages/events/",
		"devices/dev-b/messages/events/%24.mid=spoof",
		"devices/dev-a/messages/devicebound/",
		"hello/world",
	} {
		t.Run(topic, func(t *testing.T) {
			lost := make(chan error, 1)
			c, err := h.mqttDevice(t, "dev-a", connA, true, func(err error) { lost <- err })
			if err != nil {
				t.Fatal(err)
			}
			defer c.Disconnect(0)
			c.Publish(topic, 1, false, "spoofed")
			select {
			case <-lost:
			case <-time.After(10 * time.Second):
				t.Fatal("the hub kept the connection after a publish on a foreign topic")
			}
		})
	}

	lost := make(chan error, 1)
	c, err := h.mqttDevice(t, "dev-a", connA, false, func(err error) { lost <- err })
	if err != nil {
		t.Fatal(err)
	}
	sub := c.SubscribeMultiple(map[string]byte{
		"$iothub/twin/res/#":                   0,
		"$iothub/methods/POST/#":               0,
		"devices/dev-a/messages/devicebound/#": 1,
	}, nil)
	if !sub.WaitTimeout(10*time.Second) || sub.Error() != nil {
		t.Fatalf("subscribe: %v", sub.Error())
	}
	granted := sub.(*paho.SubscribeToken).Result()
	if granted["$iothub/twin/res/#"] != 0x80 || granted["$iothub/methods/POST/#"] != 0x80 || granted["devices/dev-a/messages/devicebound/#"] != 1 {
		t.Errorf("granted = %v, want twin and methods 0x80, devicebound 1", granted)
	}
	pub := c.Publish("devices/dev-a/messages/events/", 1, false, "legit")
	if !pub.WaitTimeout(10*time.Second) || pub.Error() != nil {
		t.Fatalf("publish after refused subscriptions: %v", pub.Error())
	}
	select {
	case err := <-lost:
		t.Fatalf("connection lost after SUBACK 0x80: %v", err)
	default:
	}
	c.Disconnect(100)

	events := h.events()
	if len(events) != 1 || events[0].DeviceID != "dev-a" || *events[0].Body != "legit" {
		t.Fatalf("stored events = %+v, want only dev-a's legit message", events)
	}
}

// TestCrashLosesNoAcknowledgedMessage: devices publish QoS 1 under load, the hub is killed with
// SIGKILL mid-load and restarted, twice, then stopped with SIGTERM mid-load (graceful shutdown);
// every message that got a PUBACK is readable afterwards.
func TestCrashLosesNoAcknowledgedMessage(t *testing.T) {
	h := startHub(t)
	const devices = 16
	conns := make([]string, devices)
	for i := range conns {
		conns[i] = h.createDevice(fmt.Sprintf("crash-%02d", i))
	}

	var mu sync.Mutex
	acked := map[string]bool{}
	for round := range 3 {
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for i := range devices {
			id := fmt.Sprintf("crash-%02d", i)
			c, err := h.mqttDevice(t, id, conns[i], i%2 == 0, nil)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Disconnect(0)
				// A window of unacknowledged publishes per device, as real fleets pipeline.
				type inflight struct {
					mid string
					tok paho.Token
				}
				var window []inflight
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					mid := fmt.Sprintf("r%d-%s-%d", round, id, n)
					tok := c.Publish(fmt.Sprintf("devices/%s/messages/events/%%24.mid=%s", id, mid), 1, false, fmt.Sprintf(`{"n":%d}`, n))
					window = append(window, inflight{mid, tok})
					if len(window) < 8 {
						continue
					}
					head := window[0]
					window = window[1:]
					if !head.tok.WaitTimeout(5*time.Second) || head.tok.Error() != nil {
						return // the hub is gone
					}
					mu.Lock()
					acked[head.mid] = true
					mu.Unlock()
				}
			}()
		}
		time.Sleep(1500 * time.Millisecond)
		if round < 2 {
			h.kill()
		} else {
			h.stop()
		}
		close(stop)
		wg.Wait()
		mu.Lock()
		t.Logf("round %d: %d messages acknowledged so far", round, len(acked))
		mu.Unlock()
		h.start()
	}

	if len(acked) < 100 {
		t.Fatalf("only %d messages were acknowledged: the load did not run", len(acked))
	}
	seen := map[string]int{}
	for _, ev := range h.events() {
		seen[ev.SystemProperties["message-id"]]++
	}
	missing := 0
	for mid := range acked {
		if seen[mid] == 0 {
			missing++
			if missing <= 10 {
				t.Errorf("acknowledged message %s is not in the built-in endpoint", mid)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged messages lost", missing, len(acked))
	}
	dups := 0
	for _, n := range seen {
		if n > 1 {
			dups++
		}
	}
	if dups > 0 {
		t.Errorf("%d messages stored twice", dups)
	}
	t.Logf("%d acknowledged, %d stored after two SIGKILLs and a SIGTERM", len(acked), len(seen))
}

// TestDisableDisconnects: disabling a connected device closes its connection, and it cannot
// come back until it is enabled again.
func TestDisableDisconnects(t *testing.T) {
	h := startHub(t)
	conn := h.createDevice("dev-x")
	lost := make(chan error, 1)
	c, err := h.mqttDevice(t, "dev-x", conn, true, func(err error) { lost <- err })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(0)
	if d := h.device("dev-x"); d.ConnectionState != "Connected" {
		t.Errorf("connectionState = %q while connected", d.ConnectionState)
	}
	h.mustCLI("device", "disable", "dev-x")
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the disabled device is still connected")
	}
	if _, err := h.mqttDevice(t, "dev-x", conn, true, nil); err == nil {
		t.Fatal("a disabled device connected")
	}
	if d := h.device("dev-x"); d.ConnectionState != "Disconnected" {
		t.Errorf("connectionState = %q after disable", d.ConnectionState)
	}
}

// TestSASTokenCommands: the tokens `tether hub sas-token` and `tether device sas-token` print
// are what an MQTT client other than the SDKs (here Paho, as another load generator would)
// needs to connect as a device; a policy without DeviceConnect is refused; and `tether bench
// --policy-token` connects existing devices with the device policy.
func TestSASTokenCommands(t *testing.T) {
	h := startHub(t)
	h.createDevice("sas-dev")
	for _, id := range []string{"pt-0", "pt-1"} {
		h.createDevice(id)
	}
	policyToken := strings.TrimSpace(h.mustCLI("hub", "sas-token", "--policy", "device", "--duration", "10m"))
	deviceToken := strings.TrimSpace(h.mustCLI("device", "sas-token", "sas-dev"))
	serviceToken := strings.TrimSpace(h.mustCLI("hub", "sas-token", "--policy", "service"))

	for _, tc := range []struct{ name, token string }{
		{"device policy", policyToken},
		{"device key", deviceToken},
	} {
		c, err := h.mqttDeviceWithToken(t, "sas-dev", tc.token, true, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		tok := c.Publish("devices/sas-dev/messages/events/", 1, false, tc.name)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: publish: %v", tc.name, tok.Error())
		}
		c.Disconnect(100)
	}
	if c, err := h.mqttDeviceWithToken(t, "sas-dev", serviceToken, true, nil); err == nil {
		c.Disconnect(0)
		t.Fatal("a service policy token (no DeviceConnect) connected a device")
	}
	if _, err := h.cli("hub", "sas-token", "--duration", "0s"); err == nil || !strings.Contains(err.Error(), "--duration") {
		t.Errorf("--duration 0s: %v, want an error naming --duration", err)
	}

	var bodies []string
	for _, ev := range h.events() {
		if ev.DeviceID == "sas-dev" && ev.Body != nil {
			bodies = append(bodies, *ev.Body)
		}
	}
	if got := strings.Join(bodies, ", "); got != "device policy, device key" {
		t.Errorf("sas-dev's stored messages: %q, want both", got)
	}

	out := h.mustCLI("bench", "--tls", "--devices", "2", "--device-prefix", "pt-", "--no-create-devices",
		"--policy-token", "--policy", "device", "--qos", "1", "--duration", "1s", "--warmup", "0s", "--json")
	var res struct {
		Acked   int64 `json:"acked"`
		Connect struct {
			Connected int `json:"connected"`
		} `json:"connect"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out)
	}
	if res.Connect.Connected != 2 || res.Acked == 0 {
		t.Errorf("bench --policy-token: %d of 2 connected, %d acknowledged", res.Connect.Connected, res.Acked)
	}
}
