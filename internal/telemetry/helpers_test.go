package telemetry

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openTest(t testing.TB, opts Options) *Log {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// payload is deterministic test data of about size bytes.
func payload(tag string, n, size int) []byte {
	b := []byte(fmt.Sprintf("%s-%d|", tag, n))
	for len(b) < size {
		b = append(b, byte('a'+(n+len(b))%26))
	}
	return b
}

// readAll reads a partition from first to last in chunks of max.
func readAll(t testing.TB, l *Log, part int, from int64, max int) []Record {
	t.Helper()
	var out []Record
	for {
		recs, err := l.Read(part, from, max, 0)
		if err != nil {
			t.Fatalf("Read(%d, %d): %v", part, from, err)
		}
		if len(recs) == 0 {
			return out
		}
		for i, r := range recs {
			if r.Sequence != from+int64(i) {
				t.Fatalf("partition %d: record %d has sequence %d, want %d", part, i, r.Sequence, from+int64(i))
			}
		}
		out = append(out, recs...)
		from = recs[len(recs)-1].Sequence + 1
	}
}

// want is what a test expects at one sequence.
type want struct {
	data []byte
	t    time.Time
}

func checkRecords(t testing.TB, part int, got []Record, first int64, exp []want) {
	t.Helper()
	if len(got) != len(exp) {
		t.Fatalf("partition %d: got %d records, want %d", part, len(got), len(exp))
	}
	for i, r := range got {
		if r.Sequence != first+int64(i) || r.Partition != part {
			t.Fatalf("record %d: position %d/%d, want %d/%d", i, r.Partition, r.Sequence, part, first+int64(i))
		}
		if !bytes.Equal(r.Data, exp[i].data) {
			t.Fatalf("partition %d seq %d: data %q, want %q", part, r.Sequence, r.Data, exp[i].data)
		}
		if !exp[i].t.IsZero() && !r.Time.Equal(exp[i].t) {
			t.Fatalf("partition %d seq %d: time %v, want %v", part, r.Sequence, r.Time, exp[i].t)
		}
	}
}

func mustAppend(t testing.TB, l *Log, key string, ts time.Time, data ...[]byte) Position {
	t.Helper()
	pos, err := l.Append(context.Background(), key, ts, data...)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return pos
}
