// Package cli is the tether command line: `tether serve` runs a hub, and every other command is
// a client of a hub's service API, found through the local data directory or a service
// connection string.
package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
	"go.yaml.in/yaml/v3"

	"github.com/tetherhub/tether/client"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/certs"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/server"
)

// CLI is the command tree.
type CLI struct {
	DataDir  string          `name:"data-dir" env:"TETHER_DATA_DIR" default:"${dataDir}" type:"path" help:"Data directory of the hub (state, keys, certificates, stored messages)."`
	Hub      string          `name:"hub" env:"TETHER_HUB" help:"Service connection string of the hub to talk to; default: the hub running on this machine from --data-dir."`
	CA       string          `name:"ca" env:"TETHER_CA" type:"path" help:"PEM CA certificate to trust when talking to --hub."`
	LogLevel string          `name:"log-level" env:"TETHER_LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level (${enum})."`
	Config   kong.ConfigFlag `name:"config" env:"TETHER_CONFIG" help:"YAML file with settings; keys are flag names (data-dir, mqtt-addr, ...)."`

	Serve   ServeCmd   `cmd:"" help:"Run the hub."`
	HubCmd  HubCmd     `cmd:"" name:"hub" help:"Hub settings and connection strings."`
	Device  DeviceCmd  `cmd:"" help:"Manage device identities."`
	Monitor MonitorCmd `cmd:"" help:"Print messages arriving at the built-in endpoint."`
	C2D     C2DCmd     `cmd:"" name:"c2d" help:"Cloud-to-device messages: send, purge, read delivery feedback."`
	Route   RouteCmd   `cmd:"" help:"Manage message routing: routes, custom endpoints, enrichments; test conditions."`

	ConsumerGroup ConsumerGroupCmd `cmd:"" name:"consumer-group" help:"Manage consumer groups of the built-in endpoint."`
	Bench         BenchCmd         `cmd:"" help:"Simulate devices publishing telemetry and measure throughput and latency (Tether or any MQTT 3.1.1 broker)."`
}

// Env carries the process's streams, so commands are testable.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	ctx    context.Context
}

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	var c CLI
	parser, err := kong.New(&c,
		kong.Name("tether"),
		kong.Description("Tether: a self-hosted IoT hub, wire-compatible with Azure IoT Hub device messaging."),
		kong.Vars{"dataDir": defaultDataDir()},
		kong.Configuration(yamlLoader),
		kong.Writers(stdout, stderr),
		kong.Exit(func(int) { panic(exitRequest{}) }),
		kong.UsageOnError(),
	)
	if err != nil {
		fmt.Fprintln(stderr, "tether:", err)
		return 2
	}
	code := 0
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(exitRequest); !ok {
					panic(r)
				}
				code = 0 // --help
			}
		}()
		kctx, err := parser.Parse(args)
		if err != nil {
			fmt.Fprintln(stderr, "tether:", err)
			code = 2
			return
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		env := &Env{Stdout: stdout, Stderr: stderr, ctx: ctx}
		if err := kctx.Run(env, &c); err != nil {
			fmt.Fprintln(stderr, "tether:", err)
			code = 1
		}
	}()
	return code
}

type exitRequest struct{}

// defaultDataDir follows the XDG base directory convention so a non-root user can run the hub
// anywhere without setup.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "tether")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "tether")
	}
	return "tether-data"
}

// yamlLoader reads the configuration file: YAML turned into JSON for kong's JSON resolver,
// which matches keys to flag names.
func yamlLoader(r io.Reader) (kong.Resolver, error) {
	var doc map[string]any
	if err := yaml.NewDecoder(r).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse configuration file: %w", err)
	}
	// Kong's JSON resolver looks flags up with "-" spelled "_"; people write flag names.
	normalized := make(map[string]any, len(doc))
	for k, v := range doc {
		normalized[strings.ReplaceAll(k, "-", "_")] = v
	}
	data, err := json.Marshal(normalized)
	if err != nil {
		return nil, fmt.Errorf("configuration file: %w", err)
	}
	return kong.JSON(bytes.NewReader(data))
}

// hubTarget is where a client command sends its requests.
type hubTarget struct {
	client *client.Client
	// hostName and mqttPort build device connection strings.
	hostName string
	mqttPort string
}

// connect returns a client for --hub, or for the hub running from --data-dir.
func (c *CLI) connect() (*hubTarget, error) {
	if c.Hub != "" {
		var opts []client.Option
		if c.CA != "" {
			pool, err := certs.Pool(c.CA)
			if err != nil {
				return nil, err
			}
			opts = append(opts, client.WithTLSConfig(&tls.Config{RootCAs: pool}))
		}
		cl, err := client.New(c.Hub, opts...)
		if err != nil {
			return nil, fmt.Errorf("--hub: %w", err)
		}
		cs, _ := auth.ParseConnectionString(c.Hub) // client.New has parsed it
		return &hubTarget{client: cl, hostName: hostOnly(cs.HostName)}, nil
	}
	state, err := hub.LoadState(c.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no hub in %s: start one with `tether serve`, or point at one with --hub", c.DataDir)
	}
	if err != nil {
		return nil, err
	}
	run, err := server.ReadRunFile(c.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("the hub in %s is not running: start it with `tether serve`", c.DataDir)
	}
	if err != nil {
		return nil, err
	}
	owner, ok := state.Policy("iothubowner")
	if !ok {
		return nil, errors.New("the hub has no iothubowner policy: use --hub with another policy's connection string")
	}
	_, httpsPort, err := net.SplitHostPort(run.HTTPSAddr)
	if err != nil {
		return nil, fmt.Errorf("run file: %w", err)
	}
	tlsCfg := &tls.Config{ServerName: run.HostName}
	if run.CAFile != "" {
		pool, err := certs.Pool(run.CAFile)
		if err != nil {
			return nil, err
		}
		tlsCfg.RootCAs = pool
	}
	cl, err := client.New(
		fmt.Sprintf("HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", run.HostName, owner.Name, owner.PrimaryKey),
		client.WithEndpoint("https://"+net.JoinHostPort(run.HostName, httpsPort)),
		client.WithTLSConfig(tlsCfg),
	)
	if err != nil {
		return nil, err
	}
	_, mqttPort, _ := net.SplitHostPort(run.MQTTAddr)
	return &hubTarget{client: cl, hostName: run.HostName, mqttPort: mqttPort}, nil
}

// hostOnly drops the port a connection string's HostName may carry: tokens and usernames name
// the host alone.
func hostOnly(hostName string) string {
	if h, _, err := net.SplitHostPort(hostName); err == nil {
		return h
	}
	return hostName
}
