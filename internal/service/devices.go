package service

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/tetherhub/tether/internal/registry"
)

// maxIdentityBody bounds a device identity request body; real ones are well under 4 KB.
const maxIdentityBody = 64 << 10

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := s.registry.GetDevice(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	s.deviceC2DCount(r.Context(), &d)
	writeDevice(w, http.StatusOK, d)
}

// putDevice creates a device (no If-Match; 409 DeviceAlreadyExists if it exists, as the SDKs
// see from IoT Hub) or replaces it (If-Match "*" or its etag).
func (s *Server) putDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var d registry.Device
	if err := json.NewDecoder(io.LimitReader(r.Body, maxIdentityBody)).Decode(&d); err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("the body is not a device identity: %v", err))
		return
	}
	if d.DeviceID == "" {
		d.DeviceID = id
	}
	if d.DeviceID != id {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("deviceId %q in the body does not match %q in the path", d.DeviceID, id))
		return
	}
	ifMatch := r.Header.Get("If-Match")
	var (
		out    registry.Device
		err    error
		status = http.StatusOK
	)
	if ifMatch == "" {
		out, err = s.registry.CreateDevice(r.Context(), d)
	} else {
		out, err = s.registry.UpdateDevice(r.Context(), d, ifMatch)
	}
	if err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	s.deviceC2DCount(r.Context(), &out)
	writeDevice(w, status, out)
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) {
	ifMatch := r.Header.Get("If-Match")
	if err := s.registry.DeleteDevice(r.Context(), r.PathValue("id"), ifMatch); err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	top := 0
	if v := r.URL.Query().Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("top=%q is not a count", v))
			return
		}
		top = n
	}
	devices, err := s.registry.ListDevices(r.Context(), top)
	if err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	if devices == nil {
		devices = []registry.Device{}
	}
	for i := range devices {
		s.deviceC2DCount(r.Context(), &devices[i])
	}
	writeJSON(w, http.StatusOK, devices)
}

func (s *Server) deviceStatistics(w http.ResponseWriter, r *http.Request) {
	stats, err := s.registry.Stats(r.Context())
	if err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, stats)
}

func writeDevice(w http.ResponseWriter, status int, d registry.Device) {
	w.Header().Set("ETag", `"`+d.ETag+`"`)
	writeJSON(w, status, d)
}
