package server

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/tetherhub/tether/internal/c2d"
	"github.com/tetherhub/tether/internal/httpdevice"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/mqtt"
	"github.com/tetherhub/tether/internal/wsconn"
)

// webSocketPath is where IoT Hub serves MQTT (and AMQP) over WebSocket; the SDKs always dial
// wss://{host}:443/$iothub/websocket.
const webSocketPath = "/$iothub/websocket"

// httpsHandler composes the HTTPS listener as IoT Hub's port 443: MQTT over WebSocket, the
// device API (telemetry; cloud-to-device from the C2D queues), and
// everything else for the service API.
//
// WebSocket connections are served by the same MQTT server as the TLS listener, so its
// Shutdown drains and closes them too (http.Server.Shutdown does not track hijacked
// connections). They run with a context that shutting down does not cancel, so the drain is
// graceful rather than an abort.
func httpsHandler(ctx context.Context, h *hub.Hub, queues *c2d.Store, mqttServer *mqtt.Server, svc http.Handler, logger *slog.Logger) http.Handler {
	devices := httpdevice.New(httpdevice.Config{Hub: h, Logger: logger.With("component", "https-device"),
		DeviceBound: httpdevice.NewDeviceBound(queues, logger.With("component", "https-device"))})
	ws := &wsconn.Handler{
		Context: context.WithoutCancel(ctx),
		Logger:  logger.With("component", "mqtt-ws"),
		Serve: func(ctx context.Context, nc net.Conn) {
			mqttServer.ServeConn(ctx, nc, "mqtt-ws")
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case isWebSocketPath(r.URL.Path):
			ws.ServeHTTP(w, r)
		case devices.Owns(r):
			devices.ServeHTTP(w, r)
		default:
			svc.ServeHTTP(w, r)
		}
	})
}

// isWebSocketPath accepts /$iothub/websocket and /:{port}/$iothub/websocket. The second is what
// the SDKs' WebSocket transports request when the connection string has GatewayHostName=host:port
// (as Tether prints it when MQTT is not on 8883): they build wss://host:port:443/$iothub/websocket,
// which URL parsers read as port 443 and that path (wire notes §1). Accepting it lets one
// connection string serve every transport.
func isWebSocketPath(p string) bool {
	if p == webSocketPath {
		return true
	}
	port, ok := strings.CutSuffix(p, webSocketPath)
	if !ok {
		return false
	}
	port, ok = strings.CutPrefix(port, "/:")
	if !ok || port == "" || len(port) > 5 {
		return false
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	return true
}
