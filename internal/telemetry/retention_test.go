package telemetry

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func segFiles(t *testing.T, l *Log, p int) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(l.opts.Dir, fmt.Sprintf("p%d", p), "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestRetentionByAge(t *testing.T) {
	clk := newFakeClock()
	dir := t.TempDir()
	opts := Options{Dir: dir, Partitions: 1, SegmentBytes: 1024, Retention: time.Hour, RetentionInterval: time.Hour, NoSync: true, Now: clk.Now}
	l := openTest(t, opts)
	var exp []want
	add := func(n int) {
		for range n {
			d := payload("r", len(exp), 90)
			mustAppend(t, l, "k", clk.Now(), d)
			exp = append(exp, want{data: d, t: clk.Now()})
		}
	}
	add(50) // ~8 records per segment
	clk.Add(2 * time.Hour)
	add(20)
	before := len(segFiles(t, l, 0))
	if err := l.EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	info, _ := l.Info(0)
	if info.First == 0 || info.First > 50 || info.Last != 69 {
		t.Fatalf("after retention Info = %+v, want 0 < First <= 50, Last 69", info)
	}
	if after := len(segFiles(t, l, 0)); after >= before {
		t.Fatalf("segment files %d -> %d, want fewer", before, after)
	}
	if _, err := l.Read(0, 0, 10, 0); !errors.Is(err, ErrBeforeRetained) {
		t.Fatalf("Read below First: %v, want ErrBeforeRetained", err)
	}
	if _, err := l.Read(0, info.First-1, 10, 0); !errors.Is(err, ErrBeforeRetained) {
		t.Fatalf("Read at First-1: %v, want ErrBeforeRetained", err)
	}
	checkRecords(t, 0, readAll(t, l, 0, info.First, 4), info.First, exp[info.First:])
	// Every record older than the cutoff is in a removed or straddling segment;
	// nothing newer than it was removed.
	if got, _ := l.SeekTime(0, time.Time{}); got != info.First {
		t.Fatalf("SeekTime(zero) = %d, want First %d", got, info.First)
	}

	// Everything old: only the active segment stays; sequences keep going.
	clk.Add(10 * time.Hour)
	if err := l.EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, l, 0)); n != 1 {
		t.Fatalf("%d segment files left, want the active one", n)
	}
	info, _ = l.Info(0)
	if info.Last != 69 {
		t.Fatalf("Info after full retention = %+v", info)
	}
	add(5)
	info, _ = l.Info(0)
	if info.Last != 74 {
		t.Fatalf("Last = %d after more appends, want 74", info.Last)
	}
	checkRecords(t, 0, readAll(t, l, 0, info.First, 100), info.First, exp[info.First:])

	// Roll past everything, expire it all, reopen: sequences are not reused.
	add(20)
	clk.Add(10 * time.Hour)
	add(1)
	if err := l.EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	info, _ = l.Info(0)
	if info.First < 75 {
		t.Fatalf("First = %d, want old segments gone", info.First)
	}
	l.Close()
	l = openTest(t, opts)
	info2, _ := l.Info(0)
	if info2.First != info.First || info2.Last != info.Last {
		t.Fatalf("reopen Info = %+v, want %+v", info2, info)
	}
	if pos := mustAppend(t, l, "k", clk.Now(), []byte("z")); pos.Sequence != info.Last+1 {
		t.Fatalf("sequence after reopen %d, want %d", pos.Sequence, info.Last+1)
	}
}

func TestRetentionMaxBytes(t *testing.T) {
	const maxBytes = 3000
	l := openTest(t, Options{Partitions: 2, SegmentBytes: 1024, MaxBytes: maxBytes, NoSync: true})
	for i := range 200 {
		mustAppend(t, l, fmt.Sprint(i), time.Time{}, payload("m", i, 100))
	}
	if err := l.EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	for p := range 2 {
		info, _ := l.Info(p)
		if info.Bytes > maxBytes || info.Bytes < maxBytes-2*1024 {
			t.Errorf("partition %d: %d bytes retained, want about %d", p, info.Bytes, maxBytes)
		}
		if info.First == 0 {
			t.Errorf("partition %d: nothing removed", p)
		}
		readAll(t, l, p, info.First, 10)
	}
}

// Readers racing retention get correct data or ErrBeforeRetained, never
// anything else; the background loop runs too.
func TestRetentionWhileReading(t *testing.T) {
	clk := newFakeClock()
	l := openTest(t, Options{Partitions: 1, SegmentBytes: 1024, Retention: time.Minute, RetentionInterval: time.Millisecond, NoSync: true, Now: clk.Now})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var fail error
	var failOnce sync.Once
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := int64(0)
			for {
				select {
				case <-stop:
					return
				default:
				}
				ch := l.Notify(0)
				recs, err := l.Read(0, from, 5+r, 0)
				if errors.Is(err, ErrBeforeRetained) {
					info, _ := l.Info(0)
					from = info.First
					continue
				}
				if err != nil {
					failOnce.Do(func() { fail = err })
					return
				}
				for _, rec := range recs {
					if want := payload("w", int(rec.Sequence), 90); string(rec.Data) != string(want) {
						failOnce.Do(func() { fail = fmt.Errorf("seq %d: wrong data %q", rec.Sequence, rec.Data) })
						return
					}
				}
				if len(recs) == 0 {
					select { // caught up: wait for the next append
					case <-ch:
					case <-stop:
						return
					}
					continue
				}
				from = recs[len(recs)-1].Sequence + 1
			}
		}()
	}
	for i := range 1000 {
		mustAppend(t, l, "k", clk.Now(), payload("w", i, 90))
		if i%10 == 0 {
			clk.Add(10 * time.Second)
		}
	}
	close(stop)
	wg.Wait()
	if fail != nil {
		t.Fatal(fail)
	}
	info, _ := l.Info(0)
	if info.First == 0 {
		t.Fatal("background retention removed nothing")
	}
	// The loop may not have swept since the last clock step; one sweep now makes the count exact.
	if err := l.EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, l, 0)); n > 20 {
		p := l.parts[0]
		p.mu.RLock()
		for _, s := range p.segs {
			t.Logf("seg base %d last %d lastTime %v end %d", s.base, s.last, time.Unix(0, s.lastTime).Sub(clk.Now()), s.end)
		}
		p.mu.RUnlock()
		t.Fatalf("%d segment files remain", n)
	}
}
