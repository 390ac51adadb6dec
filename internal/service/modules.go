package service

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/registry"
)

// moduleRoutes serves module identities as IoT Hub's registry API does (spec 6.2).
func (s *Server) moduleRoutes() {
	s.mux.HandleFunc("GET /devices/{id}/modules", s.need(auth.RegistryRead, s.listModules))
	s.mux.HandleFunc("GET /devices/{id}/modules/{mid}", s.need(auth.RegistryRead, s.getModule))
	s.mux.HandleFunc("PUT /devices/{id}/modules/{mid}", s.need(auth.RegistryWrite, s.putModule))
	s.mux.HandleFunc("DELETE /devices/{id}/modules/{mid}", s.need(auth.RegistryWrite, s.deleteModule))
}

func (s *Server) listModules(w http.ResponseWriter, r *http.Request) {
	modules, err := s.registry.ListModules(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	if modules == nil {
		modules = []registry.Module{}
	}
	for i := range modules {
		s.moduleC2DCount(r.Context(), &modules[i])
	}
	writeJSON(w, http.StatusOK, modules)
}

func (s *Server) getModule(w http.ResponseWriter, r *http.Request) {
	m, err := s.registry.GetModule(r.Context(), r.PathValue("id"), r.PathValue("mid"))
	if err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	s.writeModule(w, r, http.StatusOK, m)
}

// putModule creates a module (no If-Match; 409 ModuleAlreadyExistsOnDevice if it exists, 404
// DeviceNotFound without its device) or replaces it (If-Match "*" or its etag).
func (s *Server) putModule(w http.ResponseWriter, r *http.Request) {
	deviceID, moduleID := r.PathValue("id"), r.PathValue("mid")
	var m registry.Module
	if err := json.NewDecoder(io.LimitReader(r.Body, maxIdentityBody)).Decode(&m); err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("the body is not a module identity: %v", err))
		return
	}
	if m.DeviceID == "" {
		m.DeviceID = deviceID
	}
	if m.ModuleID == "" {
		m.ModuleID = moduleID
	}
	if m.DeviceID != deviceID || m.ModuleID != moduleID {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf(
			"deviceId/moduleId %q/%q in the body do not match %q/%q in the path", m.DeviceID, m.ModuleID, deviceID, moduleID))
		return
	}
	var (
		out registry.Module
		err error
	)
	if ifMatch := r.Header.Get("If-Match"); ifMatch == "" {
		out, err = s.registry.CreateModule(r.Context(), m)
	} else {
		out, err = s.registry.UpdateModule(r.Context(), m, ifMatch)
	}
	if err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	s.writeModule(w, r, http.StatusOK, out)
}

func (s *Server) deleteModule(w http.ResponseWriter, r *http.Request) {
	if err := s.registry.DeleteModule(r.Context(), r.PathValue("id"), r.PathValue("mid"), r.Header.Get("If-Match")); err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) writeModule(w http.ResponseWriter, r *http.Request, status int, m registry.Module) {
	s.moduleC2DCount(r.Context(), &m)
	w.Header().Set("ETag", `"`+m.ETag+`"`)
	writeJSON(w, status, m)
}

// deviceC2DCount fills cloudToDeviceMessageCount from the C2D queues (the registry does not
// own them). A failing lookup is logged and leaves 0: the identity is still worth returning.
func (s *Server) deviceC2DCount(ctx context.Context, d *registry.Device) {
	d.CloudToDeviceMessageCount = s.c2dMessageCount(ctx, d.DeviceID, "")
}

func (s *Server) moduleC2DCount(ctx context.Context, m *registry.Module) {
	m.CloudToDeviceMessageCount = s.c2dMessageCount(ctx, m.DeviceID, m.ModuleID)
}

func (s *Server) c2dMessageCount(ctx context.Context, deviceID, moduleID string) int {
	if s.c2dCount == nil {
		return 0
	}
	n, err := s.c2dCount(ctx, deviceID, moduleID)
	if err != nil {
		s.logger.Warn("count cloud-to-device messages", "device", deviceID, "module", moduleID, "err", err)
		return 0
	}
	return n
}
