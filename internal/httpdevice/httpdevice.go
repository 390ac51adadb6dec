// Package httpdevice is IoT Hub's HTTPS device API on the hub's HTTPS listener (spec section 4):
// devices send telemetry, one event or a batch, with a SAS token in the Authorization header.
//
// The package only translates between HTTP and the message model. Who the caller is, whether a
// message is acceptable, what is stamped on it and where it is stored are the hub's decisions
// (Hub). A request is answered 204 only after its messages are durable.
//
// Decisions where the spec is unconfirmed or HTTP forces a choice:
//
//   - Application property names from iothub-app-{name} headers are stored in lower case. HTTP
//     header names are case-insensitive and Go's server canonicalises them, so the case a device
//     wrote cannot be recovered; lower case is what HTTP/2 and most proxies deliver anyway. Names
//     inside a batch's JSON keep their case.
//   - The iothub-ack header becomes the application property iothub-ack (as on MQTT and AMQP).
//     Other iothub-* headers that are not system properties (iothub-operation, ...) and the
//     hub-stamped iothub-connection-* names are ignored.
//   - In a batch, property keys that are neither iothub-app-{name} nor a system property's header
//     name become application properties under the key as written, so nothing is lost.
//   - Every refusal (unknown, disabled or other device, bad or expired token) is 401
//     IotHubUnauthorizedAccess: the hub's authenticator does not tell an unknown device from a
//     bad signature, so 404 DeviceNotFound is never sent here.
//   - A request larger than 256 KB is refused with 413 MessageTooLarge after reading at most
//     256 KB + 1 bytes; a batch is also refused when its messages add up to more than 256 KB.
package httpdevice

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/telemetry"
)

// Hub is what the HTTPS device endpoint needs from the hub; *hub.Hub implements it.
type Hub interface {
	// AuthenticateDevice checks a SAS token for a device or module; refusals wrap
	// auth.ErrUnauthorized.
	AuthenticateDevice(ctx context.Context, deviceID, moduleID, token string) (auth.DeviceIdentity, error)
	// Submit validates, stamps and enqueues messages for the telemetry log, all or none;
	// validation errors wrap message.ErrTooLarge or message.ErrInvalid.
	Submit(ctx context.Context, from hub.Origin, msgs ...*message.Message) (*telemetry.Pending, error)
}

// DeviceBound is the seam for the cloud-to-device half of the HTTPS device API (spec 4.4, 4.5);
// NewDeviceBound implements it on the C2D queues. The Handler routes the devicebound requests, authenticates the device
// and hands them over with the operation classified; the implementation writes the response
// (use writeError in this package for IoT Hub's error form). With Config.DeviceBound nil those
// requests are answered 501 after authentication.
type DeviceBound interface {
	ServeDeviceBound(w http.ResponseWriter, r *http.Request, req DeviceBoundRequest)
}

// DeviceBoundOp is a cloud-to-device operation over HTTPS.
type DeviceBoundOp int

// Cloud-to-device operations, spec 4.4 and 4.5.
const (
	// OpReceive is GET /devices/{id}/messages/devicebound.
	OpReceive DeviceBoundOp = iota + 1
	// OpComplete is DELETE /devices/{id}/messages/devicebound/{lockToken}.
	OpComplete
	// OpReject is DELETE /devices/{id}/messages/devicebound/{lockToken}?reject.
	OpReject
	// OpAbandon is POST /devices/{id}/messages/devicebound/{lockToken}/abandon.
	OpAbandon
)

// DeviceBoundRequest is an authenticated cloud-to-device request.
type DeviceBoundRequest struct {
	Identity  auth.DeviceIdentity
	Op        DeviceBoundOp
	LockToken string // unquoted, from the path; empty for OpReceive
	RequestID string // also set as the x-ms-request-id response header
}

// Config holds what the Handler is built from.
type Config struct {
	Hub         Hub
	DeviceBound DeviceBound // nil: devicebound requests get 501
	Logger      *slog.Logger
	// StoreTimeout bounds how long a request waits for its messages to become durable. The wait
	// does not end when the client goes away or the server starts shutting down: what was
	// accepted is stored and answered. Default 30 s.
	StoreTimeout time.Duration
}

// Handler serves the HTTPS device API. It is safe for concurrent use.
type Handler struct {
	hub          Hub
	deviceBound  DeviceBound
	logger       *slog.Logger
	storeTimeout time.Duration
}

// New returns a Handler.
func New(c Config) *Handler {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 30 * time.Second
	}
	return &Handler{hub: c.Hub, deviceBound: c.DeviceBound, logger: c.Logger, storeTimeout: c.StoreTimeout}
}

// BatchContentType marks a batch of events (spec 4.3).
const BatchContentType = "application/vnd.microsoft.iothub.json"

// maxRequestBody is IoT Hub's limit for one message and for a whole batch.
const maxRequestBody = message.MaxD2CSize

// Owns reports whether r's path is the device API's: the events paths of devices and modules
// and a device's devicebound paths. Everything else on the HTTPS listener is the service API's.
func (h *Handler) Owns(r *http.Request) bool {
	_, ok := parsePath(r.URL.EscapedPath())
	return ok
}

type routeKind int

const (
	routeEvents routeKind = iota + 1
	routeDeviceBound
)

type route struct {
	kind               routeKind
	deviceID, moduleID string
	// rest is what follows devicebound: nothing, {lockToken}, or {lockToken}/abandon.
	rest []string
}

// parsePath recognises, with literal segments compared case-insensitively (.NET writes
// "deviceBound") and the identity segments percent-decoded:
//
//	/devices/{id}/messages/events
//	/devices/{id}/modules/{mid}/messages/events
//	/devices/{id}/messages/devicebound[/{lockToken}[/abandon]]
func parsePath(escaped string) (route, bool) {
	rest, ok := strings.CutPrefix(escaped, "/")
	if !ok {
		return route{}, false
	}
	seg := strings.Split(rest, "/")
	if len(seg) < 4 || !strings.EqualFold(seg[0], "devices") || seg[1] == "" {
		return route{}, false
	}
	deviceID, err := url.PathUnescape(seg[1])
	if err != nil {
		return route{}, false
	}
	rt := route{deviceID: deviceID}
	seg = seg[2:]
	if strings.EqualFold(seg[0], "modules") {
		if len(seg) != 4 || seg[1] == "" {
			return route{}, false
		}
		if rt.moduleID, err = url.PathUnescape(seg[1]); err != nil {
			return route{}, false
		}
		seg = seg[2:]
	}
	if !strings.EqualFold(seg[0], "messages") {
		return route{}, false
	}
	switch {
	case len(seg) == 2 && strings.EqualFold(seg[1], "events"):
		rt.kind = routeEvents
		return rt, true
	case rt.moduleID == "" && strings.EqualFold(seg[1], "devicebound") && len(seg) <= 4:
		// IoT Hub has no HTTPS cloud-to-device queue for modules.
		rt.kind = routeDeviceBound
		for _, s := range seg[2:] {
			u, err := url.PathUnescape(s)
			if err != nil {
				return route{}, false
			}
			rt.rest = append(rt.rest, u)
		}
		return rt, true
	}
	return route{}, false
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := &request{h: h, w: w, r: r, id: api.RequestID(r)}
	w.Header().Set("x-ms-request-id", req.id)
	rt, ok := parsePath(r.URL.EscapedPath())
	if !ok {
		req.fail(http.StatusNotFound, "ArgumentInvalid", "no device endpoint at "+r.URL.Path, nil)
		return
	}
	req.device, req.module = rt.deviceID, rt.moduleID

	var op DeviceBoundOp
	switch rt.kind {
	case routeEvents:
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			req.fail(http.StatusMethodNotAllowed, "InvalidOperation", r.Method+" is not allowed on "+r.URL.Path, nil)
			return
		}
	case routeDeviceBound:
		if op = deviceBoundOp(r, rt.rest); op == 0 {
			req.fail(http.StatusMethodNotAllowed, "InvalidOperation", r.Method+" is not allowed on "+r.URL.Path, nil)
			return
		}
	}

	id, ok := req.authenticate()
	if !ok {
		return
	}
	switch rt.kind {
	case routeEvents:
		req.sendEvents(id)
	case routeDeviceBound:
		if h.deviceBound == nil {
			req.fail(http.StatusNotImplemented, "InvalidOperation", "cloud-to-device messages over HTTPS are not available yet", nil)
			return
		}
		dr := DeviceBoundRequest{Identity: id, Op: op, RequestID: req.id}
		if op != OpReceive {
			dr.LockToken = rt.rest[0]
		}
		h.deviceBound.ServeDeviceBound(w, r, dr)
	}
}

func deviceBoundOp(r *http.Request, rest []string) DeviceBoundOp {
	switch {
	case len(rest) == 0 && r.Method == http.MethodGet:
		return OpReceive
	case len(rest) == 1 && r.Method == http.MethodDelete:
		if _, ok := r.URL.Query()["reject"]; ok {
			return OpReject
		}
		return OpComplete
	case len(rest) == 2 && strings.EqualFold(rest[1], "abandon") && r.Method == http.MethodPost:
		return OpAbandon
	}
	return 0
}

// request is one device API call being served.
type request struct {
	h              *Handler
	w              http.ResponseWriter
	r              *http.Request
	id             string
	device, module string
}

func (q *request) authenticate() (auth.DeviceIdentity, bool) {
	token := q.r.Header.Get("Authorization")
	if token == "" {
		q.fail(http.StatusUnauthorized, "IotHubUnauthorizedAccess", "the request has no Authorization header with a SharedAccessSignature", nil)
		return auth.DeviceIdentity{}, false
	}
	// The identity in the path is the one the token must cover: a token for another device is
	// refused, never redirected to its own identity.
	id, err := q.h.hub.AuthenticateDevice(q.r.Context(), q.device, q.module, token)
	switch {
	case errors.Is(err, auth.ErrUnauthorized):
		q.fail(http.StatusUnauthorized, "IotHubUnauthorizedAccess", "unauthorized", err)
		return auth.DeviceIdentity{}, false
	case err != nil && q.r.Context().Err() != nil:
		q.fail(http.StatusServiceUnavailable, "ServiceUnavailable", "the hub is shutting down", err)
		return auth.DeviceIdentity{}, false
	case err != nil:
		q.fail(http.StatusInternalServerError, "ServerError", "the device could not be authenticated", err)
		return auth.DeviceIdentity{}, false
	}
	return id, true
}

func (q *request) sendEvents(id auth.DeviceIdentity) {
	body, ok := q.readBody()
	if !ok {
		return
	}
	var msgs []*message.Message
	if isBatch(q.r.Header.Get("Content-Type")) {
		var err error
		if msgs, err = parseBatch(body); err != nil {
			q.fail(http.StatusBadRequest, "IotHubFormatError", err.Error(), err)
			return
		}
		total := 0
		for _, m := range msgs {
			total += m.Size()
		}
		if total > message.MaxD2CSize {
			q.fail(http.StatusRequestEntityTooLarge, "MessageTooLarge",
				fmt.Sprintf("the batch's messages add up to %d bytes; the limit is %d", total, message.MaxD2CSize), nil)
			return
		}
	} else {
		msgs = []*message.Message{messageFromHeaders(q.r.Header, body)}
	}
	q.store(id, msgs)
}

// readBody reads the request body, chunked or not, refusing it once it exceeds the limit
// without reading further.
func (q *request) readBody() ([]byte, bool) {
	if q.r.ContentLength > maxRequestBody {
		q.tooLarge()
		return nil, false
	}
	size := bytes.MinRead
	if q.r.ContentLength > 0 {
		size += int(q.r.ContentLength) // ReadFrom needs MinRead spare bytes to see EOF without growing
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	if _, err := buf.ReadFrom(io.LimitReader(q.r.Body, maxRequestBody+1)); err != nil {
		q.fail(http.StatusBadRequest, "IotHubFormatError", "the request body could not be read", err)
		return nil, false
	}
	if buf.Len() > maxRequestBody {
		q.tooLarge()
		return nil, false
	}
	return buf.Bytes(), true
}

func (q *request) tooLarge() {
	q.fail(http.StatusRequestEntityTooLarge, "MessageTooLarge",
		fmt.Sprintf("the request body is larger than %d bytes", maxRequestBody), nil)
}

// store submits the messages as one all-or-nothing append and answers 204 once they are durable.
func (q *request) store(id auth.DeviceIdentity, msgs []*message.Message) {
	// Detached from the request: a client that goes away or a server that starts shutting down
	// must not leave a message stored but unanswered halfway (http.Server.Shutdown waits for
	// this handler, and the log closes after it).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(q.r.Context()), q.h.storeTimeout)
	defer cancel()
	p, err := q.h.hub.Submit(ctx, hub.Origin{Identity: id}, msgs...)
	switch {
	case errors.Is(err, message.ErrTooLarge):
		q.fail(http.StatusRequestEntityTooLarge, "MessageTooLarge", err.Error(), err)
		return
	case errors.Is(err, message.ErrInvalid):
		q.fail(http.StatusBadRequest, "ArgumentInvalid", err.Error(), err)
		return
	case errors.Is(err, telemetry.ErrClosed):
		q.fail(http.StatusServiceUnavailable, "ServiceUnavailable", "the hub is shutting down", err)
		return
	case err != nil:
		q.fail(http.StatusServiceUnavailable, "ServiceUnavailable", "the message could not be stored", err)
		return
	}
	if _, err := p.Wait(ctx); err != nil {
		q.fail(http.StatusInternalServerError, "ServerError", "the message could not be stored", err)
		return
	}
	q.w.WriteHeader(http.StatusNoContent)
}

// fail writes IoT Hub's error response and logs the refusal once: client errors at Info,
// server errors at Error.
func (q *request) fail(status int, code, text string, err error) {
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	q.h.logger.Log(q.r.Context(), level, "https device request refused",
		"request_id", q.id, "method", q.r.Method, "path", q.r.URL.Path, "device", q.device, "module", q.module,
		"status", status, "code", code, "err", errText(err, text))
	api.WriteError(q.w, status, code, text)
}

func errText(err error, text string) string {
	if err != nil {
		return err.Error()
	}
	return text
}

func isBatch(contentType string) bool {
	if contentType == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == BatchContentType
}
