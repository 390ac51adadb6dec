package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Server is the MQTT device endpoint. It is safe for concurrent use.
type Server struct {
	hub  Hub
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	byID      map[identity]*conn // the live connection of each identity, for takeover
	wg        sync.WaitGroup     // one count per tracked connection

	readers sync.Pool // *bufio.Reader of readBufferSize, shared by TLS connections (see conn.poolsReader)
	poller  *poller   // watches parked connections; nil where parking is not supported
}

// identity is a device or module; one connection per identity is allowed.
type identity struct{ device, module string }

// NewServer returns a Server that asks hub to admit connections and store messages.
func NewServer(hub Hub, opts Options) *Server {
	opts = opts.withDefaults()
	return &Server{
		hub:       hub,
		opts:      opts,
		log:       opts.Logger,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		byID:      make(map[identity]*conn),
		poller:    newPoller(opts.Logger),
	}
}

// Serve accepts connections on ln until ln is closed, ctx is done or Shutdown is called, and
// serves each on its own goroutine, which an idle connection gives up (Options.ParkAfter).
// TLS, if any, is the listener's (a tls.Listener); the handshake runs on the connection's
// goroutine, bounded by Options.ConnectTimeout. transport
// is passed to the hub ("mqtt" or "mqtt-ws"). Cancelling ctx closes the listener and aborts
// the connections served from it at once; call Shutdown first to drain them. Serve returns nil
// after ctx is done or Shutdown, otherwise the listener's error.
func (s *Server) Serve(ctx context.Context, ln net.Listener, transport string) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	// One hook per listener, not one per connection: each costs an entry in ctx's children.
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		s.abortOrphans()
	})
	defer stop()

	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || s.isClosing() {
				return nil
			}
			// Like net/http: out of file descriptors and similar conditions pass; wait and retry.
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("mqtt: accept failed; retrying", "addr", ln.Addr().String(), "err", err, "retry_in", delay)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
				}
				continue
			}
			return fmt.Errorf("mqtt: accept on %s: %w", ln.Addr(), err)
		}
		delay = 0
		go s.serveConn(ctx, nc, transport, true)
	}
}

// ServeConn serves one connection (the WebSocket adapter hands its connections here) and
// returns when it has ended: the hub's Device.Disconnected has returned and nc is closed.
// Cancelling ctx aborts the connection.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn, transport string) {
	s.serveConn(ctx, nc, transport, false)
}

// serveConn serves nc until it ends or, for a connection Serve accepted, until it parks: then
// a reader goroutine started by the poller, a timer or a close carries on (see conn.park).
// Serve aborts its own connections when its context is done; ServeConn's get a hook each.
func (s *Server) serveConn(ctx context.Context, nc net.Conn, transport string, accepted bool) {
	s.mu.Lock()
	// Checked under s.mu: abortOrphans, which runs after ctx is done, sees c or this sees ctx.
	if s.closing || accepted && ctx.Err() != nil {
		s.mu.Unlock()
		nc.Close()
		return
	}
	c := newConn(ctx, s, nc, transport)
	c.accepted = accepted
	c.parks = accepted && s.poller != nil && s.opts.ParkAfter > 0 && c.lazyRead
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	c.serve()
}

// abortOrphans closes the connections accepted by a Serve whose context is done.
func (s *Server) abortOrphans() {
	s.mu.Lock()
	var victims []*conn
	for c := range s.conns {
		if c.accepted && c.parent.Err() != nil {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	for _, c := range victims {
		c.close(reasonAborted, c.parent.Err())
	}
}

// untrack forgets a connection that has ended.
func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, stops reading from every connection, lets the QoS 1 publishes
// already submitted become durable and PUBACKs them, then closes the connections and waits for
// them to end. When ctx is done first, it closes the remaining connections at once (their
// pending publishes are not acknowledged; the devices send them again) and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := s.snapshotLocked()
	s.mu.Unlock()

	for _, c := range conns {
		c.stop(reasonShutdown)
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	conns = s.snapshotLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.close(reasonShutdown, ctx.Err())
	}
	<-done
	return fmt.Errorf("mqtt: shutdown: %w", ctx.Err())
}

func (s *Server) snapshotLocked() []*conn {
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// Connections returns the number of connections being served, including those not yet past
// CONNECT.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Parked returns the number of connections that wait for their next packet without a
// goroutine (Options.ParkAfter).
func (s *Server) Parked() int { return s.poller.count() }

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Disconnect closes the live connections of an identity, as IoT Hub does when an identity is
// disabled or deleted: with moduleID "" the device's own connection and its modules' (they go
// with it), otherwise only that module's. Pending PUBACKs are not sent: the identity no longer
// may store anything. It reports how many connections it closed.
func (s *Server) Disconnect(deviceID, moduleID string) int {
	s.mu.Lock()
	var victims []*conn
	for id, c := range s.byID {
		if id.device == deviceID && (moduleID == "" || id.module == moduleID) {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	for _, c := range victims {
		c.close(reasonRevoked, nil)
	}
	return len(victims)
}

// register makes c the live connection of its identity and returns the one it replaces.
func (s *Server) register(c *conn) *conn {
	id := identity{c.deviceID, c.moduleID}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.byID[id]
	s.byID[id] = c
	return old
}

func (s *Server) unregister(c *conn) {
	id := identity{c.deviceID, c.moduleID}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID[id] == c {
		delete(s.byID, id)
	}
}
