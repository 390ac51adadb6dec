package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The histogram is log-linear, like HdrHistogram with two significant digits: values below
// 2^subBits are counted exactly, and every power-of-two range above is split into 2^subBits
// equal buckets, so a recorded value is reported with a relative error below 2^-subBits
// (0.8 %). Values are nanoseconds; everything from 2^maxExp ns (about 18 minutes) up shares
// the last bucket, while Max stays exact.
const (
	subBits    = 7
	subCount   = 1 << subBits
	maxExp     = 40
	numBuckets = (maxExp-subBits)*subCount + subCount
)

// Histogram counts non-negative durations. Record is safe for concurrent use and allocates
// nothing; a run gives each group of connections its own Histogram (a shard) and merges them at
// the end, so the hot path never contends on a cache line across many cores.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	total  atomic.Uint64
	sum    atomic.Uint64 // ns; wraps after 584 years of recorded latency
	max    atomic.Int64
	min    atomic.Int64 // stored as value+1 so that zero means "none yet"
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{} }

// bucketOf returns the bucket index of v (v >= 0).
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	k := bits.Len64(uint64(v)) - 1 // 2^k <= v < 2^(k+1), k >= subBits
	if k >= maxExp {
		return numBuckets - 1
	}
	shift := k - subBits
	return shift*subCount + int(v>>shift)
}

// bucketRange returns the smallest and largest value counted in bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < 2*subCount {
		return int64(i), int64(i)
	}
	shift := i/subCount - 1
	lo = int64(i%subCount+subCount) << shift
	return lo, lo + 1<<shift - 1
}

// Record counts one value; negative values count as zero.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.total.Add(1)
	h.sum.Add(uint64(v))
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
	for {
		m := h.min.Load()
		if (m != 0 && v+1 >= m) || h.min.CompareAndSwap(m, v+1) {
			break
		}
	}
}

// RecordDuration records d.
func (h *Histogram) RecordDuration(d time.Duration) { h.Record(int64(d)) }

// Merge adds every count of o to h. It is meant for the end of a run, when o is quiescent.
func (h *Histogram) Merge(o *Histogram) {
	if o.total.Load() == 0 {
		return
	}
	for i := range o.counts {
		if n := o.counts[i].Load(); n != 0 {
			h.counts[i].Add(n)
		}
	}
	h.total.Add(o.total.Load())
	h.sum.Add(o.sum.Load())
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
	if m := o.min.Load(); m != 0 && (h.min.Load() == 0 || m < h.min.Load()) {
		h.min.Store(m)
	}
}

// Count returns how many values were recorded.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Max returns the largest recorded value exactly (0 when empty).
func (h *Histogram) Max() int64 { return h.max.Load() }

// Min returns the smallest recorded value exactly (0 when empty).
func (h *Histogram) Min() int64 {
	if m := h.min.Load(); m != 0 {
		return m - 1
	}
	return 0
}

// Mean returns the exact mean of the recorded values (0 when empty).
func (h *Histogram) Mean() float64 {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}

// Quantile returns the value below or at which a fraction q (0..1) of the recorded values
// lie: the largest value of the bucket holding the ceil(q*count)-th smallest value, as
// HdrHistogram reports it, but never above the exact maximum. It returns 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			if i == numBuckets-1 {
				return h.Max() // the last bucket also holds everything beyond the range
			}
			_, hi := bucketRange(i)
			return min(hi, h.Max())
		}
	}
	return h.Max()
}

// Percentiles are a histogram's summary, in milliseconds.
type Percentiles struct {
	Count uint64  `json:"count"`
	Min   float64 `json:"minMs"`
	Mean  float64 `json:"meanMs"`
	P50   float64 `json:"p50Ms"`
	P90   float64 `json:"p90Ms"`
	P99   float64 `json:"p99Ms"`
	P999  float64 `json:"p999Ms"`
	Max   float64 `json:"maxMs"`
}

// Summary returns the percentiles reported by a run.
func (h *Histogram) Summary() Percentiles {
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	return Percentiles{
		Count: h.Count(),
		Min:   ms(h.Min()),
		Mean:  h.Mean() / 1e6,
		P50:   ms(h.Quantile(0.50)),
		P90:   ms(h.Quantile(0.90)),
		P99:   ms(h.Quantile(0.99)),
		P999:  ms(h.Quantile(0.999)),
		Max:   ms(h.Max()),
	}
}
