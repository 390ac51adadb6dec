package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/client"
	"github.com/tetherhub/tether/internal/certs"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/server"
)

// testHub is a real Tether hub served in-process on loopback ports.
type testHub struct {
	run    server.Run
	state  *hub.State
	client *client.Client
	tls    *tls.Config
}

func startHub(t *testing.T) *testHub {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan server.Started, 1)
	served := make(chan error, 1)
	go func() {
		served <- server.Serve(ctx, server.Config{
			DataDir:      dir,
			HubName:      "bench",
			Partitions:   2,
			Retention:    time.Hour,
			SegmentBytes: 8 << 20,
			MQTTAddr:     "127.0.0.1:0",
			MQTTTCPAddr:  "127.0.0.1:0",
			HTTPSAddr:    "127.0.0.1:0",
			HostNames:    []string{"localhost"},
			// http.Server.Shutdown waits 5 s for connections that never sent a request (the
			// client's transport dials spares while provisioning in parallel); don't wait.
			ShutdownGrace: 2 * time.Second,
		}, func(st server.Started) { ready <- st })
	}()
	var st server.Started
	select {
	case st = <-ready:
	case err := <-served:
		cancel()
		t.Fatalf("hub did not start: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("hub did not start within 10 s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("hub: %v", err)
		}
	})
	// The CLI finds a local hub through the run file; so does this test.
	run, err := server.ReadRunFile(dir)
	if err != nil || run.MQTTTCP == "" {
		t.Fatalf("run file: %+v %v", run, err)
	}
	pool, err := certs.Pool(run.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := &tls.Config{ServerName: run.HostName, RootCAs: pool}
	_, httpsPort, _ := net.SplitHostPort(run.HTTPSAddr)
	cl, err := client.New(st.OwnerConString,
		client.WithEndpoint("https://"+net.JoinHostPort("127.0.0.1", httpsPort)),
		client.WithTLSConfig(tlsCfg))
	if err != nil {
		t.Fatal(err)
	}
	return &testHub{run: run, state: st.State, client: cl, tls: tlsCfg}
}

// checkResult asserts what every successful run must satisfy.
func checkResult(t *testing.T, res *Result, devices int) {
	t.Helper()
	var sb strings.Builder
	res.WriteText(&sb)
	t.Logf("\n%s", sb.String())
	if res.Connect.Connected != devices || res.Connect.Failed != 0 {
		t.Fatalf("connected %d of %d: %s", res.Connect.Connected, devices, res.Connect.FirstError)
	}
	if res.Disconnects != 0 || res.Stuck != 0 || res.StrayAcks != 0 {
		t.Errorf("disconnects %d (%s), stuck %d, stray acks %d", res.Disconnects, res.FirstDisconnect, res.Stuck, res.StrayAcks)
	}
	if res.Undrained != 0 || res.DrainSec < 0 || res.DrainSec > 2 {
		t.Errorf("drain: %d connections not closed by the broker, last closed %gs after the end", res.Undrained, res.DrainSec)
	}
	if res.Sent == 0 || res.MsgsPerSec <= 0 {
		t.Fatalf("nothing measured: %+v", res)
	}
	if res.Interrupted || res.Measured != res.Duration {
		t.Errorf("measured %gs of %gs (interrupted %v)", res.Measured, res.Duration, res.Interrupted)
	}
	if res.SentAll < res.Sent {
		t.Errorf("sent in window %d > sent overall %d", res.Sent, res.SentAll)
	}
	if res.QoS == 1 {
		p := res.Puback
		if res.Acked != res.Sent || res.Unacked != 0 || p.Count != uint64(res.Acked) {
			t.Errorf("sent %d, acked %d, unacked %d, latency samples %d", res.Sent, res.Acked, res.Unacked, p.Count)
		}
		checkPercentiles(t, "PUBACK", *p)
	} else if res.Puback != nil {
		t.Error("QoS 0 reports PUBACK latency")
	}
	checkPercentiles(t, "connect", res.Connect.Latency)
}

func checkPercentiles(t *testing.T, what string, p Percentiles) {
	t.Helper()
	if p.Count == 0 {
		t.Errorf("%s: no samples", what)
		return
	}
	if !(0 < p.P50 && p.Min <= p.P50 && p.P50 <= p.P90 && p.P90 <= p.P99 && p.P99 <= p.P999 && p.P999 <= p.Max) {
		t.Errorf("%s percentiles out of order: %+v", what, p)
	}
	if p.Max > 5000 {
		t.Errorf("%s: max %g ms on loopback", what, p.Max)
	}
}

func TestRunAgainstTether(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	const n = 5
	ids := DeviceIDs("bench-test-", n)
	prov, err := Provision(ctx, h.client, ids, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(prov.Created) != n {
		t.Fatalf("created %d devices", len(prov.Created))
	}
	t.Cleanup(func() {
		if err := Deprovision(context.Background(), h.client, prov.Created); err != nil {
			t.Error(err)
		}
	})
	exp := time.Now().Add(time.Hour)
	deviceKeyed := make([]Device, n)
	for i, id := range ids {
		tok, err := DeviceToken(h.run.HostName, id, prov.Keys[i], exp)
		if err != nil {
			t.Fatal(err)
		}
		deviceKeyed[i] = HubDevice(h.run.HostName, id, tok)
	}
	devPolicy, _ := h.state.Policy("device")
	policyTok, err := PolicyToken(h.run.HostName, devPolicy.Name, devPolicy.PrimaryKey, exp)
	if err != nil {
		t.Fatal(err)
	}
	policyKeyed := make([]Device, n)
	for i, id := range ids {
		policyKeyed[i] = HubDevice(h.run.HostName, id, policyTok)
	}

	base := Config{
		Devices:  deviceKeyed,
		QoS:      1,
		Window:   4,
		Size:     128,
		Duration: time.Second,
		Warmup:   300 * time.Millisecond,
		Drain:    3 * time.Second,
		Broker:   "tether",
	}

	t.Run("tcp-e2e", func(t *testing.T) {
		cfg := base
		cfg.Addr, cfg.Target = h.run.MQTTTCP, h.run.MQTTTCP
		cfg.Events = ClientEvents(h.client)
		res, err := Run(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		checkResult(t, res, n)
		if res.Transport != "tcp" || res.CPU == nil || res.CPU.Cores <= 0 {
			t.Errorf("transport %q, cpu %+v", res.Transport, res.CPU)
		}
		e := res.E2E
		if e == nil || e.Expected != res.Acked || e.Received != e.Expected || e.Error != "" {
			t.Fatalf("e2e: %+v (acked %d)", e, res.Acked)
		}
		checkPercentiles(t, "e2e", e.Latency)
	})

	t.Run("tls-rate", func(t *testing.T) {
		cfg := base
		cfg.Addr, cfg.Target = h.run.MQTTAddr, h.run.MQTTAddr
		cfg.TLS = h.tls
		cfg.Rate = 200 // 40 per device per second
		cfg.ConnectRate = 50
		res, err := Run(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		checkResult(t, res, n)
		if res.Transport != "tls" {
			t.Errorf("transport %q", res.Transport)
		}
		// 5 connections at 50/s take about 80 ms.
		if res.Connect.Seconds < 0.06 {
			t.Errorf("connect rate not applied: %d connections in %gs", n, res.Connect.Seconds)
		}
		if res.MsgsPerSec < 150 || res.MsgsPerSec > 230 {
			t.Errorf("rate 200 msgs/s: measured %.0f", res.MsgsPerSec)
		}
	})

	t.Run("policy-token-qos0", func(t *testing.T) {
		cfg := base
		cfg.Addr, cfg.Target = h.run.MQTTTCP, h.run.MQTTTCP
		cfg.Devices = policyKeyed
		cfg.QoS = 0
		cfg.Rate = 500
		res, err := Run(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		checkResult(t, res, n)
		if res.MsgsPerSec < 400 || res.MsgsPerSec > 600 || res.SentPerSec < 400 || res.SentPerSec > 600 {
			t.Errorf("rate 500 msgs/s: accepted %.0f, sent %.0f", res.MsgsPerSec, res.SentPerSec)
		}
	})

	t.Run("generic-broker", func(t *testing.T) {
		// Tether as "any MQTT broker": plain topic and credentials from templates.
		gen := make([]Device, n)
		for i, id := range ids {
			gen[i] = GenericDevice(id, "devices/{device}/messages/events/", "localhost/{device}/?api-version=2021-04-12", policyTok)
		}
		cfg := base
		cfg.Addr, cfg.Target = h.run.MQTTTCP, h.run.MQTTTCP
		cfg.Devices = gen
		cfg.Broker = "generic"
		cfg.CleanSession = true
		res, err := Run(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		checkResult(t, res, n)
	})

	t.Run("refused", func(t *testing.T) {
		cfg := base
		cfg.Addr = h.run.MQTTTCP
		cfg.Devices = []Device{HubDevice(h.run.HostName, ids[0], "SharedAccessSignature sr=x&sig=y&se=1")}
		res, err := Run(ctx, cfg)
		if err == nil || res.Connect.Failed != 1 {
			t.Fatalf("bad token: err %v, result %+v", err, res.Connect)
		}
		if !strings.Contains(res.Connect.FirstError, "CONNACK 0x05") {
			t.Fatalf("refusal reported as %q", res.Connect.FirstError)
		}
	})
}

func TestRunStopsWhenCancelled(t *testing.T) {
	h := startHub(t)
	ids := DeviceIDs("bench-cancel-", 2)
	prov, err := Provision(context.Background(), h.client, ids, true)
	if err != nil {
		t.Fatal(err)
	}
	devPolicy, _ := h.state.Policy("device")
	tok, _ := PolicyToken(h.run.HostName, devPolicy.Name, devPolicy.PrimaryKey, time.Now().Add(time.Hour))
	devs := []Device{HubDevice(h.run.HostName, ids[0], tok), HubDevice(h.run.HostName, ids[1], tok)}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, Config{Addr: h.run.MQTTTCP, Devices: devs, QoS: 1, Window: 8, Duration: time.Minute, Drain: time.Second})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("cancelled run took %v", took)
	}
	if !res.Interrupted || res.Measured <= 0 || res.Measured > 1 || res.Acked == 0 {
		t.Fatalf("interrupted run: %+v", res)
	}
	if err := Deprovision(context.Background(), h.client, prov.Created); err != nil {
		t.Fatal(err)
	}
}
