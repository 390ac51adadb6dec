package telemetry

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Writers Submit/Wait concurrently while one tailing reader per partition
// follows with Notify; the reader must see every record exactly once, in
// per-key submission order, and never an un-acknowledged sequence gap.
func TestConcurrentAppendAndTail(t *testing.T) {
	const (
		partitions = 4
		writers    = 32
		perWriter  = 150
	)
	l := openTest(t, Options{Partitions: partitions, SegmentBytes: 8 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var total int64
	perPart := make([]int, partitions)
	for w := range writers {
		perPart[PartitionFor(fmt.Sprintf("dev-%d", w), partitions)] += perWriter
	}
	for _, n := range perPart {
		total += int64(n)
	}

	var readers sync.WaitGroup
	errs := make(chan error, partitions+writers)
	for p := range partitions {
		readers.Add(1)
		go func() {
			defer readers.Done()
			lastIter := map[string]int{}
			from := int64(0)
			for from < int64(perPart[p]) {
				ch := l.Notify(p) // take the channel before reading: no lost wakeup
				recs, err := l.Read(p, from, 64, 4096)
				if err != nil {
					errs <- err
					return
				}
				for _, r := range recs {
					if r.Sequence != from {
						errs <- fmt.Errorf("partition %d: got sequence %d, want %d", p, r.Sequence, from)
						return
					}
					from++
					key, iter, ok := strings.Cut(string(r.Data[:strings.IndexByte(string(r.Data), '|')]), "#")
					n, _ := strconv.Atoi(iter)
					if prev, seen := lastIter[key]; !ok || (seen && n != prev+1) || (!seen && n != 0) {
						errs <- fmt.Errorf("partition %d: %q after iteration %d of %s", p, r.Data[:16], prev, key)
						return
					}
					lastIter[key] = n
				}
				if len(recs) == 0 {
					select {
					case <-ch:
					case <-ctx.Done():
						errs <- fmt.Errorf("partition %d: reader stuck at %d", p, from)
						return
					}
				}
			}
		}()
	}
	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Add(1)
		go func() {
			defer writersWG.Done()
			key := fmt.Sprintf("dev-%d", w)
			var pend []*Pending
			for i := range perWriter {
				d := []byte(fmt.Sprintf("%s#%d|%s", key, i, strings.Repeat("x", i%50)))
				pd, err := l.Submit(ctx, key, time.Time{}, d)
				if err != nil {
					errs <- err
					return
				}
				pend = append(pend, pd)
				if i%7 == 0 { // mix pipelined Submits and Waits
					for _, pd := range pend {
						if _, err := pd.Wait(ctx); err != nil {
							errs <- err
							return
						}
					}
					pend = pend[:0]
				}
			}
			var last int64 = -1
			for _, pd := range pend {
				pos, err := pd.Wait(ctx)
				if err != nil {
					errs <- err
					return
				}
				if pos.Sequence <= last {
					errs <- fmt.Errorf("%s: sequence %d after %d", key, pos.Sequence, last)
				}
				last = pos.Sequence
			}
		}()
	}
	writersWG.Wait()
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var got int64
	for p := range partitions {
		info, _ := l.Info(p)
		got += info.Last + 1
	}
	if got != total {
		t.Fatalf("%d records in the log, want %d", got, total)
	}
}

// Submit blocks on a full queue only until its context ends.
func TestSubmitContext(t *testing.T) {
	l := openTest(t, Options{Partitions: 1, SegmentBytes: 4096, NoSync: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A cancelled context does not prevent an enqueue when there is room...
	pd, err := l.Submit(ctx, "k", time.Time{}, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	<-pd.Done()
	if _, err := pd.Wait(ctx); err != nil {
		t.Fatalf("Wait on a done batch with a cancelled context: %v", err)
	}
}
