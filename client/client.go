// Package client is a Go client for Tether's service API: manage device identities and read
// telemetry from the built-in endpoint without writing HTTP by hand. The tether CLI is built on
// it.
//
//	c, err := client.New("HostName=hub.example.com;SharedAccessKeyName=iothubowner;SharedAccessKey=...")
//	dev, err := c.CreateDevice(ctx, api.Device{DeviceID: "thermostat-1"})
//	err = c.ReadEvents(ctx, client.ReadOptions{From: "start"}, func(ev api.Event) error {
//		fmt.Println(ev.DeviceID, *ev.Body)
//		return nil
//	})
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/auth"
)

// tokenLifetime is how long each request's SAS token is valid; the client signs one per
// request, as the official service SDK does.
const tokenLifetime = time.Hour

// Client calls one hub's service API with a shared access policy's key.
type Client struct {
	host     string // HostName from the connection string: the SAS resource
	endpoint *url.URL
	keyName  string
	key      string
	http     *http.Client
	now      func() time.Time
}

// Option configures a Client.
type Option func(*Client)

// maxIdleConnsPerHost is how many idle connections the client keeps to the hub, so that many
// concurrent calls (the client is safe for concurrent use) reuse connections instead of
// making a TLS handshake each (net/http keeps 2 by default).
const maxIdleConnsPerHost = 128

// WithTLSConfig sets the TLS configuration, e.g. to trust the hub's private CA.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *Client) {
		c.http.Transport = &http.Transport{
			TLSClientConfig: cfg, Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true,
			MaxIdleConnsPerHost: maxIdleConnsPerHost, IdleConnTimeout: 90 * time.Second,
		}
	}
}

// WithEndpoint makes the client dial endpoint (https://host:port) instead of
// https://<HostName>, keeping HostName for the SAS resource.
func WithEndpoint(endpoint string) Option {
	return func(c *Client) {
		if u, err := url.Parse(endpoint); err == nil {
			c.endpoint = u
		}
	}
}

// New returns a client for the hub named by a service connection string
// (HostName=...;SharedAccessKeyName=...;SharedAccessKey=...). HostName may carry a port.
func New(connectionString string, opts ...Option) (*Client, error) {
	cs, err := auth.ParseConnectionString(connectionString)
	if err != nil {
		return nil, err
	}
	if cs.HostName == "" || cs.SharedAccessKeyName == "" || cs.SharedAccessKey == "" {
		return nil, errors.New("a service connection string needs HostName, SharedAccessKeyName and SharedAccessKey")
	}
	c := &Client{
		host:     cs.HostName,
		endpoint: &url.URL{Scheme: "https", Host: cs.HostName},
		keyName:  cs.SharedAccessKeyName,
		key:      cs.SharedAccessKey,
		http:     &http.Client{},
		now:      time.Now,
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is an error response of the service API.
type Error struct {
	StatusCode int
	Code       string // IoT Hub's error code name, e.g. DeviceNotFound
	Message    string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("service API: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
	}
	return fmt.Sprintf("service API: %s: %s", e.Code, e.Message)
}

// IsNotFound reports whether err says the device (or module) does not exist.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, headers map[string]string, in, out any) (resp *http.Response, err error) {
	u := *c.endpoint
	// path arrives escaped (ids may hold '#', '%', '?'): keep that form on the wire.
	u.RawPath = path
	if u.Path, err = url.PathUnescape(path); err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if query == nil {
		query = url.Values{}
	}
	query.Set("api-version", api.Version)
	u.RawQuery = query.Encode()
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	token, err := auth.Sign(c.host, c.keyName, c.key, c.now().Add(tokenLifetime))
	if err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	req.Header.Set("Authorization", token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err = c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, responseError(resp)
	}
	if out == nil {
		return resp, nil
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return nil, fmt.Errorf("decode %s %s response: %w", method, path, err)
	}
	return resp, nil
}

func responseError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body api.ErrorBody
	if json.Unmarshal(data, &body) == nil && body.Message != "" {
		code := body.Code()
		if code == "" {
			code = resp.Header.Get("iothub-errorcode")
		}
		return &Error{StatusCode: resp.StatusCode, Code: code, Message: body.Text()}
	}
	return &Error{StatusCode: resp.StatusCode, Code: resp.Header.Get("iothub-errorcode"), Message: strings.TrimSpace(string(data))}
}

func devicePath(id string) string { return "/devices/" + url.PathEscape(id) }

// CreateDevice creates a device identity; empty keys are generated by the hub.
func (c *Client) CreateDevice(ctx context.Context, d api.Device) (api.Device, error) {
	var out api.Device
	_, err := c.do(ctx, http.MethodPut, devicePath(d.DeviceID), nil, nil, d, &out)
	return out, err
}

// UpdateDevice replaces a device identity if its etag still matches ("*" or "" = always).
func (c *Client) UpdateDevice(ctx context.Context, d api.Device, etag string) (api.Device, error) {
	if etag == "" {
		etag = "*"
	}
	var out api.Device
	_, err := c.do(ctx, http.MethodPut, devicePath(d.DeviceID), nil, map[string]string{"If-Match": quote(etag)}, d, &out)
	return out, err
}

// GetDevice returns a device identity.
func (c *Client) GetDevice(ctx context.Context, id string) (api.Device, error) {
	var out api.Device
	_, err := c.do(ctx, http.MethodGet, devicePath(id), nil, nil, nil, &out)
	return out, err
}

// ListDevices returns up to 1000 device identities.
func (c *Client) ListDevices(ctx context.Context) ([]api.Device, error) {
	var out []api.Device
	_, err := c.do(ctx, http.MethodGet, "/devices/", nil, nil, nil, &out)
	return out, err
}

// DeleteDevice deletes a device identity if its etag still matches ("*" or "" = always).
func (c *Client) DeleteDevice(ctx context.Context, id, etag string) error {
	if etag == "" {
		etag = "*"
	}
	resp, err := c.do(ctx, http.MethodDelete, devicePath(id), nil, map[string]string{"If-Match": quote(etag)}, nil, nil)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

func quote(etag string) string {
	if etag == "*" || strings.HasPrefix(etag, `"`) {
		return etag
	}
	return `"` + etag + `"`
}

// Partitions describes the partitions of the built-in endpoint.
func (c *Client) Partitions(ctx context.Context) ([]api.PartitionInfo, error) {
	var out []api.PartitionInfo
	_, err := c.do(ctx, http.MethodGet, "/messages/events/partitions", nil, nil, nil, &out)
	return out, err
}

// ReadOptions select what ReadEvents reads.
type ReadOptions struct {
	// From is "start", "end" (the default), a sequence number, or an RFC 3339 time. With
	// Resume, it applies only to partitions where the consumer group has no checkpoint.
	From string
	// ConsumerGroup is the group the reader belongs to ("" = $Default); it must exist.
	ConsumerGroup string
	// Resume starts each partition after the group's checkpoint (see Checkpointer).
	Resume bool
	// Device, when set, reads only that device's messages (from its partition).
	Device string
	// Partition, when not nil, reads only that partition.
	Partition *int
	// Raw reads the whole log before routing, each event with its matched routes and endpoints,
	// instead of the built-in endpoint (needs RegistryWrite and ServiceConnect).
	Raw bool
	// SkipProperties leaves each event's SystemProperties and Properties nil, for a reader that
	// does not look at them: decoding them is most of a reader's work per event. The hub sends
	// them all the same.
	SkipProperties bool
}

// ReadEvents streams events from the built-in endpoint to fn until ctx ends, fn returns an
// error (which ReadEvents returns), or the hub ends the stream (an *Error if it ended it
// because of a failure, e.g. the reader fell behind retention). The hub sends no faster than
// fn consumes: a slow fn holds the stream back and costs the hub no memory. Each event is fn's
// to keep; a reader that keeps none can use OpenEvents, which reuses them.
func (c *Client) ReadEvents(ctx context.Context, opts ReadOptions, fn func(api.Event) error) error {
	s, err := c.OpenEvents(ctx, opts)
	if err != nil {
		return err
	}
	defer s.Close()
	for {
		var ev api.Event
		if err := s.next(&ev, false); err != nil {
			if errors.Is(err, io.EOF) {
				return ctx.Err()
			}
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// EventStream is an open stream of the built-in endpoint's events: OpenEvents opens it, Next
// reads it one event at a time, Close ends it. It is for one goroutine.
type EventStream struct {
	ctx    context.Context
	body   io.ReadCloser
	sc     *bufio.Scanner // NDJSON, from a hub that did not send the binary form
	frames *frameReader   // api.EventStreamBinary
	raw    bool
	dec    *eventDecoder
	ev     api.Event
}

// OpenEvents opens the event stream of the built-in endpoint that ReadEvents reads; the stream
// ends with ctx, with Close, or when the hub ends it.
func (c *Client) OpenEvents(ctx context.Context, opts ReadOptions) (*EventStream, error) {
	q := url.Values{}
	if opts.From != "" {
		q.Set("from", opts.From)
	}
	if opts.Device != "" {
		q.Set("device", opts.Device)
	}
	if opts.Partition != nil {
		q.Set("partition", strconv.Itoa(*opts.Partition))
	}
	if opts.ConsumerGroup != "" {
		q.Set("consumerGroup", opts.ConsumerGroup)
	}
	if opts.Resume {
		q.Set("resume", "true")
	}
	if opts.Raw {
		q.Set("raw", "true")
	}
	// The binary form costs both ends a fraction of NDJSON's; a hub without it sends NDJSON.
	accept := map[string]string{"Accept": api.EventStreamBinary + ", application/x-ndjson;q=0.5"}
	resp, err := c.do(ctx, http.MethodGet, "/messages/events", q, accept, nil, nil)
	if err != nil {
		return nil, err
	}
	s := &EventStream{ctx: ctx, body: resp.Body, raw: opts.Raw, dec: newEventDecoder(opts.SkipProperties)}
	if typ, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); typ == api.EventStreamBinary {
		s.frames = newFrameReader(resp.Body)
	} else {
		s.sc = bufio.NewScanner(resp.Body)
		s.sc.Buffer(make([]byte, 64<<10), 4<<20) // an event carries up to 256 KB of body, base64 or escaped
	}
	return s, nil
}

// Next returns the next event, waiting for it. The event is the stream's: the next call
// overwrites it, its maps, lists and the string Body points to; its strings are the caller's
// to keep. The error is io.EOF when the hub ended the stream normally, an *Error when it ended
// it because of a failure (e.g. the reader fell behind retention), and ctx's error once ctx
// ends.
func (s *EventStream) Next() (*api.Event, error) {
	if err := s.next(&s.ev, true); err != nil {
		return nil, err
	}
	return &s.ev, nil
}

func (s *EventStream) next(ev *api.Event, reuse bool) error {
	if s.frames != nil {
		return s.nextFrame(ev, reuse)
	}
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue // heartbeat
		}
		streamErr, err := s.dec.decode(line, ev, reuse)
		if err != nil {
			if s.ctx.Err() != nil { // cancelled mid-line: the scanner hands over the partial line
				return s.ctx.Err()
			}
			return fmt.Errorf("decode event: %w", err)
		}
		if streamErr != nil { // the hub ended the stream and says why
			return &Error{StatusCode: streamErr.Status, Code: streamErr.Code(), Message: streamErr.Text()}
		}
		return nil
	}
	if err := s.ctx.Err(); err != nil {
		return err
	}
	if err := s.sc.Err(); err != nil {
		return fmt.Errorf("read event stream: %w", err)
	}
	return io.EOF
}

func (s *EventStream) nextFrame(ev *api.Event, reuse bool) error {
	for {
		kind, payload, err := s.frames.next()
		if err != nil {
			if cerr := s.ctx.Err(); cerr != nil {
				return cerr
			}
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return fmt.Errorf("read event stream: %w", err)
		}
		ok, streamErr, err := s.dec.decodeFrame(kind, payload, s.raw, ev, reuse)
		switch {
		case err != nil:
			return fmt.Errorf("decode event: %w", err)
		case streamErr != nil: // the hub ended the stream and says why
			return &Error{StatusCode: streamErr.Status, Code: streamErr.Code(), Message: streamErr.Text()}
		case ok:
			return nil
		}
	}
}

// Close ends the stream.
func (s *EventStream) Close() error { return s.body.Close() }
