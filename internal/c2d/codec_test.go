package c2d

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestCodecRoundTrip(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	contents := []content{
		{},
		{MessageID: "m", CorrelationID: "c", UserID: "u", ContentType: "application/json", ContentEncoding: "utf-8",
			Ack: AckFull, GenerationID: "636930642531278483", Enqueued: now,
			Properties: map[string]string{"b": "2", "a": "", "c": "3"}, Body: []byte{0, 1, 2}},
	}
	for _, c := range contents {
		got, err := decodeContent(c.encode())
		if err != nil || !reflect.DeepEqual(got, c) {
			t.Fatalf("content round trip: %+v, %v; want %+v", got, err, c)
		}
	}
	states := []state{
		{},
		{DeliveryCount: 7, Expiry: now, LockedUntil: now.Add(time.Minute), LockToken: newLockToken()},
	}
	for _, st := range states {
		got, err := decodeState(st.encode())
		if err != nil || !reflect.DeepEqual(got, st) {
			t.Fatalf("state round trip: %+v, %v; want %+v", got, err, st)
		}
	}
}

func TestCodecRejectsCorrupt(t *testing.T) {
	c := content{MessageID: "m", Properties: map[string]string{"k": "v"}, Body: []byte("body")}
	enc := c.encode()
	for i := range enc {
		if _, err := decodeContent(enc[:i]); !errors.Is(err, errCorrupt) {
			t.Fatalf("truncated at %d: %v", i, err)
		}
	}
	if _, err := decodeContent(append(enc, 0)); !errors.Is(err, errCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
	bad := append([]byte{99}, enc[1:]...)
	if _, err := decodeContent(bad); !errors.Is(err, errCorrupt) {
		t.Fatalf("version: %v", err)
	}
	st := state{LockToken: "x"}
	if _, err := decodeState(st.encode()[:3]); !errors.Is(err, errCorrupt) {
		t.Fatalf("state truncated: %v", err)
	}
}

func TestTimerKeyOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := timerKey(t0, 9, "zzz")
	b := timerKey(t0.Add(time.Nanosecond), 1, "a")
	if string(a) >= string(b) {
		t.Fatal("timer keys do not sort by deadline first")
	}
	d, seq, id, ok := parseTimerKey(a)
	if !ok || !d.Equal(t0) || seq != 9 || id != "zzz" {
		t.Fatalf("parse %v %d %q %v", d, seq, id, ok)
	}
	if _, _, id, _ := parseTimerKey(timerKey(t0, 1, "")); id != "" {
		t.Fatal("feedback queue id")
	}
}

func TestLockTokenShape(t *testing.T) {
	a, b := newLockToken(), newLockToken()
	if a == b || len(a) != 36 || a[8] != '-' || a[14] != '4' {
		t.Fatalf("tokens %q %q", a, b)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add((&content{MessageID: "m", Properties: map[string]string{"k": "v"}, Body: []byte("b")}).encode())
	f.Add((&state{DeliveryCount: 1, LockToken: "t"}).encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		if c, err := decodeContent(data); err == nil {
			again, err := decodeContent(c.encode())
			if err != nil || !reflect.DeepEqual(again, c) {
				t.Fatalf("content re-encode: %v", err)
			}
		}
		if st, err := decodeState(data); err == nil {
			if _, err := decodeState(st.encode()); err != nil {
				t.Fatalf("state re-encode: %v", err)
			}
		}
	})
}
