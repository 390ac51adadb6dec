package httpdevice

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sort"
	"strconv"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/c2d"
)

// C2DQueue is the cloud-to-device state the devicebound requests drive; *c2d.Store implements
// it.
type C2DQueue interface {
	Receive(ctx context.Context, deviceID string) (c2d.Message, bool, error)
	Complete(ctx context.Context, deviceID, lockToken string) error
	Reject(ctx context.Context, deviceID, lockToken string) error
	Abandon(ctx context.Context, deviceID, lockToken string) error
}

// NewDeviceBound returns the cloud-to-device half of the HTTPS device API (spec 4.4, 4.5) on a
// C2D queue store:
//
//   - GET .../devicebound: 200 with the next visible message, locked for the store's lock
//     duration (IoT Hub: 1 minute; iothub-messagelocktimeout is ignored), or 204 when none.
//     The lock token is the quoted ETag. Headers carry the system properties as iothub-*,
//     content type and encoding both as iothub-contenttype/iothub-contentencoding (Java) and
//     as ContentType/ContentEncoding (the C SDK), application properties as iothub-app-{name}.
//     Times are UTC with seven fractional digits, as IoT Hub writes $.exp.
//   - DELETE .../devicebound/{lock} completes, with ?reject rejects, POST .../{lock}/abandon
//     abandons: 204, or 412 DeviceMessageLockLost for an unknown or lapsed lock. If-Match is
//     not required: the token in the path decides.
//
// The queue is the device's whatever the transport, so a device may receive over HTTPS what
// was queued while it used MQTT, and the other way round.
func NewDeviceBound(q C2DQueue, logger *slog.Logger) DeviceBound {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &deviceBound{q: q, logger: logger}
}

type deviceBound struct {
	q      C2DQueue
	logger *slog.Logger
}

const c2dTimeLayout = "2006-01-02T15:04:05.0000000Z"

func (d *deviceBound) ServeDeviceBound(w http.ResponseWriter, r *http.Request, req DeviceBoundRequest) {
	dev := req.Identity.DeviceID
	ctx := r.Context()
	if req.Op == OpReceive {
		m, ok, err := d.q.Receive(ctx, dev)
		if err != nil {
			d.fail(w, r, req, err)
			return
		}
		if !ok {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeC2DMessage(w, m)
		return
	}
	var err error
	switch req.Op {
	case OpComplete:
		err = d.q.Complete(ctx, dev, req.LockToken)
	case OpReject:
		err = d.q.Reject(ctx, dev, req.LockToken)
	case OpAbandon:
		err = d.q.Abandon(ctx, dev, req.LockToken)
	}
	if err != nil {
		d.fail(w, r, req, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeC2DMessage writes a received message: 200, its headers and body. Header names are set
// as written (not canonicalised): lower-case iothub-* as IoT Hub sends them, and the C SDK's
// literal ContentType/ContentEncoding.
func writeC2DMessage(w http.ResponseWriter, m c2d.Message) {
	h := w.Header()
	set := func(name, value string) {
		if value != "" {
			h[name] = []string{value}
		}
	}
	h["ETag"] = []string{`"` + m.LockToken + `"`}
	set("iothub-messageid", m.MessageID)
	set("iothub-correlationid", m.CorrelationID)
	set("iothub-userid", m.UserID)
	set("iothub-to", m.To)
	set("iothub-ack", string(m.Ack))
	set("iothub-sequencenumber", strconv.FormatUint(m.SequenceNumber, 10))
	set("iothub-enqueuedtime", m.EnqueuedTime.UTC().Format(c2dTimeLayout))
	set("iothub-expiry", m.ExpiryTime.UTC().Format(c2dTimeLayout))
	set("iothub-deliverycount", strconv.Itoa(m.DeliveryCount))
	set("iothub-contenttype", m.ContentType)
	set("iothub-contentencoding", m.ContentEncoding)
	set("ContentType", m.ContentType)
	set("ContentEncoding", m.ContentEncoding)
	names := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		h["iothub-app-"+k] = []string{m.Properties[k]}
	}
	// An explicit Content-Type keeps net/http from sniffing one.
	ct := m.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	h.Set("Content-Length", strconv.Itoa(len(m.Body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(m.Body)
}

func (d *deviceBound) fail(w http.ResponseWriter, r *http.Request, req DeviceBoundRequest, err error) {
	status, code := http.StatusInternalServerError, "ServerError"
	switch {
	case errors.Is(err, c2d.ErrLockLost):
		status, code = http.StatusPreconditionFailed, "DeviceMessageLockLost"
	case errors.Is(err, c2d.ErrInvalid):
		status, code = http.StatusBadRequest, "ArgumentInvalid"
	case r.Context().Err() != nil:
		status, code = http.StatusServiceUnavailable, "ServiceUnavailable"
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	d.logger.Log(r.Context(), level, "https device request refused", "request_id", req.RequestID, "method", r.Method,
		"path", r.URL.Path, "device", req.Identity.DeviceID, "status", status, "code", code, "err", err)
	api.WriteError(w, status, code, err.Error())
}
