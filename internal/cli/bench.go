package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"runtime/pprof"
	"time"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/bench"
	"github.com/tetherhub/tether/internal/certs"
	"github.com/tetherhub/tether/internal/server"
)

// BenchCmd simulates devices publishing telemetry and measures the broker: Tether (the local
// hub, or --hub) or any MQTT 3.1.1 broker with --broker generic. With --c2d it measures
// Tether's cloud-to-device messaging instead.
type BenchCmd struct {
	Devices     int           `name:"devices" default:"100" help:"Simulated devices, one MQTT connection each."`
	QoS         int           `name:"qos" default:"1" enum:"0,1" help:"Publish QoS (${enum})."`
	Window      int           `name:"window" default:"1" help:"QoS 1 publishes in flight per device (unacknowledged)."`
	Size        int           `name:"size" default:"256" help:"Payload bytes per message."`
	Rate        float64       `name:"rate" default:"0" help:"Total messages per second over all devices (0 = as fast as possible)."`
	Duration    time.Duration `name:"duration" default:"10s" help:"Measured period."`
	Warmup      time.Duration `name:"warmup" default:"2s" help:"Publishing before the measured period, excluded from the results."`
	Drain       time.Duration `name:"drain" default:"5s" help:"How long to wait for outstanding PUBACKs (and --e2e messages, --c2d completions) at the end."`
	ConnectRate float64       `name:"connect-rate" default:"0" help:"Connections per second while connecting (0 = no limit; at most 64 at once)."`

	Addr     string `name:"addr" help:"MQTT address host:port. Default: the local hub's MQTT TLS address from its run file (its plain-TCP one with --tcp); with --hub, its host on 8883; for --broker generic, 127.0.0.1:1883 (8883 with --tls)."`
	TLS      bool   `name:"tls" xor:"transport" help:"MQTT over TLS (the default against Tether). Trusts the hub's CA, or --ca."`
	TCP      bool   `name:"tcp" xor:"transport" help:"MQTT over plain TCP (the default for --broker generic); the hub needs --mqtt-tcp-addr."`
	Insecure bool   `name:"insecure" help:"Do not verify the broker's TLS certificate (benchmarking peers with self-signed certificates)."`

	DevicePrefix  string `name:"device-prefix" default:"bench-" help:"Device ids (and client ids) are this prefix plus a number."`
	CreateDevices bool   `name:"create-devices" default:"true" negatable:"" help:"Create the devices through the service API before the run and delete them after (Tether). --no-create-devices uses existing ones."`
	KeepDevices   bool   `name:"keep-devices" help:"Do not delete the devices created for the run (reuse them later with --no-create-devices)."`
	PolicyToken   bool   `name:"policy-token" help:"Authenticate every device with one token of a hub policy with DeviceConnect (--policy; with --hub, the --hub policy) instead of each device's key. The devices must still exist."`
	Policy        string `name:"policy" default:"device" help:"Policy for --policy-token."`

	Broker   string `name:"broker" default:"tether" enum:"tether,generic" help:"tether: IoT Hub topics and SAS tokens; generic: any MQTT 3.1.1 broker with --topic, --username, --password (${enum})."`
	Topic    string `name:"topic" default:"bench/{device}" help:"With --broker generic: publish topic; {device} is replaced by the client id."`
	Username string `name:"username" help:"With --broker generic: user name ({device} is replaced)."`
	Password string `name:"password" env:"TETHER_BENCH_PASSWORD" help:"With --broker generic: password ({device} is replaced)."`

	E2E         bool   `name:"e2e" help:"Also read the built-in endpoint through the service API and report device→reader latency (payload timestamp; --size >= 20)."`
	C2D         bool   `name:"c2d" help:"Measure cloud-to-device instead of telemetry (Tether only): the devices subscribe to their devicebound topic with QoS 1 and PUBACK each message (which completes it); the tool sends --size-byte messages through the service API, --rate per second in total, or as fast as at most --window outstanding (unacknowledged) messages per device allow (keep --window below the hub's queue depth, 50). Tether answers a send once the message is durable in its store (bbolt, group commit). Reports send→API answer, send→device (PUBLISH read) and send→completion (PUBACK written) latencies, and the messages the hub did not complete. Queues are purged before and after."`
	C2DParallel int    `name:"c2d-parallel" default:"64" help:"With --c2d: service API calls in progress at once, at most."`
	JSON        bool   `name:"json" help:"Print the result as one JSON object and nothing else on stdout."`
	CPUProfile  string `name:"cpuprofile" type:"path" help:"Write a CPU profile of the load tool (go tool pprof) to this file: what the tool itself costs, next to the hub's (tether serve --debug-addr)."`
}

// Run provisions the devices (Tether), runs the benchmark and prints the result.
func (b *BenchCmd) Run(env *Env, c *CLI) error {
	if b.Devices < 1 {
		return fmt.Errorf("--devices must be at least 1")
	}
	if b.Window < 1 {
		return fmt.Errorf("--window must be at least 1")
	}
	if b.E2E && b.Broker != "tether" {
		return errors.New("--e2e reads Tether's built-in endpoint; it does not apply to --broker generic")
	}
	if b.C2D {
		switch {
		case b.Broker != "tether":
			return errors.New("--c2d sends through Tether's service API; it does not apply to --broker generic")
		case b.E2E:
			return errors.New("--c2d and --e2e measure different directions; choose one")
		case b.QoS != 1:
			return errors.New("--c2d: the devices subscribe with QoS 1, as the Azure IoT SDKs do; --qos does not apply")
		}
	}
	useTLS := b.TLS || (!b.TCP && b.Broker == "tether")
	ids := bench.DeviceIDs(b.DevicePrefix, b.Devices)
	cfg := bench.Config{
		QoS: b.QoS, Window: b.Window, Size: b.Size, Rate: b.Rate,
		Duration: b.Duration, Warmup: b.Warmup, Drain: b.Drain, ConnectRate: b.ConnectRate,
		Broker: b.Broker,
	}
	progress := func(format string, args ...any) {
		if !b.JSON {
			fmt.Fprintf(env.Stderr, format+"\n", args...)
		}
	}

	var serverName string
	var cleanup func()
	if b.Broker == "generic" {
		cfg.Addr = b.Addr
		if cfg.Addr == "" {
			cfg.Addr = "127.0.0.1:1883"
			if useTLS {
				cfg.Addr = "127.0.0.1:8883"
			}
		}
		serverName, _, _ = net.SplitHostPort(cfg.Addr)
		cfg.CleanSession = true
		cfg.Target = cfg.Addr
		for _, id := range ids {
			cfg.Devices = append(cfg.Devices, bench.GenericDevice(id, b.Topic, b.Username, b.Password))
		}
	} else {
		var err error
		serverName, cleanup, err = b.tether(env, c, &cfg, ids, useTLS, progress)
		if cleanup != nil {
			defer cleanup()
		}
		if err != nil {
			return err
		}
	}
	if useTLS {
		tc, err := b.tlsConfig(c, serverName)
		if err != nil {
			return err
		}
		cfg.TLS = tc
	}

	what := ""
	if b.C2D {
		what = " for cloud-to-device"
	}
	progress("Connecting %d devices to %s%s, then %v warm-up and %v measured...", b.Devices, cfg.Addr, what, b.Warmup, b.Duration)
	if b.CPUProfile != "" {
		f, err := os.Create(b.CPUProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	res, err := bench.Run(env.ctx, cfg)
	if res == nil || (err != nil && !res.Interrupted) {
		return err
	}
	if b.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return res.WriteText(env.Stdout)
}

// tether points cfg at a Tether hub: address, devices and their credentials, the --e2e reader.
// It returns the TLS server name and a cleanup that deletes the devices it created.
func (b *BenchCmd) tether(env *Env, c *CLI, cfg *bench.Config, ids []string, useTLS bool, progress func(string, ...any)) (string, func(), error) {
	var host, defaultAddr, where string
	if c.Hub != "" {
		cs, err := auth.ParseConnectionString(c.Hub)
		if err != nil {
			return "", nil, fmt.Errorf("--hub: %w", err)
		}
		host = hostOnly(cs.HostName)
		if useTLS {
			defaultAddr = net.JoinHostPort(host, "8883")
		}
		where = "hub " + host
	} else {
		run, err := server.ReadRunFile(c.DataDir)
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil, fmt.Errorf("no hub is running from %s: start one with `tether serve`, point at one with --hub, or use --broker generic", c.DataDir)
		}
		if err != nil {
			return "", nil, err
		}
		host = run.HostName
		defaultAddr = loopback(run.MQTTAddr)
		if !useTLS {
			if run.MQTTTCP == "" {
				defaultAddr = ""
			} else {
				defaultAddr = loopback(run.MQTTTCP)
			}
		}
		where = "the hub in " + c.DataDir
	}
	cfg.Addr = b.Addr
	if cfg.Addr == "" {
		cfg.Addr = defaultAddr
	}
	if cfg.Addr == "" {
		return "", nil, errors.New("the hub has no plain-TCP MQTT listener: start it with --mqtt-tcp-addr, or pass --addr")
	}
	cfg.Target = cfg.Addr + ", " + where

	// Credentials. The service API is needed to create devices, to look up device keys and for
	// --e2e; a policy token with existing devices needs nothing but the policy key.
	needAPI := b.CreateDevices || !b.PolicyToken || b.E2E || b.C2D
	var t *hubTarget
	if needAPI {
		var err error
		if t, err = c.connect(); err != nil {
			return "", nil, err
		}
	}
	exp := time.Now().Add(b.Warmup + b.Duration + time.Hour)
	var cleanup func()
	var keys []string
	if b.CreateDevices || !b.PolicyToken {
		if b.CreateDevices {
			progress("Creating %d devices (%s...) through the service API...", len(ids), ids[0])
		}
		prov, err := bench.Provision(env.ctx, t.client, ids, b.CreateDevices)
		if len(prov.Created) > 0 && !b.KeepDevices {
			cleanup = func() {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(env.ctx), time.Minute)
				defer cancel()
				progress("Deleting the %d devices created for the run...", len(prov.Created))
				if err := bench.Deprovision(ctx, t.client, prov.Created); err != nil {
					fmt.Fprintln(env.Stderr, "tether: bench:", err)
				}
			}
		}
		if err != nil {
			if !b.CreateDevices {
				err = fmt.Errorf("%w (create them with --create-devices, or run once with --keep-devices)", err)
			}
			return "", cleanup, err
		}
		keys = prov.Keys
	}
	if b.PolicyToken {
		_, p, err := signingPolicy(c, b.Policy)
		if err != nil {
			return "", cleanup, err
		}
		if c.Hub == "" && !p.Rights.Has(auth.DeviceConnect) {
			return "", cleanup, fmt.Errorf("policy %q lacks DeviceConnect; devices cannot connect with it", p.Name)
		}
		tok, err := bench.PolicyToken(host, p.Name, p.PrimaryKey, exp)
		if err != nil {
			return "", cleanup, err
		}
		for _, id := range ids {
			cfg.Devices = append(cfg.Devices, bench.HubDevice(host, id, tok))
		}
	} else {
		for i, id := range ids {
			tok, err := bench.DeviceToken(host, id, keys[i], exp)
			if err != nil {
				return "", cleanup, err
			}
			cfg.Devices = append(cfg.Devices, bench.HubDevice(host, id, tok))
		}
	}
	if b.E2E {
		cfg.Events = bench.ClientEvents(t.client)
	}
	if b.C2D {
		cfg.C2D, cfg.C2DParallel = t.client, b.C2DParallel
	}
	return host, cleanup, nil
}

// tlsConfig trusts --ca, else the local hub's CA, else the system roots.
func (b *BenchCmd) tlsConfig(c *CLI, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: serverName, InsecureSkipVerify: b.Insecure}
	caFile := c.CA
	if caFile == "" && b.Broker == "tether" && c.Hub == "" {
		if run, err := server.ReadRunFile(c.DataDir); err == nil {
			caFile = run.CAFile
		}
	}
	if caFile != "" {
		pool, err := certs.Pool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// loopback turns a wildcard listen address (":8883", "[::]:8883") into one to dial.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}
