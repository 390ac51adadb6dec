package endpoint

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhub/tether/internal/message"
)

// Webhook headers Tether adds (see the package documentation).
const (
	HeaderSignature      = "X-Tether-Signature"
	HeaderEndpoint       = "X-Tether-Endpoint"
	HeaderDeliveryID     = "X-Tether-Delivery-Id"
	HeaderPartition      = "X-Tether-Partition"
	HeaderSequenceNumber = "X-Tether-Sequence-Number"
	HeaderHub            = "X-Tether-Hub"
)

// Webhook defaults.
const (
	defaultWebhookBatch   = 100
	defaultWebhookTimeout = 30 * time.Second
	webhookBatchBytes     = 1 << 20 // Event Grid's batch size limit is 1 MB
)

type webhookSink struct {
	name    string
	hub     string
	spec    WebhookSpec
	secret  []byte
	client  *http.Client
	timeout time.Duration
}

func newWebhookSink(s Spec, env sinkEnv) (Sink, batchLimits, error) {
	w := *s.Webhook
	ws := &webhookSink{name: s.Name, hub: env.hub, spec: w, timeout: time.Duration(w.Timeout)}
	if ws.timeout == 0 {
		ws.timeout = defaultWebhookTimeout
	}
	switch {
	case w.Secret != "":
		ws.secret = []byte(w.Secret)
	case w.SecretFile != "":
		b, err := os.ReadFile(w.SecretFile)
		if err != nil {
			return nil, batchLimits{}, &FieldError{Endpoint: s.Name, Field: "webhook.secretFile", Message: err.Error()}
		}
		ws.secret = bytes.TrimRight(b, "\r\n")
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: w.InsecureSkipVerify}
	if w.CAFile != "" {
		pem, err := os.ReadFile(w.CAFile)
		if err != nil {
			return nil, batchLimits{}, &FieldError{Endpoint: s.Name, Field: "webhook.caFile", Message: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, batchLimits{}, &FieldError{Endpoint: s.Name, Field: "webhook.caFile", Message: "no PEM certificates in " + w.CAFile}
		}
		tlsConf.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	tr.MaxIdleConnsPerHost = 16
	ws.client = &http.Client{
		Transport: tr,
		// A redirect is not a delivery: the receiver must answer 2xx itself.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	limits := batchLimits{records: defaultWebhookBatch, bytes: 4 << 20}
	if w.Batch {
		limits.records = w.MaxBatchSize
		if limits.records == 0 {
			limits.records = defaultWebhookBatch
		}
		limits.bytes = webhookBatchBytes
	}
	return ws, limits, nil
}

func (w *webhookSink) Close() error {
	w.client.CloseIdleConnections()
	return nil
}

func (w *webhookSink) Deliver(ctx context.Context, batch []Delivery) error {
	if w.spec.Batch {
		body, err := json.Marshal(eventGridEvents(w.hub, w.name, batch))
		if err != nil {
			return err
		}
		h := http.Header{}
		h.Set("Content-Type", "application/json; charset=utf-8")
		h.Set("aeg-event-type", "Notification")
		h.Set("X-Tether-Batch-Size", strconv.Itoa(len(batch)))
		return w.post(ctx, body, h)
	}
	for i, d := range batch {
		if err := w.post(ctx, d.Message.Body, w.singleHeaders(d)); err != nil {
			return &PartialError{Done: i, Err: err}
		}
	}
	return nil
}

// singleHeaders carries one message's properties: system properties under their Event Hubs /
// Event Grid names, application properties as iothub-app-<name>.
func (w *webhookSink) singleHeaders(d Delivery) http.Header {
	m := d.Message
	h := http.Header{}
	for _, p := range headerPairs(m) {
		h[p.Name] = []string{p.Value} // as named, not canonicalised
	}
	ct := m.ContentType
	if ct == "" || !printableASCII(ct) {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	h.Set(HeaderDeliveryID, deliveryID(w.name, d))
	h.Set(HeaderPartition, strconv.Itoa(d.Partition))
	h.Set(HeaderSequenceNumber, strconv.FormatInt(d.Sequence, 10))
	return h
}

func (w *webhookSink) post(ctx context.Context, body []byte, h http.Header) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.spec.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range w.spec.Headers {
		req.Header.Set(k, v)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set(HeaderEndpoint, w.name)
	if w.hub != "" {
		req.Header.Set(HeaderHub, w.hub)
	}
	if len(w.secret) > 0 {
		req.Header.Set(HeaderSignature, Sign(w.secret, body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg := strings.TrimSpace(string(snippet))
		if msg != "" {
			msg = ": " + msg
		}
		return fmt.Errorf("webhook: %s answered %s%s", w.spec.URL, resp.Status, msg)
	}
	return nil
}

// Sign returns the X-Tether-Signature value for body: "sha256=" and the lower-case hex
// HMAC-SHA256 of the body keyed with the endpoint's secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// VerifySignature checks an X-Tether-Signature header value in constant time (for receivers
// written in Go, and the tests).
func VerifySignature(secret, body []byte, header string) error {
	want := Sign(secret, body)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(strings.TrimSpace(header)))) {
		return errors.New("signature mismatch")
	}
	return nil
}

// EventGridEvent is one message in a webhook batch, in Event Grid's schema for IoT Hub's
// Microsoft.Devices.DeviceTelemetry events.
type EventGridEvent struct {
	ID              string        `json:"id"`
	Topic           string        `json:"topic"`
	Subject         string        `json:"subject"`
	EventType       string        `json:"eventType"`
	EventTime       string        `json:"eventTime"`
	Data            EventGridData `json:"data"`
	DataVersion     string        `json:"dataVersion"`
	MetadataVersion string        `json:"metadataVersion"`
}

// EventGridData is the data of a telemetry event. Body is the message body as JSON when the
// message is application/json in utf-8, else a base64 string (as Event Grid does).
type EventGridData struct {
	Body             json.RawMessage   `json:"body"`
	Properties       map[string]string `json:"properties"`
	SystemProperties map[string]string `json:"systemProperties"`
}

func eventGridEvents(hub, endpoint string, batch []Delivery) []EventGridEvent {
	out := make([]EventGridEvent, 0, len(batch))
	for _, d := range batch {
		m := d.Message
		ev := EventGridEvent{
			ID:              deliveryID(endpoint, d),
			Topic:           "/tether/iothubs/" + hub,
			Subject:         "devices/" + m.ConnectionDeviceID,
			EventType:       "Microsoft.Devices.DeviceTelemetry",
			EventTime:       formatTime(m.EnqueuedTime),
			DataVersion:     "",
			MetadataVersion: "1",
			Data: EventGridData{
				Properties:       m.Properties,
				SystemProperties: map[string]string{},
			},
		}
		if m.ConnectionModuleID != "" {
			ev.Subject += "/modules/" + m.ConnectionModuleID
		}
		if ev.Data.Properties == nil {
			ev.Data.Properties = map[string]string{}
		}
		for _, p := range eventProperties(m) {
			ev.Data.SystemProperties[p.Name] = p.Value
		}
		ev.Data.Body = bodyJSON(m)
		out = append(out, ev)
	}
	return out
}

// bodyJSON is the body as a JSON value: itself when JSON in utf-8, else a base64 string.
func bodyJSON(m *message.Message) json.RawMessage {
	if jsonBody(m) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, m.Body); err == nil {
			return buf.Bytes()
		}
	}
	b, _ := json.Marshal(base64.StdEncoding.EncodeToString(m.Body))
	return b
}
