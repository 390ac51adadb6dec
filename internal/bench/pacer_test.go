package bench

import "testing"

func TestPacerKeepsTheSchedule(t *testing.T) {
	p := NewPacer(100, 1000, 1)
	// On time: each reservation waits until its slot.
	if w := p.Reserve(1000); w != 0 {
		t.Fatalf("first slot: wait %d", w)
	}
	if w := p.Reserve(1010); w != 90 {
		t.Fatalf("second slot: wait %d, want 90", w)
	}
	// Slept too long (woke at 1130 for 1100): the next slot stays at 1200, no drift.
	if w := p.Reserve(1130); w != 70 {
		t.Fatalf("third slot: wait %d, want 70", w)
	}
}

func TestPacerRateOverManyEvents(t *testing.T) {
	p := NewPacer(1000, 0, 1)
	now := int64(0)
	for range 1000 {
		now += p.Reserve(now) + 3 // each send takes a little time
	}
	// 1000 events at 1 per 1000 ns: the last one is sent at about 999_000.
	if now < 999_000 || now > 999_010 {
		t.Fatalf("1000 events ended at %d", now)
	}
}

func TestPacerBoundsTheCatchUpBurst(t *testing.T) {
	p := NewPacer(100, 0, 4)
	p.Reserve(0)
	// Stalled for 10 intervals: only 4 events may go back to back, then the schedule slips.
	now := int64(1000)
	for i := range 4 {
		if w := p.Reserve(now); w != 0 {
			t.Fatalf("burst event %d: wait %d", i, w)
		}
	}
	if w := p.Reserve(now); w != 100 {
		t.Fatalf("after the burst: wait %d, want 100", w)
	}
	// Burst 1: a late writer sends at once, then waits a full interval.
	q := NewPacer(100, 0, 1)
	q.Reserve(0)
	if w := q.Reserve(5000); w != 0 {
		t.Fatalf("late: wait %d", w)
	}
	if w := q.Reserve(5000); w != 100 {
		t.Fatalf("after late: wait %d, want 100", w)
	}
}

func TestPacerUnpaced(t *testing.T) {
	p := NewPacer(0, 0, 1)
	for range 10 {
		if w := p.Reserve(12345); w != 0 {
			t.Fatalf("unpaced wait %d", w)
		}
	}
	if intervalFor(0, 10) != 0 || intervalFor(100, 0) != 0 {
		t.Fatal("no rate means no interval")
	}
	if got := intervalFor(1000, 100); got != 100_000_000 {
		t.Fatalf("1000 msgs/s over 100 devices: interval %d ns, want 100 ms", got)
	}
}

func TestStamp(t *testing.T) {
	c := &conn{pkt: make([]byte, 30), tsAt: 5}
	c.stamp(1712345678901234567)
	got, ok := parseStamp(string(c.pkt[5:]))
	if !ok || got != 1712345678901234567 {
		t.Fatalf("stamp round trip: %d %v (%q)", got, ok, c.pkt)
	}
	if _, ok := parseStamp("short"); ok {
		t.Fatal("short body parsed")
	}
	if _, ok := parseStamp("xxxxxxxxxxxxxxxxxxxxxxxxx"); ok {
		t.Fatal("non-digits parsed")
	}
}

func TestDeviceIDs(t *testing.T) {
	ids := DeviceIDs("bench-", 100)
	if len(ids) != 100 || ids[0] != "bench-0" || ids[10] != "bench-10" || ids[99] != "bench-99" {
		t.Fatalf("ids: %v ... %v", ids[0], ids[len(ids)-1])
	}
	if ids := DeviceIDs("d", 1); ids[0] != "d0" {
		t.Fatalf("one id: %v", ids)
	}
}
