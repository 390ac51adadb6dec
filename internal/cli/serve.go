package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/server"
)

// ServeCmd runs the hub.
type ServeCmd struct {
	MQTTAddr       string        `name:"mqtt-addr" env:"TETHER_MQTT_ADDR" default:":8883" help:"MQTT over TLS listen address."`
	MQTTTCPAddr    string        `name:"mqtt-tcp-addr" env:"TETHER_MQTT_TCP_ADDR" help:"Plain-TCP MQTT listen address, off by default: for a TLS-terminating load balancer in front, or benchmarks."`
	HTTPSAddr      string        `name:"https-addr" env:"TETHER_HTTPS_ADDR" default:":8443" help:"HTTPS listen address (service API). SDK HTTP and WebSocket transports and azure-iothub always dial 443: use :443 there."`
	HostNames      []string      `name:"hostname" env:"TETHER_HOSTNAME" default:"localhost" help:"Host name devices use; repeatable. Named in the generated certificate; the first one goes in connection strings."`
	TLSCert        string        `name:"tls-cert" env:"TETHER_TLS_CERT" type:"path" help:"PEM certificate chain to serve instead of the generated one."`
	TLSKey         string        `name:"tls-key" env:"TETHER_TLS_KEY" type:"path" help:"PEM private key for --tls-cert."`
	HubName        string        `name:"hub-name" env:"TETHER_HUB_NAME" default:"tether" help:"Hub name (used when the hub is created)."`
	Partitions     int           `name:"partitions" env:"TETHER_PARTITIONS" default:"4" help:"Partitions of the built-in endpoint (used when the hub is created; fixed afterwards)."`
	Retention      time.Duration `name:"retention" env:"TETHER_RETENTION" default:"24h" help:"How long telemetry is retained."`
	RetentionBytes int64         `name:"retention-bytes" env:"TETHER_RETENTION_BYTES" help:"Optional size cap per partition in bytes (0 = none)."`
	SegmentBytes   int64         `name:"segment-bytes" env:"TETHER_SEGMENT_BYTES" default:"67108864" help:"Size of one telemetry log segment file."`
	LogFormat      string        `name:"log-format" env:"TETHER_LOG_FORMAT" default:"text" enum:"text,json" help:"Log format (${enum})."`

	RetentionInterval time.Duration `name:"retention-interval" env:"TETHER_RETENTION_INTERVAL" default:"1m" help:"How often telemetry past retention is removed."`
	MaxConsumerGroups int           `name:"max-consumer-groups" env:"TETHER_MAX_CONSUMER_GROUPS" default:"20" help:"Most consumer groups of the built-in endpoint, $Default included."`

	MQTTParkAfter time.Duration `name:"mqtt-park-after" env:"TETHER_MQTT_PARK_AFTER" default:"2s" help:"How long an MQTT connection (TLS or TCP, on Linux) may wait for its next packet before it gives up its goroutine and read buffer until data arrives; 0 = never."`

	DebugAddr string `name:"debug-addr" env:"TETHER_DEBUG_ADDR" help:"Serve Go's pprof profiles (/debug/pprof/) on this address, plain HTTP without authentication: bind it to loopback. Off by default."`

	C2D C2DSettingsFlags `embed:""`
}

// Run starts the hub and blocks until SIGINT or SIGTERM.
func (s *ServeCmd) Run(env *Env, c *CLI) error {
	if s.Partitions < 1 || s.Partitions > 128 {
		return fmt.Errorf("--partitions must be between 1 and 128, not %d", s.Partitions)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return err
	}
	opts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(env.Stderr, opts)
	if s.LogFormat == "json" {
		handler = slog.NewJSONHandler(env.Stderr, opts)
	}
	logger := slog.New(handler)
	if s.DebugAddr != "" {
		stop, err := serveDebug(s.DebugAddr, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	cfg := server.Config{
		DataDir:        c.DataDir,
		HubName:        s.HubName,
		Partitions:     s.Partitions,
		Retention:      s.Retention,
		RetentionBytes: s.RetentionBytes,
		SegmentBytes:   s.SegmentBytes,
		MQTTAddr:       s.MQTTAddr,
		MQTTTCPAddr:    s.MQTTTCPAddr,
		HTTPSAddr:      s.HTTPSAddr,
		HostNames:      s.HostNames,
		TLSCertFile:    s.TLSCert,
		TLSKeyFile:     s.TLSKey,
		Logger:         logger,

		RetentionInterval: s.RetentionInterval,
		MaxConsumerGroups: s.MaxConsumerGroups,
		C2D:               s.C2D.settings(),
		ConfigFile:        string(c.Config),
		MQTTParkAfter:     s.MQTTParkAfter,
	}
	if s.MQTTParkAfter <= 0 {
		cfg.MQTTParkAfter = -1 // never; zero would be the default
	}
	return server.Serve(env.ctx, cfg, func(st server.Started) {
		w := env.Stdout
		if st.CreatedNow {
			fmt.Fprintf(w, "Created hub %q in %s\n", st.State.Name, c.DataDir)
		}
		fmt.Fprintf(w, "Tether hub %q is running\n", st.State.Name)
		fmt.Fprintf(w, "  MQTT (TLS):   %s\n", st.MQTTAddr)
		if st.MQTTTCP != "" {
			fmt.Fprintf(w, "  MQTT (TCP):   %s\n", st.MQTTTCP)
		}
		fmt.Fprintf(w, "  HTTPS:        %s\n", st.HTTPSAddr)
		fmt.Fprintf(w, "Owner connection string:\n  %s\n", st.OwnerConString)
		if st.CAFile != "" {
			fmt.Fprintf(w, "CA certificate (trust it with NODE_EXTRA_CA_CERTS=%s or the SDK's ca option):\n  %s\n", st.CAFile, st.CAFile)
		}
		fmt.Fprintf(w, "Create a device: tether device create <id>\n")
	})
}

// deviceConnectionString builds what a device SDK is given. When the hub's MQTT port is not
// 8883, GatewayHostName carries it: the SDKs then dial it while HostName stays the SAS resource.
func deviceConnectionString(t *hubTarget, deviceID, moduleID, key string) string {
	cs := auth.ConnectionString{HostName: t.hostName, DeviceID: deviceID, ModuleID: moduleID, SharedAccessKey: key}
	if t.mqttPort != "" && t.mqttPort != "8883" {
		cs.GatewayHostName = net.JoinHostPort(t.hostName, t.mqttPort)
	}
	return cs.String()
}

// serveDebug serves the pprof handlers on their own listener, away from the authenticated APIs.
func serveDebug(addr string, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("debug listener stopped", "addr", addr, "err", err)
		}
	}()
	logger.Info("pprof profiles served", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}
