package telemetry

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkOpenRecover measures Open of a log that holds records (4 partitions, 400-byte
// records, the size of a stored 256-byte MQTT message): what `tether serve` does before it
// accepts connections after a crash. The files are in the page cache, as after a SIGKILL.
// Scale: 1M records here; BENCHMARKS.md's recovery row has 10M through the real binary.
func BenchmarkOpenRecover(b *testing.B) {
	for _, records := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("records=%d", records), func(b *testing.B) {
			dir := b.TempDir()
			l, err := Open(Options{Dir: dir, Partitions: 4, NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			batch := make([][]byte, 100)
			for i := range batch {
				batch[i] = make([]byte, 400)
			}
			var last *Pending
			for i := 0; i < records; i += len(batch) {
				if last, err = l.Submit(ctx, fmt.Sprintf("device-%d", i%1000), time.Time{}, batch...); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := last.Wait(ctx); err != nil {
				b.Fatal(err)
			}
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				l, err := Open(Options{Dir: dir, NoSync: true})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				l.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(records), "records")
		})
	}
}
