package service

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/routing"
	"github.com/tetherhub/tether/internal/routing/endpoint"
)

// maxRoutingBody bounds a routing configuration or route test body (a test message carries up
// to 256 KB of body, base64 or escaped).
const maxRoutingBody = 2 << 20

// RoutingAdmin is the permission that manages routing. IoT Hub manages routes through Azure
// Resource Manager, not with hub policies; Tether asks for both RegistryWrite and
// ServiceConnect (of the default policies only iothubowner has them): the configuration holds
// endpoint credentials and decides where every message goes. The raw tap of the log
// (GET /messages/events?raw=true) needs it too, since it shows messages of every endpoint.
const RoutingAdmin = auth.RegistryWrite | auth.ServiceConnect

// routingRoutes serves the routing configuration and route tests:
//
//	GET    /configuration/routing  the configuration in force (ETag header; source, limits)
//	PUT    /configuration/routing  replace it (If-Match optional); persisted, takes precedence over the file
//	DELETE /configuration/routing  drop the API's configuration: the file's is in force again
//	POST   /routing/test           test a condition, or the routes in force, on a sample message (ServiceConnect)
func (s *Server) routingRoutes() {
	s.mux.HandleFunc("GET /configuration/routing", s.need(RoutingAdmin, s.getRouting))
	s.mux.HandleFunc("PUT /configuration/routing", s.need(RoutingAdmin, s.putRouting))
	s.mux.HandleFunc("DELETE /configuration/routing", s.need(RoutingAdmin, s.deleteRouting))
	s.mux.HandleFunc("POST /routing/test", s.need(auth.ServiceConnect, s.testRoute))
	s.mux.HandleFunc("GET /routing/endpoints", s.need(auth.ServiceConnect, s.endpointHealth))
}

// endpointHealth reports each custom endpoint's delivery health.
func (s *Server) endpointHealth(w http.ResponseWriter, r *http.Request) {
	out := []endpoint.EndpointHealth{}
	if s.endpointHealthFn != nil {
		out = append(out, s.endpointHealthFn()...)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) haveRouting(w http.ResponseWriter, r *http.Request) bool {
	if s.routing == nil {
		s.writeError(w, r, http.StatusNotImplemented, "NotImplemented", "this hub has no routing configuration")
		return false
	}
	return true
}

// routingView is the JSON of GET /configuration/routing.
type routingView struct {
	routing.Config
	Limits routing.Limits `json:"limits"`
	Source string         `json:"source"`
}

func (s *Server) writeRouting(w http.ResponseWriter, status int) {
	cfg, limits, source, etag := s.routing.Current()
	if cfg.Routes == nil {
		cfg.Routes = []routing.Route{}
	}
	if cfg.Enrichments == nil {
		cfg.Enrichments = []routing.Enrichment{}
	}
	w.Header().Set("ETag", `"`+etag+`"`)
	writeJSON(w, status, routingView{Config: cfg, Limits: limits, Source: source})
}

func (s *Server) getRouting(w http.ResponseWriter, r *http.Request) {
	if s.haveRouting(w, r) {
		s.writeRouting(w, http.StatusOK)
	}
}

func (s *Server) putRouting(w http.ResponseWriter, r *http.Request) {
	if !s.haveRouting(w, r) {
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRoutingBody+1))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return
	}
	if len(data) > maxRoutingBody {
		s.writeError(w, r, http.StatusRequestEntityTooLarge, "MessageTooLarge", fmt.Sprintf("a routing configuration is at most %d bytes", maxRoutingBody))
		return
	}
	doc, err := routing.ParseJSON(data)
	if err == nil {
		ifMatch := strings.TrimPrefix(r.Header.Get("If-Match"), "W/")
		err = s.routing.Put(r.Context(), doc, strings.Trim(ifMatch, `"`))
	}
	if err != nil {
		s.writeRoutingError(w, r, err)
		return
	}
	s.writeRouting(w, http.StatusOK)
}

func (s *Server) deleteRouting(w http.ResponseWriter, r *http.Request) {
	if !s.haveRouting(w, r) {
		return
	}
	if err := s.routing.Reset(r.Context()); err != nil {
		s.writeRoutingError(w, r, err)
		return
	}
	s.writeRouting(w, http.StatusOK)
}

func (s *Server) writeRoutingError(w http.ResponseWriter, r *http.Request, err error) {
	var errs routing.Errors
	switch {
	case errors.Is(err, routing.ErrPreconditionFailed):
		s.writeError(w, r, http.StatusPreconditionFailed, "PreconditionFailed", err.Error())
	case errors.As(err, &errs), strings.HasPrefix(err.Error(), "the body is not JSON"):
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", err.Error())
	default:
		s.logger.Error("routing configuration", "err", err)
		s.writeError(w, r, http.StatusInternalServerError, "ServerError", err.Error())
	}
}

// testRoute answers POST /routing/test (api.RouteTestRequest → api.RouteTestResult).
func (s *Server) testRoute(w http.ResponseWriter, r *http.Request) {
	var req api.RouteTestRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRoutingBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("the body is not a route test: %v", err))
		return
	}
	m, err := testMessage(req.Message)
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return
	}
	router := s.router()
	res, err := router.Test(routing.TestInput{Condition: req.Condition, Source: req.Source, Message: m, Twin: req.Twin})
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return
	}
	out := api.RouteTestResult{Result: res.Result, Notes: res.Notes, MatchedRoutes: res.MatchedRoutes, Endpoints: res.Endpoints}
	for _, rt := range res.Routes {
		out.Routes = append(out.Routes, api.RouteTestRoute(rt))
	}
	writeJSON(w, http.StatusOK, out)
}

// router is the router in force; a hub without routing tests against the default one.
func (s *Server) router() *routing.Router {
	if s.routing != nil {
		return s.routing.Router()
	}
	return routing.NewRouter("", nil)
}

// testMessage builds the sample message of a route test.
func testMessage(in api.RouteTestMessage) (*message.Message, error) {
	m := &message.Message{}
	for k, v := range in.SystemProperties {
		if err := routing.SetSystemProperty(m, k, v); err != nil {
			return nil, fmt.Errorf("message.systemProperties: %v", err)
		}
	}
	for k, v := range in.AppProperties {
		if k == "" {
			return nil, errors.New("message.appProperties: an empty property name")
		}
		m.SetProperty(k, v)
	}
	switch {
	case len(in.Body) > 0 && in.BodyBase64 != "":
		return nil, errors.New("message: set body or bodyBase64, not both")
	case in.BodyBase64 != "":
		b, err := base64.StdEncoding.DecodeString(in.BodyBase64)
		if err != nil {
			return nil, fmt.Errorf("message.bodyBase64: %v", err)
		}
		m.Body = b
	case len(in.Body) > 0:
		var str string
		if json.Unmarshal(in.Body, &str) == nil {
			m.Body = []byte(str)
		} else {
			m.Body = []byte(in.Body)
		}
	}
	if len(m.Body) > message.MaxD2CSize {
		return nil, fmt.Errorf("message.body: %d bytes, the limit is %d", len(m.Body), message.MaxD2CSize)
	}
	return m, nil
}
