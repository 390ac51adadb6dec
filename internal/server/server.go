// Package server assembles a running hub for `tether serve`: it opens the data directory
// (hub state, TLS identity, metadata store, telemetry log), starts the device and service
// listeners, and shuts everything down in the order that loses no acknowledged message.
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/c2d"
	"github.com/tetherhub/tether/internal/certs"
	"github.com/tetherhub/tether/internal/consumer"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/mqtt"
	"github.com/tetherhub/tether/internal/registry"
	"github.com/tetherhub/tether/internal/routing"
	"github.com/tetherhub/tether/internal/routing/endpoint"
	"github.com/tetherhub/tether/internal/service"
	"github.com/tetherhub/tether/internal/telemetry"
)

// Layout of the data directory.
const (
	metadataFile = "metadata.db"
	telemetryDir = "telemetry"
	tlsDir       = "tls"
	// RunFile records where a running hub listens, so the CLI on the same machine finds it.
	RunFile = "run.json"
)

// Config is everything `tether serve` can be told.
type Config struct {
	DataDir        string
	HubName        string
	Partitions     int           // used when the hub is created
	Retention      time.Duration // telemetry retention by age
	RetentionBytes int64         // optional cap per partition, 0 = none
	SegmentBytes   int64
	MQTTAddr       string   // MQTT over TLS
	MQTTTCPAddr    string   // plain MQTT, empty = off
	HTTPSAddr      string   // service API, HTTPS device API, MQTT over WebSocket
	HostNames      []string // names in the certificate and connection strings; the first is the primary
	TLSCertFile    string   // operator certificate; empty = generated private CA
	TLSKeyFile     string
	ShutdownGrace  time.Duration
	Logger         *slog.Logger

	// RetentionInterval is how often retention runs (0 = the log's default, 1 minute).
	RetentionInterval time.Duration
	// MaxConsumerGroups caps the built-in endpoint's consumer groups (0 = 20, like IoT Hub).
	MaxConsumerGroups int
	// ConfigFile is the YAML configuration file (--config) whose routing section configures
	// routing; "" = none. It is reloaded on SIGHUP and when it changes.
	ConfigFile string
	// C2D are the cloud-to-device settings; zero fields take IoT Hub's defaults.
	C2D c2d.Settings
	// MQTTParkAfter is how long an idle MQTT connection keeps its goroutine (0 = 2 s,
	// negative = always; see mqtt.Options.ParkAfter).
	MQTTParkAfter time.Duration
}

// Run describes a started hub; it is also the content of the run file.
type Run struct {
	PID       int    `json:"pid"`
	HostName  string `json:"hostName"`
	MQTTAddr  string `json:"mqttAddr"`
	MQTTTCP   string `json:"mqttTcpAddr,omitempty"`
	HTTPSAddr string `json:"httpsAddr"`
	CAFile    string `json:"caFile,omitempty"`
}

// Started is passed to the ready callback once the hub accepts connections.
type Started struct {
	Run
	State          *hub.State
	CreatedNow     bool
	OwnerConString string
}

// Serve runs a hub until ctx is done, then shuts it down gracefully.
func Serve(ctx context.Context, cfg Config, ready func(Started)) (err error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.HostNames) == 0 {
		cfg.HostNames = []string{"localhost"}
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	state, created, err := hub.LoadOrCreateState(cfg.DataDir, cfg.HubName, cfg.Partitions, time.Now())
	if err != nil {
		return err
	}

	tlsCert, caFile, err := serverCertificate(cfg)
	if err != nil {
		return err
	}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{tlsCert}, MinVersion: tls.VersionTLS12}

	db, err := bbolt.Open(filepath.Join(cfg.DataDir, metadataFile), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bberrors.ErrTimeout) {
			return fmt.Errorf("open metadata store: another tether process uses %s", cfg.DataDir)
		}
		return fmt.Errorf("open metadata store: %w", err)
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close metadata store: %w", cerr)
		}
	}()
	reg, err := registry.Open(db)
	if err != nil {
		return err
	}
	groups, err := consumer.Open(db, consumer.Options{MaxGroups: cfg.MaxConsumerGroups})
	if err != nil {
		return err
	}
	c2dStore, err := openC2D(db, reg, state.Name, cfg.C2D, logger.With("component", "c2d"))
	if err != nil {
		return err
	}
	defer c2dStore.Close() // before the metadata store closes

	tlog, err := telemetry.Open(telemetry.Options{
		Dir:          filepath.Join(cfg.DataDir, telemetryDir),
		Partitions:   state.Partitions,
		SegmentBytes: cfg.SegmentBytes,
		Retention:    cfg.Retention,
		MaxBytes:     cfg.RetentionBytes,
		Logger:       logger.With("component", "telemetry"),

		RetentionInterval: cfg.RetentionInterval,
	})
	if err != nil {
		return fmt.Errorf("open telemetry log: %w", err)
	}
	// The log closes after the listeners: everything acknowledged is durable before exit.
	defer func() {
		if cerr := tlog.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close telemetry log: %w", cerr)
		}
	}()

	authn := &auth.Authenticator{Identities: reg, Policies: state}
	// Routing: the decision is made at ingestion (hub.Submit) with the configuration in force.
	router := routing.NewRouter(state.Name, routing.NewRegistryTags(reg))
	// Custom endpoints are fed from the log by durable cursors, so a slow or dead endpoint never
	// holds up ingestion. Closed before the log (defers run in reverse).
	dispatcher, err := endpoint.NewDispatcher(endpoint.Config{Log: tlog, DB: db, Enrich: router.Enrich,
		HubName: state.Name, Logger: logger.With("component", "endpoints")})
	if err != nil {
		return fmt.Errorf("start endpoint delivery: %w", err)
	}
	defer dispatcher.Close()
	routingMgr, err := routing.NewManager(ctx, routing.ManagerOptions{Router: router, ConfigFile: cfg.ConfigFile,
		DataDir: cfg.DataDir, Dispatcher: dispatcher, Logger: logger.With("component", "routing")})
	if err != nil {
		return err
	}
	hubEvents := &routing.Events{Router: router, Logger: logger.With("component", "routing")}
	h := hub.New(hub.Config{Auth: authn, Activity: reg, Log: tlog, Logger: logger.With("component", "hub"),
		Router: router, OnConnectionChange: hubEvents.ConnectionChanged})
	hubEvents.Publisher = h
	reg.OnChange(hubEvents.RegistryChanged)

	mqttServer := mqtt.NewServer(mqttAdapter{hub: h, c2d: c2dStore, logger: logger.With("component", "c2d")}, mqtt.Options{Logger: logger.With("component", "mqtt"), ParkAfter: cfg.MQTTParkAfter})
	// IoT Hub closes the connections of an identity that is disabled or deleted.
	reg.OnChange(func(ev registry.ChangeEvent) {
		revoked := ev.Op == registry.Deleted ||
			(ev.Op == registry.Updated && ev.ModuleID == "" && ev.Device.Status == registry.StatusDisabled)
		if revoked {
			mqttServer.Disconnect(ev.DeviceID, ev.ModuleID)
		}
	})
	svc := service.New(service.Config{Auth: authn, Registry: reg, Log: tlog, ConsumerGroups: groups, Logger: logger.With("component", "service"),
		Routing: routingMgr, EndpointHealth: dispatcher.Health, C2D: c2dStore, CloudToDeviceMessageCount: c2dCount(c2dStore)})

	var listeners []net.Listener
	closeAll := func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}
	listen := func(addr string, tlsCfg *tls.Config) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		listeners = append(listeners, ln)
		if tlsCfg != nil {
			return tls.NewListener(ln, tlsCfg), nil
		}
		return ln, nil
	}
	mqttLn, err := listen(cfg.MQTTAddr, tlsConfig)
	if err != nil {
		return err
	}
	var mqttTCPLn net.Listener
	if cfg.MQTTTCPAddr != "" {
		if mqttTCPLn, err = listen(cfg.MQTTTCPAddr, nil); err != nil {
			return err
		}
	}
	httpsLn, err := listen(cfg.HTTPSAddr, tlsConfig)
	if err != nil {
		return err
	}

	httpServer := &http.Server{
		Handler:           httpsHandler(ctx, h, c2dStore, mqttServer, svc, logger),
		ReadHeaderTimeout: 30 * time.Second,
		// HTTPS devices poll with keep-alive connections; idle ones must not stay open forever.
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(logger.With("component", "https").Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}

	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	errc := make(chan error, 3)
	go func() { errc <- mqttServer.Serve(serveCtx, mqttLn, "mqtt") }()
	// Activity times are kept in memory and persisted periodically, never per message.
	go reg.Run(serveCtx, 5*time.Second, func(err error) { logger.Warn("persist device activity", "err", err) })
	go routingMgr.Watch(serveCtx, 2*time.Second)
	if mqttTCPLn != nil {
		go func() { errc <- mqttServer.Serve(serveCtx, mqttTCPLn, "mqtt") }()
	}
	go func() {
		if err := httpServer.Serve(httpsLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()

	run := Run{
		PID:       os.Getpid(),
		HostName:  cfg.HostNames[0],
		MQTTAddr:  mqttLn.Addr().String(),
		HTTPSAddr: httpsLn.Addr().String(),
		CAFile:    caFile,
	}
	if mqttTCPLn != nil {
		run.MQTTTCP = mqttTCPLn.Addr().String()
	}
	if err := writeRunFile(cfg.DataDir, run); err != nil {
		closeAll()
		return err
	}
	defer os.Remove(filepath.Join(cfg.DataDir, RunFile))

	owner, _ := state.Policy("iothubowner")
	logger.Info("hub started", "name", state.Name, "mqtt", run.MQTTAddr, "mqtt_tcp", run.MQTTTCP, "https", run.HTTPSAddr, "data_dir", cfg.DataDir, "partitions", state.Partitions)
	if ready != nil {
		ready(Started{
			Run:            run,
			State:          state,
			CreatedNow:     created,
			OwnerConString: auth.ServiceConnectionString(run.HostName, owner.Name, owner.PrimaryKey).String(),
		})
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		logger.Error("listener failed", "err", serveErr)
	}

	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	// MQTT first: in-flight QoS 1 publishes become durable and are acknowledged, then the
	// connections close; the log is closed last by the deferred Close.
	if err := mqttServer.Shutdown(shutdownCtx); err != nil {
		logger.Warn("mqtt shutdown", "err", err)
	}
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		httpServer.Close()
	}
	stopServing()
	closeAll()
	if err := reg.Flush(shutdownCtx); err != nil {
		logger.Warn("persist device activity", "err", err)
	}
	return serveErr
}

func serverCertificate(cfg Config) (tls.Certificate, string, error) {
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		if cfg.TLSCertFile == "" || cfg.TLSKeyFile == "" {
			return tls.Certificate{}, "", errors.New("a TLS certificate needs both --tls-cert and --tls-key")
		}
		cert, err := certs.Load(cfg.TLSCertFile, cfg.TLSKeyFile)
		return cert, "", err
	}
	return certs.Ensure(filepath.Join(cfg.DataDir, tlsDir), cfg.HostNames, time.Now())
}

func writeRunFile(dir string, run Run) error {
	data, err := json.MarshalIndent(run, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, RunFile)
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		return fmt.Errorf("write run file: %w", err)
	}
	return os.Rename(path+".tmp", path)
}

// ReadRunFile returns what a running hub wrote about itself into dir.
func ReadRunFile(dir string) (Run, error) {
	var run Run
	data, err := os.ReadFile(filepath.Join(dir, RunFile))
	if err != nil {
		return run, err
	}
	if err := json.Unmarshal(data, &run); err != nil {
		return run, fmt.Errorf("parse %s: %w", filepath.Join(dir, RunFile), err)
	}
	return run, nil
}
