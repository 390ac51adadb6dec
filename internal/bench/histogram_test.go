package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

func TestBucketsCoverEveryValueOnce(t *testing.T) {
	// Every value maps to a bucket whose range contains it, and the ranges tile the line.
	next := int64(0)
	for i := 0; i < numBuckets; i++ {
		lo, hi := bucketRange(i)
		if lo != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, lo, next)
		}
		if hi < lo {
			t.Fatalf("bucket %d: [%d, %d]", i, lo, hi)
		}
		for _, v := range []int64{lo, hi, lo + (hi-lo)/2} {
			if got := bucketOf(v); got != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", v, got, i)
			}
		}
		if lo >= 2*subCount {
			if rel := float64(hi-lo) / float64(lo); rel >= 1.0/subCount {
				t.Fatalf("bucket %d [%d, %d]: relative width %g", i, lo, hi, rel)
			}
		}
		next = hi + 1
	}
	if next != 1<<maxExp {
		t.Fatalf("buckets end at %d, want %d", next, int64(1)<<maxExp)
	}
	if bucketOf(math.MaxInt64) != numBuckets-1 || bucketOf(1<<maxExp) != numBuckets-1 {
		t.Fatal("huge values must land in the last bucket")
	}
}

func TestQuantilesMatchExactWithinResolution(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	h := NewHistogram()
	vals := make([]int64, 100_000)
	for i := range vals {
		// Log-normal-ish latencies from 10 µs to seconds.
		vals[i] = int64(math.Exp(rng.NormFloat64()*1.5 + 13))
		h.Record(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := max(int(math.Ceil(q*float64(len(vals)))), 1)
		exact := vals[rank-1]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/subCount+1 {
			t.Errorf("q=%g: got %d, exact %d", q, got, exact)
		}
	}
	if h.Count() != uint64(len(vals)) || h.Max() != vals[len(vals)-1] || h.Min() != vals[0] {
		t.Errorf("count %d max %d min %d; want %d %d %d", h.Count(), h.Max(), h.Min(), len(vals), vals[len(vals)-1], vals[0])
	}
	var sum float64
	for _, v := range vals {
		sum += float64(v)
	}
	if mean := sum / float64(len(vals)); math.Abs(h.Mean()-mean) > 1 {
		t.Errorf("mean %g, want %g", h.Mean(), mean)
	}
	s := h.Summary()
	if !(s.Min <= s.P50 && s.P50 <= s.P90 && s.P90 <= s.P99 && s.P99 <= s.P999 && s.P999 <= s.Max) {
		t.Errorf("percentiles out of order: %+v", s)
	}
}

func TestHistogramSmallAndEdgeCases(t *testing.T) {
	h := NewHistogram()
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Min() != 0 || h.Mean() != 0 || h.Summary().Count != 0 {
		t.Fatal("empty histogram must report zeros")
	}
	for _, v := range []int64{5, 1, 3, -7} { // -7 counts as 0
		h.Record(v)
	}
	for q, want := range map[float64]int64{0: 0, 0.25: 0, 0.5: 1, 0.75: 3, 1: 5} {
		if got := h.Quantile(q); got != want {
			t.Errorf("Quantile(%g) = %d, want %d", q, got, want)
		}
	}
	// Above the tracked range: the quantile is capped by the exact max.
	big := NewHistogram()
	big.Record(1 << 50)
	if got := big.Quantile(0.5); got != 1<<50 {
		t.Errorf("huge value: quantile %d", got)
	}
}

func TestHistogramConcurrentRecordAndMerge(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	var wg sync.WaitGroup
	for g := range 8 {
		h := a
		if g%2 == 1 {
			h = b
		}
		wg.Go(func() {
			for i := range 10_000 {
				h.Record(int64(i + g))
			}
		})
	}
	wg.Wait()
	m := NewHistogram()
	m.Merge(a)
	m.Merge(b)
	m.Merge(NewHistogram())
	if m.Count() != 80_000 || m.Max() != 9_999+7 || m.Min() != 0 {
		t.Fatalf("merged: count %d max %d min %d", m.Count(), m.Max(), m.Min())
	}
	if p50 := m.Quantile(0.5); p50 < 4900 || p50 > 5100 {
		t.Fatalf("merged p50 %d", p50)
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	h := NewHistogram()
	if n := testing.AllocsPerRun(1000, func() { h.Record(123456) }); n != 0 {
		t.Fatalf("Record allocates %g times", n)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := NewHistogram()
	v := int64(1)
	for b.Loop() {
		h.Record(v)
		v = v*7 + 13&0xffffff
	}
}
