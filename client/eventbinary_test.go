package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/message"
)

// frame is one api.EventStreamBinary frame.
func frame(kind byte, payload []byte) []byte {
	b := append([]byte{kind}, binary.AppendUvarint(nil, uint64(len(payload)))...)
	return append(b, payload...)
}

// eventFrame is the frame of a message stored at partition and seq, as the hub writes it.
func eventFrame(t testing.TB, partition, seq uint64, m message.Message) []byte {
	t.Helper()
	data, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	p := binary.AppendUvarint(binary.AppendUvarint(nil, partition), seq)
	return frame(api.EventFrameEvent, append(p, data...))
}

// binaryServer serves body as the binary event stream.
func binaryServer(t testing.TB, body []byte) *Client {
	t.Helper()
	return streamServer(t, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", api.EventStreamBinary)
		w.Write(body)
	})
}

func TestBinaryStream(t *testing.T) {
	enq := time.Date(2026, 11, 25, 14, 0, 0, 5, time.UTC)
	a := eventFrame(t, 0, 1, message.Message{ConnectionDeviceID: "a", EnqueuedTime: enq, Properties: map[string]string{"k": "v"}, Body: []byte("one")})
	b := eventFrame(t, 3, 1<<40, message.Message{ConnectionDeviceID: "b", Body: []byte{0}})
	stream := concat(a, frame(api.EventFrameHeartbeat, nil), frame(9, []byte("a kind to skip")), b)
	errorFrame := frame(api.EventFrameError, []byte(`{"error":{"status":400,"Message":"ErrorCode:ArgumentInvalid;fell behind","ExceptionMessage":"fell behind"}}`))
	for name, tc := range map[string]struct {
		body    []byte
		wantErr func(error) bool
	}{
		"ends":           {stream, func(err error) bool { return err == nil }},
		"error frame":    {concat(stream, errorFrame), func(err error) bool { var e *Error; return errors.As(err, &e) && e.Code == "ArgumentInvalid" }},
		"cut in a frame": {concat(stream, a[:len(a)-1]), func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		"cut in length":  {concat(stream, []byte{api.EventFrameEvent, 0x80}), func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		"huge frame":     {concat(stream, []byte{api.EventFrameEvent, 0xff, 0xff, 0xff, 0xff, 0x0f}), func(err error) bool { return errors.Is(err, errFrame) }},
		"bad record":     {concat(stream, frame(api.EventFrameEvent, []byte{1, 1, 77})), func(err error) bool { return errors.Is(err, message.ErrCorrupt) }},
		"bad error":      {concat(stream, frame(api.EventFrameError, []byte(`{}`))), func(err error) bool { return errors.Is(err, errFrame) }},
	} {
		t.Run(name, func(t *testing.T) {
			c := binaryServer(t, tc.body)
			got, err := readAllEvents(c)
			if !tc.wantErr(err) {
				t.Fatalf("ReadEvents: %v", err)
			}
			if len(got) != 2 || got[0].DeviceID != "a" || got[0].Properties["k"] != "v" || *got[0].Body != "one" ||
				!got[0].EnqueuedTime.Equal(enq) || got[0].SystemProperties[message.NameEnqueuedTime] != "2026-11-25T14:00:00.000000005Z" ||
				got[1].DeviceID != "b" || got[1].Partition != 3 || got[1].SequenceNumber != 1<<40 || *got[1].Body != "\x00" || len(got[1].Properties) != 0 {
				t.Fatalf("ReadEvents: %+v", got)
			}
		})
	}
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestBinaryDecodeReuse: a decode that reuses the event's memory (Next) gives what a fresh one
// (ReadEvents) gives, and hands out nothing of the previous event.
func TestBinaryDecodeReuse(t *testing.T) {
	msgs := []message.Message{
		{ConnectionDeviceID: "a", Properties: map[string]string{"k": "v", "x": "y"}, Body: []byte("one"),
			Routing: &message.Routing{Routes: []string{"r1", "r2"}, Endpoints: []string{"events", "lake"}}},
		{ConnectionDeviceID: "b", Body: []byte{0xff}, Routing: &message.Routing{}},
		{ConnectionDeviceID: "c", ConnectionModuleID: "m", Body: []byte("three")},
	}
	for _, raw := range []bool{false, true} {
		for _, skip := range []bool{false, true} {
			reused, fresh := newEventDecoder(skip), newEventDecoder(skip)
			var ev api.Event
			for i, m := range msgs {
				f := eventFrame(t, 1, uint64(i), m)
				kind, payload, err := newFrameReader(bytes.NewReader(f)).next()
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := reused.decodeFrame(kind, payload, raw, &ev, true); err != nil {
					t.Fatal(err)
				}
				var want api.Event
				if _, _, err := fresh.decodeFrame(kind, payload, raw, &want, false); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(ev, want) {
					t.Errorf("raw %v skip %v, event %d:\nreused %+v\n fresh %+v", raw, skip, i, ev, want)
				}
				if skip != (want.Properties == nil) {
					t.Errorf("skip %v: properties %v", skip, want.Properties)
				}
			}
		}
	}
}

// FuzzDecodeFrames: any bytes as a stream end in events or an error, never a panic, and a
// reused decode agrees with a fresh one.
func FuzzDecodeFrames(f *testing.F) {
	f.Add(eventFrame(f, 2, 7, message.Message{ConnectionDeviceID: "d", Properties: map[string]string{"k": "v"}, Body: []byte("b"),
		Routing: &message.Routing{Routes: []string{"r"}, Endpoints: []string{"events"}}}), true)
	f.Add(concat(frame(api.EventFrameHeartbeat, nil), frame(api.EventFrameError, []byte(`{"error":{"status":500}}`))), false)
	f.Add([]byte{api.EventFrameEvent, 3, 0, 0, 2}, false)
	f.Fuzz(func(t *testing.T, stream []byte, raw bool) {
		fr := newFrameReader(bytes.NewReader(stream))
		reused, fresh := newEventDecoder(false), newEventDecoder(false)
		var ev api.Event
		for {
			kind, payload, err := fr.next()
			if err != nil {
				return
			}
			ok, _, err := reused.decodeFrame(kind, payload, raw, &ev, true)
			var want api.Event
			ok2, _, err2 := fresh.decodeFrame(kind, payload, raw, &want, false)
			if ok != ok2 || (err == nil) != (err2 == nil) {
				t.Fatalf("reused %v %v, fresh %v %v", ok, err, ok2, err2)
			}
			if err != nil {
				return
			}
			if ok && !reflect.DeepEqual(ev, want) {
				t.Fatalf("reused %+v\n fresh %+v", ev, want)
			}
		}
	})
}

// TestBinaryLargeFrame: a frame larger than the reader's chunk arrives whole, and the small one
// after it too.
func TestBinaryLargeFrame(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 30_000)
	fr := newFrameReader(bytes.NewReader(concat(
		eventFrame(t, 0, 1, message.Message{ConnectionDeviceID: "big", Body: big}),
		eventFrame(t, 0, 2, message.Message{ConnectionDeviceID: "small", Body: []byte("s")}))))
	d := newEventDecoder(true)
	for _, want := range []string{string(big), "s"} {
		kind, payload, err := fr.next()
		if err != nil {
			t.Fatal(err)
		}
		var ev api.Event
		if _, _, err := d.decodeFrame(kind, payload, false, &ev, false); err != nil {
			t.Fatal(err)
		}
		if ev.Body == nil || *ev.Body != want {
			t.Fatalf("body of %d bytes, want %d", len(*ev.Body), len(want))
		}
	}
	if _, _, err := fr.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v", err)
	}
}
