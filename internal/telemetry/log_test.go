package telemetry

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestPartitionForStable(t *testing.T) {
	// FNV-1a 32 mod n is an on-disk contract: these values must never change.
	tests := []struct {
		key  string
		n    int
		want int
	}{
		{"", 4, int(2166136261 % 4)},
		{"device-1", 4, 1},
		{"device-2", 4, 0},
		{"thermostat", 32, 20},
		{"a", 7, int(0xe40c292c % 7)},
		{"anything", 1, 0},
		{"anything", 0, 0},
	}
	for _, tt := range tests {
		if got := PartitionFor(tt.key, tt.n); got != tt.want {
			t.Errorf("PartitionFor(%q, %d) = %d, want %d", tt.key, tt.n, got, tt.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		partitions int
		segBytes   int64
		records    int
		batch      int
		size       int
	}{
		{"one partition big segments", 1, 1 << 20, 300, 1, 100},
		{"many partitions small segments", 8, 1024, 800, 1, 50},
		{"batches rolling segments", 3, 2048, 600, 5, 120},
		{"records bigger than segments", 2, 512, 40, 2, 700},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			l := openTest(t, Options{Partitions: tt.partitions, SegmentBytes: tt.segBytes, NoSync: true, Now: clk.Now})
			exp := make([][]want, tt.partitions)
			for i := 0; i < tt.records; i += tt.batch {
				key := fmt.Sprintf("dev-%d", i%13)
				ts := clk.Now().Add(time.Duration(i) * time.Millisecond)
				var data [][]byte
				for j := 0; j < tt.batch; j++ {
					data = append(data, payload(key, i+j, tt.size+(i+j)%17))
				}
				pos := mustAppend(t, l, key, ts, data...)
				p := l.PartitionFor(key)
				if pos.Partition != p || pos.Sequence != int64(len(exp[p])) {
					t.Fatalf("append %d: position %+v, want %d/%d", i, pos, p, len(exp[p]))
				}
				for _, d := range data {
					exp[p] = append(exp[p], want{d, ts})
				}
			}
			segs := 0
			for p := range tt.partitions {
				for _, max := range []int{1, 7, 1000} {
					checkRecords(t, p, readAll(t, l, p, 0, max), 0, exp[p])
				}
				// ReadInto with one buffer for every batch, each batch checked before the next
				// read reuses its memory; batches of changing sizes, so the buffer grows and is
				// reused shorter.
				var rb ReadBuffer
				from := int64(0)
				for i := 0; ; i++ {
					recs, err := l.ReadInto(&rb, p, from, []int{7, 1, 1000, 3}[i%4], 0)
					if err != nil {
						t.Fatal(err)
					}
					if len(recs) == 0 {
						break
					}
					checkRecords(t, p, recs, from, exp[p][from:from+int64(len(recs))])
					from += int64(len(recs))
				}
				if from != int64(len(exp[p])) {
					t.Fatalf("ReadInto read %d records of partition %d, want %d", from, p, len(exp[p]))
				}
				info, err := l.Info(p)
				if err != nil {
					t.Fatal(err)
				}
				n := int64(len(exp[p]))
				if info.First != 0 || info.Last != n-1 || info.Empty != (n == 0) || info.Partition != p {
					t.Errorf("Info(%d) = %+v, want First 0 Last %d", p, info, n-1)
				}
				if n > 0 && !info.LastEnqueuedTime.Equal(exp[p][n-1].t) {
					t.Errorf("Info(%d).LastEnqueuedTime = %v, want %v", p, info.LastEnqueuedTime, exp[p][n-1].t)
				}
				if info.Bytes < n*headerSize {
					t.Errorf("Info(%d).Bytes = %d, too small for %d records", p, info.Bytes, n)
				}
				files, _ := filepath.Glob(filepath.Join(l.opts.Dir, fmt.Sprintf("p%d", p), "*.seg"))
				segs += len(files)
				if recs, err := l.Read(p, n, 10, 0); err != nil || len(recs) != 0 {
					t.Errorf("Read past end = %d records, %v", len(recs), err)
				}
			}
			if tt.segBytes < 4096 && segs <= tt.partitions {
				t.Errorf("expected segment rolls, found %d segment files", segs)
			}
		})
	}
}

func TestReadMaxBytes(t *testing.T) {
	l := openTest(t, Options{Partitions: 1, SegmentBytes: 4096, NoSync: true})
	for i := range 20 {
		mustAppend(t, l, "k", time.Time{}, payload("r", i, 100))
	}
	tests := []struct {
		from     int64
		max      int
		maxBytes int
		want     int
	}{
		{0, 100, 0, 20},
		{0, 100, 1, 1},   // at least one record
		{0, 100, 100, 1}, // exactly one record
		{0, 100, 250, 2}, // third would exceed
		{0, 100, 300, 3}, // reaches the cap exactly
		{5, 3, 10000, 3},
		{19, 100, 50, 1},
		{20, 100, 50, 0},
	}
	for _, tt := range tests {
		recs, err := l.Read(0, tt.from, tt.max, tt.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != tt.want {
			t.Errorf("Read(from %d, max %d, maxBytes %d) = %d records, want %d", tt.from, tt.max, tt.maxBytes, len(recs), tt.want)
		}
		if len(recs) > 0 && recs[0].Sequence != tt.from {
			t.Errorf("first sequence %d, want %d", recs[0].Sequence, tt.from)
		}
	}
	if _, err := l.Read(0, 0, 0, 0); err == nil {
		t.Error("Read with max 0 succeeded")
	}
	if _, err := l.Read(3, 0, 1, 0); !errors.Is(err, ErrBadPartition) {
		t.Errorf("Read of bad partition: %v", err)
	}
	if _, err := l.Read(0, -1, 1, 0); !errors.Is(err, ErrBeforeRetained) {
		t.Errorf("Read(-1): %v, want ErrBeforeRetained", err)
	}
	// Returned data must not alias: appending to one record keeps the next intact.
	recs, _ := l.Read(0, 0, 2, 0)
	second := string(recs[1].Data)
	_ = append(recs[0].Data, "clobber"...)
	if string(recs[1].Data) != second {
		t.Error("records share memory")
	}
}

func TestSeekTime(t *testing.T) {
	clk := newFakeClock()
	l := openTest(t, Options{Partitions: 1, SegmentBytes: 1024, NoSync: true, Now: clk.Now})
	t0 := clk.Now()
	// Times with repeats, a gap and one going backwards (stored as the previous time).
	offsets := []int{0, 0, 1, 2, 2, 2, 5, 3, 9, 9, 10, 30, 31, 31, 32, 100}
	for i := 0; i < 400; i++ {
		offsets = append(offsets, 100+i/3)
	}
	var times []time.Time
	last := t0
	for i, o := range offsets {
		ts := t0.Add(time.Duration(o) * time.Second)
		pos := mustAppend(t, l, "k", ts, payload("s", i, 60))
		if ts.Before(last) {
			ts = last
		}
		last = ts
		times = append(times, ts)
		if pos.Sequence != int64(i) {
			t.Fatalf("sequence %d, want %d", pos.Sequence, i)
		}
	}
	recs := readAll(t, l, 0, 0, 1000)
	for i, r := range recs {
		if !r.Time.Equal(times[i]) {
			t.Fatalf("record %d time %v, want %v (monotonic)", i, r.Time, times[i])
		}
	}
	for s := -5; s <= 250; s++ {
		q := t0.Add(time.Duration(s)*time.Second - time.Millisecond*time.Duration(s%2))
		want := int64(len(times))
		for i, ts := range times {
			if !ts.Before(q) {
				want = int64(i)
				break
			}
		}
		got, err := l.SeekTime(0, q)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("SeekTime(t0%+ds) = %d, want %d", s, got, want)
		}
	}
}

func TestReopenContinuity(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, Partitions: 3, SegmentBytes: 1024}
	exp := make([][]want, 3)
	for round := range 3 {
		l, err := Open(opts)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if l.Partitions() != 3 {
			t.Fatalf("Partitions() = %d", l.Partitions())
		}
		for i := range 40 {
			key := fmt.Sprintf("d%d", i)
			d := payload(key, round*100+i, 80)
			pos := mustAppend(t, l, key, time.Time{}, d)
			if want := int64(len(exp[pos.Partition])); pos.Sequence != want {
				t.Fatalf("round %d: sequence %d, want %d", round, pos.Sequence, want)
			}
			exp[pos.Partition] = append(exp[pos.Partition], want{data: d})
		}
		for p := range 3 {
			checkRecords(t, p, readAll(t, l, p, 0, 13), 0, exp[p])
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		opts.Partitions = 0 // reopen with the persisted count
	}
	if _, err := Open(Options{Dir: dir, Partitions: 5}); err == nil {
		t.Fatal("reopen with a different partition count succeeded")
	}
	// The lock keeps a second opener out.
	l := openTest(t, Options{Dir: dir})
	if _, err := Open(Options{Dir: dir}); err == nil {
		t.Fatal("second concurrent Open succeeded")
	}
	if _, err := l.Append(context.Background(), "x", time.Time{}, []byte("x")); err != nil {
		t.Fatal(err)
	}
}

func TestClosed(t *testing.T) {
	l := openTest(t, Options{Partitions: 2, SegmentBytes: 4096, NoSync: true})
	mustAppend(t, l, "k", time.Time{}, []byte("a"))
	ch := l.Notify(0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Error("Notify channel not closed by Close")
	}
	if _, err := l.Submit(context.Background(), "k", time.Time{}, []byte("a")); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close: %v", err)
	}
	if _, err := l.Read(0, 0, 1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if _, err := l.Info(0); !errors.Is(err, ErrClosed) {
		t.Errorf("Info after Close: %v", err)
	}
	if err := l.EnforceRetention(); !errors.Is(err, ErrClosed) {
		t.Errorf("EnforceRetention after Close: %v", err)
	}
}

func TestSubmitValidation(t *testing.T) {
	l := openTest(t, Options{Partitions: 1, SegmentBytes: 4096, NoSync: true})
	if _, err := l.Submit(context.Background(), "k", time.Time{}); err == nil {
		t.Error("Submit without records succeeded")
	}
	if _, err := l.Submit(context.Background(), "k", time.Time{}, make([]byte, MaxRecordBytes+1)); err == nil {
		t.Error("Submit of an oversized record succeeded")
	}
	if _, err := Open(Options{}); err == nil {
		t.Error("Open without Dir succeeded")
	}
	if _, err := Open(Options{Dir: t.TempDir(), SegmentBytes: 10}); err == nil {
		t.Error("Open with tiny SegmentBytes succeeded")
	}
}

func TestCloseDrainsPending(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir, Partitions: 2, SegmentBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	var pend []*Pending
	for i := range 500 {
		p, err := l.Submit(context.Background(), fmt.Sprint(i), time.Time{}, payload("c", i, 40))
		if err != nil {
			t.Fatal(err)
		}
		pend = append(pend, p)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for i, p := range pend {
		select {
		case <-p.Done():
		default:
			t.Fatalf("pending %d not done after Close", i)
		}
		if _, err := p.Wait(context.Background()); err != nil {
			t.Fatalf("pending %d: %v", i, err)
		}
	}
	l = openTest(t, Options{Dir: dir})
	total := 0
	for p := range 2 {
		info, _ := l.Info(p)
		total += int(info.Last - info.First + 1)
	}
	if total != 500 {
		t.Fatalf("after reopen %d records, want 500", total)
	}
}
