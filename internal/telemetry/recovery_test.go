package telemetry

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// batchLayout is where each batch of the recovery fixture lies in the segment.
type batchLayout struct {
	start, end int64
	records    []int64 // frame start of each record
	data       [][]byte
}

// writeFixture writes batches of the given record counts to a one-partition
// log, closes it and returns the layout of the single segment file.
func writeFixture(t *testing.T, dir string, counts []int, now func() time.Time) (string, []batchLayout) {
	t.Helper()
	l, err := Open(Options{Dir: dir, Partitions: 1, SegmentBytes: 1 << 16, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	var layout []batchLayout
	var off int64
	n := 0
	for b, c := range counts {
		bl := batchLayout{start: off}
		for j := 0; j < c; j++ {
			d := payload(fmt.Sprintf("b%d", b), n, 30+n*7%50)
			n++
			bl.records = append(bl.records, off)
			bl.data = append(bl.data, d)
			off += int64(frameSize(len(d)))
		}
		bl.end = off
		mustAppend(t, l, "k", time.Time{}, bl.data...)
		layout = append(layout, bl)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "p0", segmentName(0)), layout
}

func TestRecoveryTornTail(t *testing.T) {
	counts := []int{1, 1, 3, 1, 2, 1, 4, 1}
	type damage struct {
		name string
		// apply damages the segment file and returns how many batches survive.
		apply func(t *testing.T, f *os.File, lay []batchLayout) int
	}
	zero := func(t *testing.T, f *os.File, from, to int64) {
		if _, err := f.WriteAt(make([]byte, to-from), from); err != nil {
			t.Fatal(err)
		}
	}
	flip := func(t *testing.T, f *os.File, off int64) {
		b := make([]byte, 1)
		f.ReadAt(b, off)
		b[0] ^= 0x5a
		f.WriteAt(b, off)
	}
	tail := func(lay []batchLayout) int64 { return lay[len(lay)-1].end }
	cases := []damage{
		{"torn header", func(t *testing.T, f *os.File, lay []batchLayout) int {
			zero(t, f, lay[4].start+10, tail(lay))
			return 4
		}},
		{"torn length field", func(t *testing.T, f *os.File, lay []batchLayout) int {
			zero(t, f, lay[4].start+2, tail(lay))
			return 4
		}},
		{"torn data", func(t *testing.T, f *os.File, lay []batchLayout) int {
			zero(t, f, lay[4].start+headerSize+5, tail(lay))
			return 4
		}},
		{"exact batch boundary", func(t *testing.T, f *os.File, lay []batchLayout) int {
			zero(t, f, lay[5].start, tail(lay))
			return 5
		}},
		{"half a batch", func(t *testing.T, f *os.File, lay []batchLayout) int {
			zero(t, f, lay[2].records[2], tail(lay))
			return 2
		}},
		{"last byte missing", func(t *testing.T, f *os.File, lay []batchLayout) int {
			zero(t, f, tail(lay)-1, tail(lay))
			return len(lay) - 1
		}},
		{"bad crc in data of a batch", func(t *testing.T, f *os.File, lay []batchLayout) int {
			flip(t, f, lay[6].records[2]+headerSize+3)
			return 6
		}},
		{"bad sequence in header", func(t *testing.T, f *os.File, lay []batchLayout) int {
			flip(t, f, lay[3].start+8)
			return 3
		}},
		{"hole, later sectors persisted", func(t *testing.T, f *os.File, lay []batchLayout) int {
			zero(t, f, lay[2].records[1]+4, lay[2].records[1]+20)
			return 2
		}},
		{"file truncated mid-record", func(t *testing.T, f *os.File, lay []batchLayout) int {
			if err := f.Truncate(lay[6].records[1] + 17); err != nil {
				t.Fatal(err)
			}
			return 6
		}},
		{"file truncated at header", func(t *testing.T, f *os.File, lay []batchLayout) int {
			if err := f.Truncate(lay[1].start + 3); err != nil {
				t.Fatal(err)
			}
			return 1
		}},
		{"empty file", func(t *testing.T, f *os.File, lay []batchLayout) int {
			zero(t, f, 0, tail(lay))
			return 0
		}},
		{"intact", func(t *testing.T, f *os.File, lay []batchLayout) int { return len(lay) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// A frozen clock: equal times must not be what keeps stale frames out.
			clk := newFakeClock()
			path, lay := writeFixture(t, dir, counts, clk.Now)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			keep := tc.apply(t, f, lay)
			f.Close()

			var exp []want
			for _, b := range lay[:keep] {
				for _, d := range b.data {
					exp = append(exp, want{data: d})
				}
			}
			l, err := Open(Options{Dir: dir, Now: clk.Now})
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			checkRecords(t, 0, readAll(t, l, 0, 0, 3), 0, exp)
			info, _ := l.Info(0)
			if info.Last != int64(len(exp))-1 || info.First != 0 {
				t.Fatalf("Info = %+v, want Last %d", info, len(exp)-1)
			}
			// Re-append a batch shaped exactly like the first dropped one, so
			// its frames line up with stale frames after it: those must not
			// come back on the next reopen.
			redo := [][]byte{[]byte("new")}
			if keep < len(lay) {
				redo = nil
				for _, d := range lay[keep].data {
					redo = append(redo, append([]byte("N"), d[1:]...))
				}
			}
			pos := mustAppend(t, l, "k", time.Time{}, redo...)
			if pos.Sequence != int64(len(exp)) {
				t.Fatalf("append after recovery got sequence %d, want %d", pos.Sequence, len(exp))
			}
			for _, d := range redo {
				exp = append(exp, want{data: d})
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openTest(t, Options{Dir: dir, Now: clk.Now})
			checkRecords(t, 0, readAll(t, l, 0, 0, 100), 0, exp)
			pos = mustAppend(t, l, "k", time.Time{}, []byte("last"))
			if pos.Sequence != int64(len(exp)) {
				t.Fatalf("second reopen: sequence %d, want %d", pos.Sequence, len(exp))
			}
		})
	}
}

// A crash right after a roll leaves an empty active segment; sequences and
// times must continue from the sealed one.
func TestRecoveryEmptyActiveSegment(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	l, err := Open(Options{Dir: dir, Partitions: 1, SegmentBytes: 1024, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		mustAppend(t, l, "k", time.Time{}, payload("e", i, 100))
	}
	l.Close()
	// Fake the crash: add an empty next segment as a roll would have.
	info := func(l *Log) PartitionInfo { i, _ := l.Info(0); return i }
	l = openTest(t, Options{Dir: dir, Now: clk.Now})
	last := info(l).Last
	l.Close()
	f, err := createZeroFile(filepath.Join(dir, "p0", segmentName(last+1)), 1024)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.WriteFile(filepath.Join(dir, "p0", "spare.tmp"), []byte("junk"), 0o644)
	l = openTest(t, Options{Dir: dir, Now: clk.Now})
	if got := info(l); got.Last != last || got.LastEnqueuedTime.IsZero() {
		t.Fatalf("Info = %+v, want Last %d and a time", got, last)
	}
	if pos := mustAppend(t, l, "k", clk.Now().Add(-time.Hour), []byte("x")); pos.Sequence != last+1 {
		t.Fatalf("sequence %d, want %d", pos.Sequence, last+1)
	}
	recs, _ := l.Read(0, last, 2, 0)
	if len(recs) != 2 || recs[1].Time.Before(recs[0].Time) {
		t.Fatalf("times not monotonic after reopen: %+v", recs)
	}
	if _, err := os.Stat(filepath.Join(dir, "p0", "spare.tmp.x")); err == nil {
		t.Fatal("unexpected file")
	}
}
