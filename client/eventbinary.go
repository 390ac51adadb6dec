package client

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/message"
)

// The hub sends the binary form of the event stream (api.EventStreamBinary) when asked: each
// event is the record it stores, framed, so neither end encodes or parses JSON. An event
// decoded from a frame is the one its NDJSON line gives (eventbinary_test.go compares them):
// strings are what encoding/json makes of them, each invalid UTF-8 byte a U+FFFD.

// maxFrame bounds a frame's length: a message is at most 256 KB of body and 8 KB of
// properties, so anything near this is a broken stream, not an event.
const maxFrame = 16 << 20

var errFrame = errors.New("malformed frame")

// frameReader reads frames; the payload it returns is valid until the next call.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next frame; io.EOF only when the stream ends between frames.
func (f *frameReader) next() (kind byte, payload []byte, err error) {
	if kind, err = f.r.ReadByte(); err != nil {
		return 0, nil, err
	}
	n, err := binary.ReadUvarint(f.r)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: length: %w", errFrame, noEOF(err))
	}
	if n > maxFrame {
		return 0, nil, fmt.Errorf("%w: %d bytes", errFrame, n)
	}
	// Grown as the payload arrives, so a length that the stream does not hold costs nothing.
	const chunk = 64 << 10
	if cap(f.buf) > 4*chunk && n <= chunk {
		f.buf = nil // do not keep a large frame's buffer for small ones
	}
	f.buf = f.buf[:0]
	for len(f.buf) < int(n) {
		k := min(int(n)-len(f.buf), chunk)
		f.buf = slices.Grow(f.buf, k)
		m, err := io.ReadFull(f.r, f.buf[len(f.buf):len(f.buf)+k])
		f.buf = f.buf[:len(f.buf)+m]
		if err != nil {
			return 0, nil, fmt.Errorf("%w: payload: %w", errFrame, noEOF(err))
		}
	}
	return kind, f.buf, nil
}

// noEOF turns an end of stream inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decodeFrame decodes a frame into ev, replacing it (reuse as for decode). ok is false for a
// heartbeat or a frame of an unknown kind; a frame holding the stream's error returns it.
func (d *eventDecoder) decodeFrame(kind byte, payload []byte, raw bool, ev *api.Event, reuse bool) (ok bool, streamErr *api.StreamError, err error) {
	switch kind {
	case api.EventFrameEvent:
		return true, nil, d.binaryEvent(payload, raw, ev, reuse)
	case api.EventFrameError:
		var x eventLine
		if err := json.Unmarshal(payload, &x); err != nil {
			return false, nil, fmt.Errorf("%w: error frame: %w", errFrame, err)
		}
		if x.Error == nil {
			return false, nil, fmt.Errorf("%w: error frame without an error", errFrame)
		}
		return false, x.Error, nil
	}
	return false, nil, nil
}

// binaryEvent decodes an event frame's payload.
func (d *eventDecoder) binaryEvent(payload []byte, raw bool, ev *api.Event, reuse bool) error {
	partition, n := binary.Uvarint(payload)
	if n <= 0 || partition > 1<<31 {
		return fmt.Errorf("%w: partition", errFrame)
	}
	seq, m := binary.Uvarint(payload[n:])
	if m <= 0 || seq > 1<<63-1 {
		return fmt.Errorf("%w: sequence number", errFrame)
	}
	v := &d.view
	if err := v.Decode(payload[n+m:]); err != nil {
		return fmt.Errorf("%w: %w", errFrame, err)
	}
	*ev = api.Event{
		DeviceID:       d.jsonString(v.ConnectionDeviceID),
		ModuleID:       d.jsonString(v.ConnectionModuleID),
		Partition:      int(partition),
		SequenceNumber: int64(seq),
		EnqueuedTime:   v.EnqueuedTime,
	}
	if !d.skipProps {
		var sys, props map[string]string
		if reuse {
			sys, props = d.reusedMaps()
		} else {
			sys, props = make(map[string]string, 8), make(map[string]string, len(v.Properties))
		}
		for _, p := range message.ViewSystemProperties {
			if val := p.Value(v); len(val) > 0 {
				sys[p.Name] = d.jsonString(val)
			}
		}
		if !v.EnqueuedTime.IsZero() {
			sys[message.NameEnqueuedTime] = v.EnqueuedTime.Format(time.RFC3339Nano)
		}
		for _, p := range v.Properties {
			props[d.jsonString(p.Name)] = d.jsonString(p.Value)
		}
		ev.SystemProperties, ev.Properties = sys, props
	}
	if utf8.Valid(v.Body) {
		body := new(string)
		if reuse {
			body = &d.reused.body
		}
		*body = string(v.Body)
		ev.Body = body
	} else {
		ev.BodyBase64 = base64.StdEncoding.EncodeToString(v.Body)
	}
	var routes, endpoints []string
	if reuse {
		routes, endpoints = d.reused.routes[:0], d.reused.endpoints[:0]
	}
	if v.Routed && len(v.Routes) > 0 {
		ev.Routes = d.jsonStrings(routes, v.Routes)
	}
	if raw {
		switch {
		case !v.Routed:
			ev.Endpoints = append(endpoints, message.BuiltInEndpoint)
		case len(v.Endpoints) > 0:
			ev.Endpoints = d.jsonStrings(endpoints, v.Endpoints)
		}
	}
	if reuse {
		d.reused.routes, d.reused.endpoints = ev.Routes, ev.Endpoints
	}
	return nil
}

// jsonString is the string encoding/json gives for b after writing it: b, with each byte of
// invalid UTF-8 replaced by U+FFFD. Recent short ones are shared (intern).
func (d *eventDecoder) jsonString(b []byte) string {
	if utf8.Valid(b) {
		return d.intern(b)
	}
	var s strings.Builder
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			s.WriteString("\uFFFD")
		} else {
			s.Write(b[:size])
		}
		b = b[size:]
	}
	return s.String()
}

func (d *eventDecoder) jsonStrings(list []string, bs [][]byte) []string {
	for _, b := range bs {
		list = append(list, d.jsonString(b))
	}
	return list
}
