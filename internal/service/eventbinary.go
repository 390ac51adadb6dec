package service

import (
	"encoding/binary"
	"mime"
	"strings"

	"github.com/tetherhub/tether/api"
)

// A reader following a busy hub through NDJSON costs the hub a JSON encoding of every event and
// the reader a decoding: a third of what the hub spends per message at a high rate. The binary
// form (api.EventStreamBinary) sends each record as the log stores it, framed.

// acceptsBinaryEvents reports whether the Accept headers name api.EventStreamBinary (with a
// quality above zero).
func acceptsBinaryEvents(accept []string) bool {
	for _, h := range accept {
		for part := range strings.SplitSeq(h, ",") {
			typ, params, err := mime.ParseMediaType(part)
			if err == nil && typ == api.EventStreamBinary && strings.TrimSpace(params["q"]) != "0" {
				return true
			}
		}
	}
	return false
}

// appendBinaryEvent appends the frame of the event at partition and seq whose record is data.
func appendBinaryEvent(b []byte, partition int, seq int64, data []byte) []byte {
	var head [2 * binary.MaxVarintLen64]byte
	h := binary.AppendUvarint(head[:0], uint64(partition))
	h = binary.AppendUvarint(h, uint64(seq))
	b = append(b, api.EventFrameEvent)
	b = binary.AppendUvarint(b, uint64(len(h)+len(data)))
	b = append(b, h...)
	return append(b, data...)
}

// appendFrame appends a frame of kind with payload.
func appendFrame(b []byte, kind byte, payload []byte) []byte {
	b = append(b, kind)
	b = binary.AppendUvarint(b, uint64(len(payload)))
	return append(b, payload...)
}
