package bench

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
)

func TestRunC2DAgainstTether(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	const n = 4
	ids := DeviceIDs("bench-c2d-", n)
	prov, err := Provision(ctx, h.client, ids, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Deprovision(context.Background(), h.client, prov.Created); err != nil {
			t.Error(err)
		}
	})
	exp := time.Now().Add(time.Hour)
	devices := make([]Device, n)
	for i, id := range ids {
		tok, err := DeviceToken(h.run.HostName, id, prov.Keys[i], exp)
		if err != nil {
			t.Fatal(err)
		}
		devices[i] = HubDevice(h.run.HostName, id, tok)
	}
	// A message left in a queue by someone else is purged before the run, not delivered.
	if _, err := h.client.SendC2D(ctx, ids[0], api.C2DMessage{Body: "left over"}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name         string
		tls          bool
		window       int
		rate         float64
		size         int
		purgedBefore int64
		failEvery    int64 // the service answers every failEvery-th send with 403 queue full
	}{
		{name: "tcp-as-fast-as-possible", window: 4, size: 64, purgedBefore: 1},
		{name: "tls-rate", tls: true, window: 1, rate: 200, size: 256},
		{name: "send-errors-counted", window: 2, rate: 400, size: 32, failEvery: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{
				Devices: devices, Window: tc.window, Rate: tc.rate, Size: tc.size,
				Duration: time.Second, Warmup: 200 * time.Millisecond, Drain: 3 * time.Second,
				Broker: "tether", C2D: h.client,
			}
			if tc.failEvery > 0 {
				cfg.C2D = &failingService{C2DService: h.client, every: tc.failEvery}
			}
			cfg.Addr = h.run.MQTTTCP
			if tc.tls {
				cfg.Addr, cfg.TLS = h.run.MQTTAddr, h.tls
			}
			cfg.Target = cfg.Addr
			res, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var sb strings.Builder
			if err := res.WriteText(&sb); err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", sb.String())
			for _, want := range []string{"cloud-to-device", "API answer:", "device:", "completion:", "left in the devices' queues"} {
				if !strings.Contains(sb.String(), want) {
					t.Errorf("text output lacks %q", want)
				}
			}
			if _, err := json.Marshal(res); err != nil {
				t.Fatal(err)
			}

			c := res.C2D
			if res.Mode != "c2d" || c == nil {
				t.Fatalf("mode %q, c2d %+v", res.Mode, c)
			}
			if res.Connect.Connected != n || res.Connect.Failed != 0 {
				t.Fatalf("connected %d of %d: %s", res.Connect.Connected, n, res.Connect.FirstError)
			}
			if res.Disconnects != 0 || res.Undrained != 0 || res.Interrupted {
				t.Errorf("disconnects %d (%s), undrained %d, interrupted %v", res.Disconnects, res.FirstDisconnect, res.Undrained, res.Interrupted)
			}
			if c.Sent == 0 || res.MsgsPerSec <= 0 {
				t.Fatalf("nothing measured: %+v", c)
			}
			// Every message accepted was delivered and completed, by the device and the hub.
			wantFailed := int64(0)
			if tc.failEvery > 0 {
				wantFailed = c.Failed
				if c.Failed == 0 || c.Errors["403 DeviceMaximumQueueDepthExceeded"] != c.Failed ||
					!strings.Contains(c.FirstError, "queue") {
					t.Errorf("failed %d, errors %v, first %q", c.Failed, c.Errors, c.FirstError)
				}
			}
			if c.Failed != wantFailed || c.Accepted+c.Failed != c.Sent || c.Received != c.Accepted ||
				c.Completed != c.Accepted || c.Unexpected != 0 {
				t.Errorf("sent %d, accepted %d, failed %d (%v, %s), received %d, completed %d, unexpected %d",
					c.Sent, c.Accepted, c.Failed, c.Errors, c.FirstError, c.Received, c.Completed, c.Unexpected)
			}
			if c.LeftInQueues != 0 || c.CheckError != "" {
				t.Errorf("left in the queues: %d (%s)", c.LeftInQueues, c.CheckError)
			}
			if c.PurgedBefore != tc.purgedBefore {
				t.Errorf("purged before: %d, want %d", c.PurgedBefore, tc.purgedBefore)
			}
			for _, p := range []struct {
				what string
				p    Percentiles
			}{{"send API", c.SendAPI}, {"to device", c.ToDevice}, {"to completion", c.ToCompletion}} {
				if p.p.Count != uint64(c.Accepted) {
					t.Errorf("%s: %d samples for %d messages", p.what, p.p.Count, c.Accepted)
				}
				if !(0 < p.p.P50 && p.p.Min <= p.p.P50 && p.p.P50 <= p.p.P90 && p.p.P90 <= p.p.P99 &&
					p.p.P99 <= p.p.P999 && p.p.P999 <= p.p.Max) {
					t.Errorf("%s percentiles out of order: %+v", p.what, p.p)
				}
			}
			// The PUBACK is written after the PUBLISH was read.
			if c.ToCompletion.Min < c.ToDevice.Min || c.ToCompletion.Max < c.ToDevice.Max {
				t.Errorf("completion before delivery: device %+v, completion %+v", c.ToDevice, c.ToCompletion)
			}
		})
	}
}

func TestC2DConfigErrors(t *testing.T) {
	dev := HubDevice("localhost", "d", "token")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"small payload", Config{Size: 19}, "at least 20 bytes"},
		{"large payload", Config{Size: 64*1024 + 1}, "at most 64 KB"},
		{"with e2e", Config{Events: func(context.Context, func(string, string)) error { return nil }}, "does not apply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Addr, cfg.Devices, cfg.C2D = "127.0.0.1:1", []Device{dev}, nilService{}
			_, err := Run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// failingService answers every every-th send like a full queue, without sending it.
type failingService struct {
	C2DService
	every int64
	n     atomic.Int64
}

func (f *failingService) SendC2D(ctx context.Context, id string, m api.C2DMessage) (api.C2DSendResult, error) {
	if f.n.Add(1)%f.every == 0 {
		return api.C2DSendResult{}, &client.Error{StatusCode: 403, Code: "DeviceMaximumQueueDepthExceeded", Message: "device queue is full"}
	}
	return f.C2DService.SendC2D(ctx, id, m)
}

type nilService struct{}

func (nilService) SendC2D(context.Context, string, api.C2DMessage) (api.C2DSendResult, error) {
	return api.C2DSendResult{}, nil
}
func (nilService) PurgeC2D(context.Context, string) (int, error)         { return 0, nil }
func (nilService) GetDevice(context.Context, string) (api.Device, error) { return api.Device{}, nil }

func TestParseSeq(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"00000000000000000042xxxx", 42, true},
		{"00000000000000000001", 1, true},
		{"00000000000000000000xx", 0, false},
		{"0000000000000000004", 0, false},
		{"0000000000000000004axx", 0, false},
	} {
		got, ok := parseSeq([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseSeq(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRunC2DStopsWhenCancelled(t *testing.T) {
	h := startHub(t)
	ids := DeviceIDs("bench-c2d-cancel-", 2)
	prov, err := Provision(context.Background(), h.client, ids, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Deprovision(context.Background(), h.client, prov.Created); err != nil {
			t.Error(err)
		}
	})
	devPolicy, _ := h.state.Policy("device")
	tok, _ := PolicyToken(h.run.HostName, devPolicy.Name, devPolicy.PrimaryKey, time.Now().Add(time.Hour))
	devs := []Device{HubDevice(h.run.HostName, ids[0], tok), HubDevice(h.run.HostName, ids[1], tok)}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	res, err := Run(ctx, Config{Addr: h.run.MQTTTCP, Devices: devs, Window: 8, Duration: time.Minute, Drain: time.Second, C2D: h.client})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	if !res.Interrupted || res.Measured <= 0 || res.Measured >= 60 || res.C2D == nil || res.C2D.Completed == 0 {
		t.Fatalf("interrupted run: %+v %+v", res, res.C2D)
	}
	if c := res.C2D; c.Completed > c.Accepted || c.LeftInQueues < 0 {
		t.Errorf("accepted %d, completed %d, left %d (%s)", c.Accepted, c.Completed, c.LeftInQueues, c.CheckError)
	}
}
