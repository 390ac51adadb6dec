// Package wsconn carries a stream protocol over WebSocket on an HTTP server: IoT Hub's MQTT over
// WebSocket at /$iothub/websocket (subprotocol "mqtt", binary messages, wire notes §9). The
// Handler upgrades a request and hands the connection, as a net.Conn, to the same code that
// serves TLS connections.
//
// The net.Conn keeps net.Conn's deadline semantics, which the MQTT server relies on: a read
// deadline ends a blocked Read with an error matching os.ErrDeadlineExceeded and leaves the
// connection open for writing (graceful shutdown stops reading, then sends the remaining
// PUBACKs). github.com/coder/websocket's own NetConn closes the whole connection when a deadline
// passes during a read, so deadlines here go to the hijacked connection underneath instead, and
// the WebSocket library is only ever called with a context that is never cancelled (which also
// means it starts no timers or goroutines of its own).
//
// permessage-deflate, which the Node SDK offers, is declined: MQTT telemetry is small and
// compression would cost every connection a compressor's memory.
package wsconn

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Subprotocol is the WebSocket subprotocol of MQTT (IoT Hub and the SDKs use it).
const Subprotocol = "mqtt"

// closeTimeout bounds the WebSocket close frame sent when a connection is closed; the peer's
// reply is not awaited.
const closeTimeout = 250 * time.Millisecond

// Handler upgrades requests offering Subprotocol and calls Serve with each connection on the
// request's goroutine.
type Handler struct {
	// Serve serves one connection and returns when it has ended and is closed. It runs with
	// Context, not the request's context: cancelling Context aborts the connections.
	Serve   func(ctx context.Context, nc net.Conn)
	Context context.Context
	Logger  *slog.Logger
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	logger := h.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if !offers(r.Header, Subprotocol) {
		logger.Info("websocket: refused a client that does not offer the mqtt subprotocol",
			"remote", r.RemoteAddr, "offered", r.Header.Values("Sec-WebSocket-Protocol"))
		http.Error(w, "the WebSocket subprotocol must be mqtt", http.StatusBadRequest)
		return
	}
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{
		Subprotocols: []string{Subprotocol},
		// Devices authenticate inside the protocol (MQTT CONNECT), never with cookies, so a
		// browser page of any origin is no cross-site risk.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		// Accept has answered the request.
		logger.Info("websocket: upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	if hw.raw == nil { // cannot happen: Accept succeeds only after hijacking
		ws.CloseNow()
		return
	}
	ctx := h.Context
	if ctx == nil {
		ctx = context.Background()
	}
	h.Serve(ctx, newConn(ws, hw.raw))
}

// offers reports whether the request lists proto in Sec-WebSocket-Protocol.
func offers(hdr http.Header, proto string) bool {
	for _, v := range hdr.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == proto {
				return true
			}
		}
	}
	return false
}

// hijackWriter records the connection the WebSocket library hijacks.
type hijackWriter struct {
	http.ResponseWriter
	raw net.Conn
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.raw = nc
	}
	return nc, brw, err
}

// aLongTimeAgo is a deadline that has always passed.
var aLongTimeAgo = time.Unix(1, 0)

// conn is a WebSocket connection as a net.Conn carrying a byte stream in binary messages.
type conn struct {
	ws  *websocket.Conn
	raw net.Conn // the hijacked connection: deadlines are set here
	r   io.Reader

	mu      sync.Mutex // orders deadline changes against Close
	closing bool
}

func newConn(ws *websocket.Conn, raw net.Conn) *conn {
	ws.SetReadLimit(-1) // a stream: the protocol on top bounds its packets
	return &conn{ws: ws, raw: raw}
}

// Read reads the payloads of binary messages as one stream. A close frame with status normal or
// going away reads as io.EOF; a text message is a protocol error.
func (c *conn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.Reader(context.Background())
			if err != nil {
				switch websocket.CloseStatus(err) {
				case websocket.StatusNormalClosure, websocket.StatusGoingAway:
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.MessageBinary {
				return 0, errors.New("websocket: text message on a binary stream")
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (c *conn) Write(p []byte) (int, error) {
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close sends a close frame, waiting at most closeTimeout for it to be written, and closes the
// connection without waiting for the peer's reply. Blocked reads and writes return.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closing = true
	// A blocked writer gives up the write lock by closeTimeout; the close handshake's wait for
	// the peer's close frame fails at once.
	c.raw.SetWriteDeadline(time.Now().Add(closeTimeout))
	c.raw.SetReadDeadline(aLongTimeAgo)
	c.mu.Unlock()
	// The handshake is cut short on purpose, so its error says nothing; ws.Close has closed raw
	// in every path, closing it again only makes sure.
	_ = c.ws.Close(websocket.StatusNormalClosure, "")
	_ = c.raw.Close()
	return nil
}

func (c *conn) LocalAddr() net.Addr  { return c.raw.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return net.ErrClosed
	}
	return c.raw.SetReadDeadline(t)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return net.ErrClosed
	}
	return c.raw.SetWriteDeadline(t)
}
