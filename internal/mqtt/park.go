package mqtt

import (
	"errors"
	"time"
)

// errParked ends a reader whose connection parked: the connection lives on without it.
var errParked = errors.New("parked")

// park gives up the reader goroutine of a connection that has waited Options.ParkAfter for a
// packet, so that an idle device costs no goroutine stack and no read buffer. The socket is
// watched by the server's poller, which also keeps the keep-alive deadline; whichever comes
// first, the socket becoming readable (or hanging up), the deadline, or close or stop (wake),
// starts a new reader, which waits for the same packet by the same deadline. park reports
// false, and the reader carries on, when the connection cannot park: it is ending, or the
// poller failed.
func (c *conn) park() bool {
	// The socket's deadline has passed: the reader after this one sets it again, as does this
	// one if parking fails, which then waits for the packet without trying to park again.
	c.parkAt = time.Time{}
	c.readSet = time.Time{}
	if c.br != nil && c.br.Buffered() > 0 {
		return false // nothing is buffered when a packet is awaited; never give away data
	}
	c.releaseReader()
	parked, err := c.s.poller.park(c)
	if err != nil {
		c.logger().Warn("mqtt: cannot park an idle connection; its goroutine waits instead", "err", err)
	}
	return parked
}

// wake starts a reader for a parked connection, so that it sees what ended or stopped it.
func (c *conn) wake() {
	if c.parks && c.s.poller.unpark(c) {
		go c.resume()
	}
}

// resume is a parked connection's next reader.
func (c *conn) resume() { c.read(nil, true) }
