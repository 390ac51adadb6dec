// Package service is the hub's service API on its HTTPS listener: IoT Hub's registry REST API
// and Tether's streaming read of the built-in endpoint. Callers authenticate with SAS tokens of
// the hub's shared access policies; every response carries x-ms-request-id, and errors use IoT
// Hub's status codes and error body.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/registry"
	"github.com/tetherhub/tether/internal/routing"
	"github.com/tetherhub/tether/internal/routing/endpoint"
	"github.com/tetherhub/tether/internal/telemetry"
)

// Authenticator checks a service caller's token for the permissions an operation needs.
type Authenticator interface {
	AuthenticateService(ctx context.Context, token, resource string, need auth.Permission) (auth.ServicePrincipal, error)
}

// EventLog is the built-in endpoint as the read API needs it.
type EventLog interface {
	Partitions() int
	PartitionFor(key string) int
	ReadInto(buf *telemetry.ReadBuffer, partition int, from int64, max int, maxBytes int) ([]telemetry.Record, error)
	Notify(partition int) <-chan struct{}
	SeekTime(partition int, t time.Time) (int64, error)
	Info(partition int) (telemetry.PartitionInfo, error)
}

// Config holds what the service API serves.
type Config struct {
	Auth     Authenticator
	Registry *registry.Registry
	Log      EventLog
	Logger   *slog.Logger
	// ConsumerGroups stores consumer groups and checkpoints; nil serves only $Default, without
	// checkpoints.
	ConsumerGroups ConsumerGroups
	// CloudToDeviceMessageCount reports an identity's queued cloud-to-device messages for the
	// cloudToDeviceMessageCount field (moduleID "" for a device); nil reports 0.
	CloudToDeviceMessageCount func(ctx context.Context, deviceID, moduleID string) (int, error)
	// Routing manages the routing configuration and enriches the built-in endpoint's messages;
	// nil serves the default routing (everything to the built-in endpoint) and no routing API.
	Routing *routing.Manager
	// EndpointHealth reports the custom endpoints' delivery health (nil: none).
	EndpointHealth func() []endpoint.EndpointHealth
	// C2D is the cloud-to-device store (send, purge, feedback); nil serves none of its
	// operations.
	C2D C2DStore
}

// Server serves the service API.
type Server struct {
	auth     Authenticator
	registry *registry.Registry
	log      EventLog
	logger   *slog.Logger
	mux      *http.ServeMux
	groups   ConsumerGroups
	c2dCount func(ctx context.Context, deviceID, moduleID string) (int, error)
	routing  *routing.Manager
	c2d      C2DStore

	endpointHealthFn func() []endpoint.EndpointHealth
}

// New returns a service API server.
func New(c Config) *Server {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{auth: c.Auth, registry: c.Registry, log: c.Log, logger: c.Logger, mux: http.NewServeMux(),
		groups: c.ConsumerGroups, c2dCount: c.CloudToDeviceMessageCount, routing: c.Routing}
	s.c2d = c.C2D
	s.endpointHealthFn = c.EndpointHealth
	s.routes()
	return s
}

// routes registers every operation; each feature keeps its handlers in its own file.
func (s *Server) routes() {
	s.eventRoutes()
	s.deviceRoutes()
	s.consumerGroupRoutes()
	s.moduleRoutes()
	s.routingRoutes()
	s.c2dRoutes()
}

func (s *Server) eventRoutes() {
	s.mux.HandleFunc("GET /messages/events", s.need(auth.ServiceConnect, s.streamEvents))
	s.mux.HandleFunc("GET /messages/events/partitions", s.need(auth.ServiceConnect, s.listPartitions))
}

func (s *Server) deviceRoutes() {
	s.mux.HandleFunc("GET /devices", s.need(auth.RegistryRead, s.listDevices))
	s.mux.HandleFunc("GET /devices/{$}", s.need(auth.RegistryRead, s.listDevices))
	s.mux.HandleFunc("GET /devices/{id}", s.need(auth.RegistryRead, s.getDevice))
	s.mux.HandleFunc("PUT /devices/{id}", s.need(auth.RegistryWrite, s.putDevice))
	s.mux.HandleFunc("DELETE /devices/{id}", s.need(auth.RegistryWrite, s.deleteDevice))
	s.mux.HandleFunc("GET /statistics/devices", s.need(auth.RegistryRead, s.deviceStatistics))
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-ms-request-id", api.RequestID(r))
	s.mux.ServeHTTP(w, r)
}

// need wraps a handler with SAS authentication for the given permission.
func (s *Server) need(perm auth.Permission, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := r.Header.Get("Authorization")
		if token == "" {
			s.writeError(w, r, http.StatusUnauthorized, "IotHubUnauthorizedAccess", "the request has no Authorization header with a SharedAccessSignature")
			return
		}
		if _, err := s.auth.AuthenticateService(r.Context(), token, strings.TrimPrefix(r.URL.Path, "/"), perm); err != nil {
			s.logger.Info("service request refused", "path", r.URL.Path, "err", err)
			s.writeError(w, r, http.StatusUnauthorized, "IotHubUnauthorizedAccess", err.Error())
			return
		}
		h(w, r)
	}
}

// writeError writes IoT Hub's error response.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, status int, code, text string) {
	api.WriteError(w, status, code, text)
}

// writeStoreError maps a registry error to IoT Hub's status and error code.
func (s *Server) writeStoreError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, "ServerError"
	switch {
	case errors.Is(err, registry.ErrDeviceNotFound):
		status, code = http.StatusNotFound, "DeviceNotFound"
	case errors.Is(err, registry.ErrModuleNotFound):
		status, code = http.StatusNotFound, "ModuleNotFound"
	case errors.Is(err, registry.ErrDeviceAlreadyExists):
		status, code = http.StatusConflict, "DeviceAlreadyExists"
	case errors.Is(err, registry.ErrModuleAlreadyExists):
		status, code = http.StatusConflict, "ModuleAlreadyExistsOnDevice"
	case errors.Is(err, registry.ErrPreconditionFailed):
		status, code = http.StatusPreconditionFailed, "PreconditionFailed"
	case errors.Is(err, registry.ErrInvalidArgument):
		status, code = http.StatusBadRequest, "ArgumentInvalid"
	}
	if status == http.StatusInternalServerError {
		s.logger.Error("service request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	s.writeError(w, r, status, code, err.Error())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
