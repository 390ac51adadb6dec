package telemetry

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

const benchRecord = 256

func benchLog(b *testing.B, noSync bool) *Log {
	b.Helper()
	l, err := Open(Options{Dir: b.TempDir(), Partitions: 4, NoSync: noSync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

// BenchmarkAppend: one goroutine, durable Append of 256-byte records.
func BenchmarkAppend(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		b.Run(fmt.Sprintf("NoSync=%v", noSync), func(b *testing.B) {
			l := benchLog(b, noSync)
			data := make([]byte, benchRecord)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(benchRecord)
			b.ResetTimer()
			for b.Loop() {
				if _, err := l.Append(ctx, "device-1", time.Time{}, data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkAppendParallel: 64 goroutines (one device each) appending durably;
// group commit makes this much faster than one fdatasync per record.
func BenchmarkAppendParallel(b *testing.B) {
	for _, parts := range []int{1, 4} {
		for _, noSync := range []bool{false, true} {
			b.Run(fmt.Sprintf("partitions=%d/NoSync=%v", parts, noSync), func(b *testing.B) {
				l, err := Open(Options{Dir: b.TempDir(), Partitions: parts, NoSync: noSync})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				var id atomic.Int64
				b.ReportAllocs()
				b.SetBytes(benchRecord)
				b.SetParallelism(max(1, 64/testingProcs()))
				b.ResetTimer()
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					key := fmt.Sprintf("device-%d", id.Add(1))
					data := make([]byte, benchRecord)
					ctx := context.Background()
					for pb.Next() {
						if _, err := l.Append(ctx, key, time.Time{}, data); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
			})
		}
	}
}

func testingProcs() int { return runtime.GOMAXPROCS(0) }

// BenchmarkSubmitPipelined: 64 goroutines each keep 8 Submits in flight (as an
// MQTT connection with several unacknowledged QoS 1 PUBLISHes would), so one
// fdatasync carries more records than there are goroutines.
func BenchmarkSubmitPipelined(b *testing.B) {
	for _, parts := range []int{1, 4} {
		b.Run(fmt.Sprintf("partitions=%d", parts), func(b *testing.B) {
			l, err := Open(Options{Dir: b.TempDir(), Partitions: parts})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			var id atomic.Int64
			b.ReportAllocs()
			b.SetBytes(benchRecord)
			b.SetParallelism(max(1, 64/testingProcs()))
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				key := fmt.Sprintf("device-%d", id.Add(1))
				data := make([]byte, benchRecord)
				ctx := context.Background()
				var ring []*Pending
				for pb.Next() {
					pd, err := l.Submit(ctx, key, time.Time{}, data)
					if err != nil {
						b.Error(err)
						return
					}
					ring = append(ring, pd)
					if len(ring) == 8 {
						if _, err := ring[0].Wait(ctx); err != nil {
							b.Error(err)
							return
						}
						ring = append(ring[:0], ring[1:]...)
					}
				}
				for _, pd := range ring {
					pd.Wait(ctx)
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
		})
	}
}
