package telemetry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

const (
	headerSize   = 32
	frameVersion = 1

	flagBatchStart = 1 << 0
	flagBatchEnd   = 1 << 1
)

// castagnoli is read-only after init (hardware-accelerated CRC-32C).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errEndOfData = errors.New("end of data")
	errCorrupt   = errors.New("corrupt frame")
)

type frameHeader struct {
	size  int // header + data
	crc   uint32
	seq   int64
	time  int64
	flags byte
}

func frameSize(dataLen int) int { return headerSize + dataLen }

// appendFrame appends one encoded record to dst.
func appendFrame(dst []byte, seq, t int64, flags byte, data []byte) []byte {
	start := len(dst)
	n := headerSize + len(data)
	dst = append(dst, make([]byte, n)...)
	f := dst[start:]
	binary.LittleEndian.PutUint32(f[0:], uint32(n))
	binary.LittleEndian.PutUint64(f[8:], uint64(seq))
	binary.LittleEndian.PutUint64(f[16:], uint64(t))
	f[24] = frameVersion
	f[25] = flags
	copy(f[headerSize:], data)
	binary.LittleEndian.PutUint32(f[4:], frameCRC(f))
	return dst
}

func frameCRC(frame []byte) uint32 {
	c := crc32.Update(0, castagnoli, frame[0:4])
	return crc32.Update(c, castagnoli, frame[8:])
}

// parseHeader decodes and sanity-checks a header; b must hold headerSize bytes.
// It returns errEndOfData for a zero length (preallocated space).
func parseHeader(b []byte) (frameHeader, error) {
	size := binary.LittleEndian.Uint32(b[0:])
	if size == 0 {
		return frameHeader{}, errEndOfData
	}
	h := frameHeader{
		size:  int(size),
		crc:   binary.LittleEndian.Uint32(b[4:]),
		seq:   int64(binary.LittleEndian.Uint64(b[8:])),
		time:  int64(binary.LittleEndian.Uint64(b[16:])),
		flags: b[25],
	}
	if h.size < headerSize || h.size > headerSize+MaxRecordBytes {
		return h, fmt.Errorf("%w: bad length %d", errCorrupt, h.size)
	}
	if b[24] != frameVersion {
		return h, fmt.Errorf("%w: bad version %d", errCorrupt, b[24])
	}
	if h.flags&^(flagBatchStart|flagBatchEnd) != 0 {
		return h, fmt.Errorf("%w: bad flags %#x", errCorrupt, h.flags)
	}
	for _, c := range b[26:headerSize] {
		if c != 0 {
			return h, fmt.Errorf("%w: reserved bytes set", errCorrupt)
		}
	}
	return h, nil
}

// checkFrame verifies the CRC of a complete frame.
func checkFrame(h frameHeader, frame []byte) error {
	if got := frameCRC(frame[:h.size]); got != h.crc {
		return fmt.Errorf("%w: crc mismatch at seq %d", errCorrupt, h.seq)
	}
	return nil
}
