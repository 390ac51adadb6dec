package service

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/c2d"
)

// C2DStore is the cloud-to-device state the service API drives; *c2d.Store implements it.
type C2DStore interface {
	Send(ctx context.Context, deviceID string, m c2d.Message) (c2d.Message, error)
	Purge(ctx context.Context, deviceID string) (int, error)
	ReceiveFeedback(ctx context.Context) (c2d.FeedbackMessage, bool, error)
	NotifyFeedback() <-chan struct{}
	CompleteFeedback(ctx context.Context, lockToken string) error
	AbandonFeedback(ctx context.Context, lockToken string) error
}

// maxC2DBody bounds a send request: a 64 KB message as base64 inside JSON, with properties.
const maxC2DBody = 256 << 10

// maxFeedbackWait caps ?wait= on a feedback receive; clients wait longer by asking again.
const maxFeedbackWait = time.Minute

// c2dRoutes registers the cloud-to-device operations (see package api for the table). IoT
// Hub's service sends over AMQP; these REST operations are Tether's. The send path is
// /devices/{id}/commands, beside IoT Hub's purge, because /devices/{id}/messages/devicebound
// belongs to the HTTPS device API on the same listener.
func (s *Server) c2dRoutes() {
	if s.c2d == nil {
		return
	}
	s.mux.HandleFunc("POST /devices/{id}/commands", s.need(auth.ServiceConnect, s.sendC2D))
	s.mux.HandleFunc("DELETE /devices/{id}/commands", s.need(auth.ServiceConnect, s.purgeC2D))
	for _, p := range []string{"/messages/serviceBound/feedback", "/messages/servicebound/feedback"} {
		s.mux.HandleFunc("GET "+p, s.need(auth.ServiceConnect, s.receiveFeedback))
		s.mux.HandleFunc("DELETE "+p+"/{lock}", s.need(auth.ServiceConnect, s.completeFeedback))
		s.mux.HandleFunc("POST "+p+"/{lock}/abandon", s.need(auth.ServiceConnect, s.abandonFeedback))
	}
}

func (s *Server) sendC2D(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	data, err := io.ReadAll(io.LimitReader(r.Body, maxC2DBody+1))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", "the request body could not be read")
		return
	}
	if len(data) > maxC2DBody {
		s.writeError(w, r, http.StatusRequestEntityTooLarge, "MessageTooLarge", fmt.Sprintf("the request body is larger than %d bytes", maxC2DBody))
		return
	}
	var in api.C2DMessage
	if err := json.Unmarshal(data, &in); err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("the body is not a cloud-to-device message: %v", err))
		return
	}
	m := c2d.Message{
		MessageID: in.MessageID, CorrelationID: in.CorrelationID, UserID: in.UserID,
		ContentType: in.ContentType, ContentEncoding: in.ContentEncoding,
		Ack: c2d.AckMode(in.Ack), Properties: in.Properties, Body: []byte(in.Body),
	}
	if in.BodyBase64 != "" {
		if in.Body != "" {
			s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", "set body or bodyBase64, not both")
			return
		}
		if m.Body, err = base64.StdEncoding.DecodeString(in.BodyBase64); err != nil {
			s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", "bodyBase64 is not base64: "+err.Error())
			return
		}
	}
	if in.ExpiryTime != nil {
		m.ExpiryTime = *in.ExpiryTime
	}
	out, err := s.c2d.Send(r.Context(), id, m)
	if err != nil {
		s.writeC2DError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.C2DSendResult{DeviceID: id, MessageID: out.MessageID, SequenceNumber: out.SequenceNumber,
		EnqueuedTime: out.EnqueuedTime, ExpiryTime: out.ExpiryTime})
}

func (s *Server) purgeC2D(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	n, err := s.c2d.Purge(r.Context(), id)
	if err != nil {
		s.writeC2DError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.C2DPurgeResult{DeviceID: id, TotalMessagesPurged: n})
}

// receiveFeedback answers with the oldest visible feedback message, locked (ETag = lock
// token), or 204 when none arrives within ?wait= (a Go duration or seconds; default 0).
func (s *Server) receiveFeedback(w http.ResponseWriter, r *http.Request) {
	wait, err := parseWait(r.URL.Query().Get("wait"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		ch := s.c2d.NotifyFeedback()
		fm, ok, err := s.c2d.ReceiveFeedback(r.Context())
		if err != nil {
			s.writeC2DError(w, r, err)
			return
		}
		if ok {
			h := w.Header()
			h.Set("ETag", `"`+fm.LockToken+`"`)
			h.Set("iothub-sequencenumber", strconv.FormatUint(fm.SequenceNumber, 10))
			h.Set("iothub-enqueuedtime", fm.EnqueuedTime.UTC().Format(time.RFC3339Nano))
			h.Set("iothub-expiry", fm.ExpiryTime.UTC().Format(time.RFC3339Nano))
			h.Set("iothub-deliverycount", strconv.Itoa(fm.DeliveryCount))
			h.Set("iothub-userid", fm.UserID)
			h.Set("Content-Type", fm.ContentType)
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(fm.Body)
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			w.WriteHeader(http.StatusNoContent)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func parseWait(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.ParseFloat(v, 64)
		if nerr != nil {
			return 0, fmt.Errorf("wait %q is neither a duration (30s) nor seconds", v)
		}
		d = time.Duration(n * float64(time.Second))
	}
	if d < 0 {
		return 0, fmt.Errorf("wait %q is negative", v)
	}
	return min(d, maxFeedbackWait), nil
}

func (s *Server) completeFeedback(w http.ResponseWriter, r *http.Request) {
	if err := s.c2d.CompleteFeedback(r.Context(), r.PathValue("lock")); err != nil {
		s.writeC2DError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) abandonFeedback(w http.ResponseWriter, r *http.Request) {
	if err := s.c2d.AbandonFeedback(r.Context(), r.PathValue("lock")); err != nil {
		s.writeC2DError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeC2DError maps a c2d error to IoT Hub's status and error code.
func (s *Server) writeC2DError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, "ServerError"
	switch {
	case errors.Is(err, c2d.ErrQueueFull):
		status, code = http.StatusForbidden, "DeviceMaximumQueueDepthExceeded"
	case errors.Is(err, c2d.ErrDeviceNotFound):
		status, code = http.StatusNotFound, "DeviceNotFound"
	case errors.Is(err, c2d.ErrTooLarge):
		status, code = http.StatusRequestEntityTooLarge, "MessageTooLarge"
	case errors.Is(err, c2d.ErrInvalid):
		status, code = http.StatusBadRequest, "ArgumentInvalid"
	case errors.Is(err, c2d.ErrLockLost):
		status, code = http.StatusPreconditionFailed, "DeviceMessageLockLost"
	case r.Context().Err() != nil:
		status, code = http.StatusServiceUnavailable, "ServiceUnavailable"
	}
	if status >= 500 {
		s.logger.Error("service request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	s.writeError(w, r, status, code, err.Error())
}
