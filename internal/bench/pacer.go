package bench

// Pacer spaces events at a fixed interval on an absolute schedule, so a writer that sleeps a
// little too long catches up instead of drifting below the rate. A writer that falls far behind
// (the window is full, the network blocks) catches up by at most Burst events in a row; beyond
// that the schedule slips, so a stall is not followed by an unbounded burst.
//
// Times are nanoseconds on any monotonic clock. The zero Interval means no pacing.
type Pacer struct {
	Interval int64 // ns between events; 0 = as fast as possible
	Burst    int64 // events a late writer may send back to back; < 1 means 1
	next     int64 // scheduled time of the next event
}

// NewPacer returns a pacer whose first event is due at start.
func NewPacer(interval, start int64, burst int64) *Pacer {
	return &Pacer{Interval: interval, Burst: burst, next: start}
}

// Reserve takes the next slot of the schedule and returns how long to wait, from now, until
// it is due (0 if it is due already).
func (p *Pacer) Reserve(now int64) int64 {
	if p.Interval <= 0 {
		return 0
	}
	burst := max(p.Burst, 1)
	if floor := now - (burst-1)*p.Interval; p.next < floor {
		p.next = floor // too far behind: slip the schedule
	}
	wait := p.next - now
	p.next += p.Interval
	return max(wait, 0)
}

// intervalFor returns the per-connection interval in ns for a total rate (events per second)
// spread over n connections; 0 for rate <= 0.
func intervalFor(rate float64, n int) int64 {
	if rate <= 0 || n <= 0 {
		return 0
	}
	iv := float64(n) * 1e9 / rate
	return max(int64(iv), 1)
}
