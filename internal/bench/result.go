package bench

import (
	"fmt"
	"io"
	"strings"
)

// Result is what a run measured. Counts and rates cover the measured period only (publishes
// sent after the warm-up and before the end), except the *All counts.
type Result struct {
	// Conditions.
	Mode        string  `json:"mode,omitempty"` // "" (device→cloud telemetry) or "c2d"
	Target      string  `json:"target"`
	Broker      string  `json:"broker"`
	Transport   string  `json:"transport"` // "tcp" or "tls"
	Devices     int     `json:"devices"`
	QoS         int     `json:"qos"`
	Window      int     `json:"window"`
	Size        int     `json:"size"`
	Rate        float64 `json:"rate"` // requested total publishes/s; 0 = as fast as possible
	Duration    float64 `json:"durationSec"`
	Warmup      float64 `json:"warmupSec"`
	Measured    float64 `json:"measuredSec"` // shorter than Duration when interrupted
	Interrupted bool    `json:"interrupted,omitempty"`
	GOMAXPROCS  int     `json:"gomaxprocs"`
	NumCPU      int     `json:"numCPU"`

	Connect ConnectResult `json:"connect"`

	Sent     int64 `json:"sent"`
	Acked    int64 `json:"acked"`   // QoS 1
	Unacked  int64 `json:"unacked"` // QoS 1: sent but not acknowledged within the drain period
	SentAll  int64 `json:"sentAll"` // including the warm-up
	AckedAll int64 `json:"ackedAll"`
	// MsgsPerSec is the throughput: QoS 1, publishes of the measured period acknowledged, per
	// second of it; QoS 0, every publish of the run (warm-up included) over the time from the
	// start until the broker had read them all and closed the last connection (when it did, else
	// the send rate).
	MsgsPerSec float64 `json:"msgsPerSec"`
	MBPerSec   float64 `json:"mbPerSec"`   // the same in payload bytes, 10^6 per MB
	SentPerSec float64 `json:"sentPerSec"` // publishes written in the measured period, per second

	Puback *Percentiles `json:"pubackLatency,omitempty"`
	E2E    *E2EResult   `json:"e2e,omitempty"`
	// C2D is the cloud-to-device mode's result; there Sent and SentAll count service API
	// sends and MsgsPerSec and MBPerSec count completions (the devices' PUBACKs).
	C2D *C2DResult `json:"c2d,omitempty"`

	Disconnects     int    `json:"disconnects"` // connections the broker or network ended during the run
	FirstDisconnect string `json:"firstDisconnect,omitempty"`
	StrayAcks       int64  `json:"strayAcks"` // PUBACKs for no unacknowledged publish
	Stuck           int    `json:"stuck"`     // connections whose writes blocked past the drain period
	// DrainSec is how long after the end the broker had read everything and closed the last
	// connection (after DISCONNECT): near zero unless it was behind, as with a QoS 0 flood.
	DrainSec  float64 `json:"drainSec"`
	Undrained int     `json:"undrained"` // connections the broker had not closed within the drain period

	CPU *CPUResult `json:"cpu,omitempty"`
}

// ConnectResult describes the connection phase.
type ConnectResult struct {
	Attempted  int         `json:"attempted"`
	Connected  int         `json:"connected"`
	Failed     int         `json:"failed"`
	Seconds    float64     `json:"seconds"`
	PerSec     float64     `json:"perSec"`
	Latency    Percentiles `json:"latency"` // dial + TLS + CONNECT→CONNACK
	FirstError string      `json:"firstError,omitempty"`
}

// E2EResult is the device→reader latency through the built-in endpoint.
type E2EResult struct {
	Expected int64       `json:"expected"` // messages the broker accepted in the measured period
	Received int64       `json:"received"` // of those, read from the endpoint within the drain period
	Latency  Percentiles `json:"latency"`
	Error    string      `json:"error,omitempty"`
}

// CPUResult is this process's CPU time over the measured period.
type CPUResult struct {
	User         float64 `json:"userSec"`
	System       float64 `json:"systemSec"`
	Cores        float64 `json:"cores"`        // CPU seconds per second
	MicrosPerMsg float64 `json:"microsPerMsg"` // CPU µs per publish sent
}

// WriteText prints the result for people.
// writeConnectText writes the connect phase, what each device did in it ("connected"), and
// whether the run was interrupted.
func (r *Result) writeConnectText(b *strings.Builder, did string) {
	c := r.Connect
	fmt.Fprintf(b, "connect:      %d/%d %s in %.2fs (%.0f/s); per connection %s\n",
		c.Connected, c.Attempted, did, c.Seconds, c.PerSec, formatPercentiles(c.Latency))
	if c.Failed > 0 {
		fmt.Fprintf(b, "              %d failed; first: %s\n", c.Failed, c.FirstError)
	}
	if r.Interrupted {
		fmt.Fprintf(b, "interrupted:  measured %.2fs of %gs\n", r.Measured, r.Duration)
	}
}

func (r *Result) WriteText(w io.Writer) error {
	if r.C2D != nil {
		return r.writeC2DText(w)
	}
	var b strings.Builder
	rate := "as fast as possible"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%g msgs/s total", r.Rate)
	}
	fmt.Fprintf(&b, "target:       %s (%s, MQTT over %s)\n", r.Target, r.Broker, strings.ToUpper(r.Transport))
	fmt.Fprintf(&b, "conditions:   %d devices, QoS %d, window %d, %d-byte payload, %s, %gs measured after %gs warm-up, GOMAXPROCS %d (%d CPUs)\n",
		r.Devices, r.QoS, r.Window, r.Size, rate, r.Duration, r.Warmup, r.GOMAXPROCS, r.NumCPU)
	r.writeConnectText(&b, "connected")
	if r.QoS == 1 {
		fmt.Fprintf(&b, "messages:     %d sent, %d acknowledged, %d unacknowledged\n", r.Sent, r.Acked, r.Unacked)
	} else {
		fmt.Fprintf(&b, "messages:     %d sent (QoS 0: no acknowledgement)\n", r.Sent)
	}
	fmt.Fprintf(&b, "throughput:   %.0f msgs/s, %.2f MB/s payload", r.MsgsPerSec, r.MBPerSec)
	if r.QoS == 0 {
		fmt.Fprintf(&b, " read by the broker (whole run, until it closed the last connection); sending ran at %.0f msgs/s", r.SentPerSec)
	}
	b.WriteString("\n")
	if r.Puback != nil {
		fmt.Fprintf(&b, "PUBACK:       %s\n", formatPercentiles(*r.Puback))
	}
	if e := r.E2E; e != nil {
		fmt.Fprintf(&b, "end to end:   %s; %d of %d read back\n", formatPercentiles(e.Latency), e.Received, e.Expected)
		if e.Error != "" {
			fmt.Fprintf(&b, "              reader: %s\n", e.Error)
		}
	}
	fmt.Fprintf(&b, "drain:        the broker closed the last connection %.2fs after the end", r.DrainSec)
	if r.Undrained > 0 {
		fmt.Fprintf(&b, "; %d connections not closed within the drain period", r.Undrained)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "errors:       %d disconnects, %d connect failures, %d stray PUBACKs, %d stuck writers\n",
		r.Disconnects, r.Connect.Failed, r.StrayAcks, r.Stuck)
	return r.finishText(&b, w, "message")
}

// finishText writes the first disconnect and the tool's CPU per what (a message, a message
// sent) after b, and b to w.
func (r *Result) finishText(b *strings.Builder, w io.Writer, what string) error {
	if r.FirstDisconnect != "" {
		fmt.Fprintf(b, "              first disconnect: %s\n", r.FirstDisconnect)
	}
	if r.CPU != nil {
		fmt.Fprintf(b, "bench CPU:    %.2f cores (user %.2fs, system %.2fs), %.1f µs per %s\n",
			r.CPU.Cores, r.CPU.User, r.CPU.System, r.CPU.MicrosPerMsg, what)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatPercentiles(p Percentiles) string {
	if p.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (%d samples)",
		ms(p.P50), ms(p.P90), ms(p.P99), ms(p.P999), ms(p.Max), p.Count)
}

// ms formats milliseconds with three significant digits.
func ms(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	case v >= 1:
		return fmt.Sprintf("%.2fms", v)
	}
	return fmt.Sprintf("%.0fµs", v*1000)
}
