package mqtt

import (
	"container/heap"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// poller watches the sockets of parked connections with an epoll instance of its own (the Go
// runtime's poller only wakes goroutines blocked in a read, which is what parking gives up)
// and resumes a connection when its socket becomes readable or hangs up, or when the packet
// it waits for is overdue (one timer for all of them). The epoll instance and its goroutine
// exist only while connections are parked.
type poller struct {
	log *slog.Logger

	mu      sync.Mutex
	epfd    int              // -1 when no wait goroutine runs
	parked  map[uint64]*conn // by token, the epoll event's data
	next    uint64           // the last token given
	running bool             // a wait goroutine runs (on epfd)
	due     byDeadline       // the parked connections, earliest deadline first
	timer   *time.Timer      // fires at due[0]'s deadline, or earlier
}

func newPoller(log *slog.Logger) *poller {
	return &poller{log: log, epfd: -1, parked: make(map[uint64]*conn)}
}

// waitTimeout is how long the wait goroutine blocks before it looks whether anything is still
// parked; when nothing is, it closes the epoll instance and exits.
const waitTimeout = time.Second

// park registers c's socket and resumes c by its packet's deadline (readBy) at the latest. It
// reports false when c is closing or stopping: then nothing wakes a parked reader any more, so
// it must not park.
func (p *poller) park(c *conn) (bool, error) {
	rc, err := rawConnOf(c.nc)
	if err != nil {
		return false, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.epfd < 0 {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return false, fmt.Errorf("epoll_create1: %w", err)
		}
		p.epfd = fd
	}
	p.next++
	token := p.next
	// One-shot: after an event the socket stays registered but disarmed, so a reader that is
	// running never gets events; the next park arms it again. Tokens are never reused, so an
	// event that races with a wake by close or timer finds no connection and is ignored. A
	// closed socket leaves the epoll set by itself.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(token), Pad: int32(token >> 32)}
	var ctlErr error
	err = rc.Control(func(fd uintptr) {
		ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		if errors.Is(ctlErr, unix.ENOENT) {
			ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err != nil {
		return false, nil // the connection is closed: its reader sees that on the next read
	}
	if ctlErr != nil {
		return false, fmt.Errorf("epoll_ctl: %w", ctlErr)
	}
	// close and stop change these before they call wake, which takes p.mu: seen here, or the
	// wake comes after this and finds c parked.
	if c.ctx.Err() != nil || c.stopping.Load() {
		return false, nil // the socket stays armed: an event for an unknown token is ignored
	}
	p.parked[token] = c
	c.parkToken = token
	heap.Push(&p.due, c)
	if p.due[0] == c {
		if p.timer == nil {
			p.timer = time.AfterFunc(time.Until(c.readBy), p.expire)
		} else {
			p.timer.Reset(time.Until(c.readBy))
		}
	}
	if !p.running {
		p.running = true
		go p.wait(p.epfd)
	}
	return true, nil
}

// unpark takes c out of the parked set; it reports whether c was parked, and so whether the
// caller must start its reader.
func (p *poller) unpark(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.parkToken == 0 {
		return false
	}
	p.forget(c)
	return true
}

// forget takes a parked connection out of the poller's sets; p.mu is held. The timer is left
// as it is: firing early finds nothing overdue and sets it again.
func (p *poller) forget(c *conn) {
	delete(p.parked, c.parkToken)
	heap.Remove(&p.due, c.parkIndex)
	c.parkToken = 0
}

// expire resumes the parked connections whose packet is overdue (the reader then times them
// out) and sets the timer for the next deadline.
func (p *poller) expire() {
	p.mu.Lock()
	var ready []*conn
	now := time.Now()
	for len(p.due) > 0 && !p.due[0].readBy.After(now) {
		c := p.due[0]
		p.forget(c)
		ready = append(ready, c)
	}
	if len(p.due) > 0 {
		p.timer.Reset(time.Until(p.due[0].readBy))
	}
	p.mu.Unlock()
	for _, c := range ready {
		go c.resume()
	}
}

// count returns the number of parked connections.
func (p *poller) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// wait resumes the connections whose sockets report events, until nothing is parked.
func (p *poller) wait(epfd int) {
	events := make([]unix.EpollEvent, 256)
	var ready []*conn
	for {
		n, err := unix.EpollWait(epfd, events, int(waitTimeout/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			p.fail(epfd, err)
			return
		}
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if c, ok := p.parked[token]; ok {
				p.forget(c)
				ready = append(ready, c)
			}
		}
		if len(p.parked) == 0 && len(ready) == 0 {
			unix.Close(epfd)
			p.epfd, p.running = -1, false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		for i, c := range ready {
			go c.resume()
			ready[i] = nil
		}
		ready = ready[:0]
	}
}

// fail resumes every parked connection after epoll_wait failed (it does not on a valid
// instance), so that none is left without a reader.
func (p *poller) fail(epfd int, err error) {
	p.log.Error("mqtt: waiting for parked connections failed; resuming them all", "err", err)
	p.mu.Lock()
	ready := make([]*conn, 0, len(p.parked))
	for _, c := range p.parked {
		p.forget(c)
		ready = append(ready, c)
	}
	unix.Close(epfd)
	p.epfd, p.running = -1, false
	p.mu.Unlock()
	for _, c := range ready {
		go c.resume()
	}
}

// rawConnOf returns the socket under a TCP or TLS-over-TCP connection.
func rawConnOf(nc net.Conn) (syscall.RawConn, error) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	tcp, ok := nc.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("cannot park a %T", nc)
	}
	return tcp.SyscallConn()
}

// byDeadline is a heap of parked connections by the deadline of the packet they wait for.
type byDeadline []*conn

func (h byDeadline) Len() int           { return len(h) }
func (h byDeadline) Less(i, j int) bool { return h[i].readBy.Before(h[j].readBy) }
func (h byDeadline) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].parkIndex, h[j].parkIndex = i, j
}
func (h *byDeadline) Push(x any) {
	c := x.(*conn)
	c.parkIndex = len(*h)
	*h = append(*h, c)
}
func (h *byDeadline) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
}
