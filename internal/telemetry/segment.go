package telemetry

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
)

const (
	segSuffix     = ".seg"
	indexInterval = 16 << 10 // bytes of frames between sparse index entries
	zeroChunk     = 1 << 20
)

// indexEntry locates one record in a segment.
type indexEntry struct {
	seq  int64
	time int64
	off  int64
}

// fileRef is an open file shared by the writer and readers; it is closed
// when the last user releases it, so sealing a segment never pulls a file
// out from under a reader.
type fileRef struct {
	f    *os.File
	refs atomic.Int32
}

func newFileRef(f *os.File) *fileRef {
	r := &fileRef{f: f}
	r.refs.Store(1)
	return r
}

func (r *fileRef) acquire() { r.refs.Add(1) }

func (r *fileRef) release() error {
	if r.refs.Add(-1) == 0 {
		return r.f.Close()
	}
	return nil
}

// segment is one file of a partition. All mutable fields are guarded by the
// partition's mu; they only describe durable data.
type segment struct {
	base      int64 // sequence of the first record (from the file name)
	path      string
	size      int64 // allocated file size
	end       int64 // durable end of frames
	last      int64 // last durable sequence; base-1 when empty
	firstTime int64
	lastTime  int64
	index     []indexEntry // sparse, ascending
	file      *fileRef     // open handle; only the active segment keeps one
}

func (s *segment) empty() bool { return s.last < s.base }

// lookup returns the offset of the last index entry at or before seq.
func (s *segment) lookup(seq int64) int64 {
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].seq > seq })
	if i == 0 {
		return 0
	}
	return s.index[i-1].off
}

// lookupTime returns the offset of a record at or before the first record
// whose time is >= t.
func (s *segment) lookupTime(t int64) int64 {
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].time >= t })
	if i == 0 {
		return 0
	}
	return s.index[i-1].off
}

func segmentName(base int64) string { return fmt.Sprintf("%020d%s", base, segSuffix) }

func parseSegmentName(name string) (int64, bool) {
	digits, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	return n, err == nil && n >= 0
}

// scanResult describes the valid prefix of a segment file.
type scanResult struct {
	end       int64 // offset after the last complete batch
	last      int64
	firstTime int64
	lastTime  int64
	index     []indexEntry
	stop      error // why the scan stopped before the file's end, nil at a clean end
}

// scanSegment reads frames from the start of f (of the given size) and returns
// the prefix of complete, valid batches with a sparse index. It checks
// lengths, CRCs, sequence continuity from base, time order and batch flags.
func scanSegment(f *os.File, size, base int64) (scanResult, error) {
	res := scanResult{last: base - 1}
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), zeroChunk)
	var (
		hdr                   [headerSize]byte
		frame                 []byte
		off                   int64
		expect                = base
		inBatch               bool
		pending               []indexEntry // index entries of the open batch
		lastIndex             = int64(-indexInterval)
		batchFirstT, prevTime int64
	)
	for {
		if off+headerSize > size {
			if inBatch {
				res.stop = fmt.Errorf("%w: incomplete batch at end of file", errCorrupt)
			}
			return res, nil
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return res, fmt.Errorf("scan %s at %d: %w", f.Name(), off, err)
		}
		h, err := parseHeader(hdr[:])
		if errors.Is(err, errEndOfData) {
			if inBatch {
				res.stop = fmt.Errorf("%w: incomplete batch at offset %d", errCorrupt, off)
			}
			return res, nil
		}
		if err != nil {
			res.stop = fmt.Errorf("at offset %d: %w", off, err)
			return res, nil
		}
		if off+int64(h.size) > size {
			res.stop = fmt.Errorf("%w: frame at offset %d runs past end of file", errCorrupt, off)
			return res, nil
		}
		if cap(frame) < h.size {
			frame = make([]byte, h.size)
		}
		frame = frame[:h.size]
		copy(frame, hdr[:])
		if _, err := io.ReadFull(r, frame[headerSize:]); err != nil {
			return res, fmt.Errorf("scan %s at %d: %w", f.Name(), off, err)
		}
		if err := checkFrame(h, frame); err != nil {
			res.stop = fmt.Errorf("at offset %d: %w", off, err)
			return res, nil
		}
		switch {
		case h.seq != expect:
			res.stop = fmt.Errorf("%w: sequence %d at offset %d, want %d", errCorrupt, h.seq, off, expect)
		case h.flags&flagBatchStart != 0 && inBatch, h.flags&flagBatchStart == 0 && !inBatch:
			res.stop = fmt.Errorf("%w: batch flags %#x out of order at offset %d", errCorrupt, h.flags, off)
		case h.flags&flagBatchStart == 0 && h.time != batchFirstT, h.time < prevTime:
			res.stop = fmt.Errorf("%w: time out of order at offset %d", errCorrupt, off)
		}
		if res.stop != nil {
			return res, nil
		}
		if h.flags&flagBatchStart != 0 {
			inBatch, batchFirstT = true, h.time
		}
		if off-lastIndex >= indexInterval {
			pending = append(pending, indexEntry{seq: h.seq, time: h.time, off: off})
			lastIndex = off
		}
		off += int64(h.size)
		expect++
		if h.flags&flagBatchEnd != 0 {
			inBatch = false
			if res.last < base {
				res.firstTime = h.time
			}
			res.end, res.last, res.lastTime, prevTime = off, h.seq, h.time, h.time
			res.index = append(res.index, pending...)
			pending = pending[:0]
		}
	}
}

// zeroTail overwrites every non-zero byte of f in [from, size) with zeros and
// reports whether it wrote anything.
func zeroTail(f *os.File, from, size int64) (bool, error) {
	buf := make([]byte, zeroChunk)
	zeros := make([]byte, zeroChunk)
	wrote := false
	for off := from; off < size; {
		n := min(int64(len(buf)), size-off)
		if _, err := f.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF)) {
			return wrote, fmt.Errorf("read %s: %w", f.Name(), err)
		}
		if !bytes.Equal(buf[:n], zeros[:n]) {
			if _, err := f.WriteAt(zeros[:n], off); err != nil {
				return wrote, fmt.Errorf("zero %s: %w", f.Name(), err)
			}
			wrote = true
		}
		off += n
	}
	return wrote, nil
}

// fillZeros writes zeros to f from off up to size (real writes, not a sparse
// extension, so later appends do not allocate blocks or convert extents) and
// syncs every 8 MiB, so a big preallocation never queues a burst of dirty pages
// in front of the WAL's fdatasyncs.
func fillZeros(f *os.File, off, size int64) error {
	zeros := make([]byte, min(zeroChunk, size-off))
	for written := 0; off < size; written++ {
		n := min(int64(len(zeros)), size-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("preallocate %s: %w", f.Name(), err)
		}
		off += n
		if written%8 == 7 {
			if err := fdatasync(f); err != nil {
				return fmt.Errorf("preallocate %s: %w", f.Name(), err)
			}
		}
	}
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("preallocate %s: %w", f.Name(), err)
	}
	return nil
}

// createZeroFile creates (or replaces) path as a zero-filled, synced file of
// size bytes (a WAL file).
func createZeroFile(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	if err := fillZeros(f, 0, size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

// createSegmentFile creates path as an empty (sparse) segment of size bytes and, unless
// noSync, makes it and its name durable before the WAL can refer to it. Segments need no
// preallocated blocks: they are synced only by checkpoints, in bulk.
func createSegmentFile(path string, size int64, noSync bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create segment: %w", err)
	}
	err = f.Truncate(size)
	if err == nil && !noSync {
		if err = fdatasync(f); err == nil {
			err = syncDir(filepath.Dir(path))
		}
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("create segment: %w", err)
	}
	return f, nil
}

// syncDir makes directory entries (created, renamed files) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// listSegments returns the segment bases in dir, ascending, and removes
// leftover temporary files.
func listSegments(dir string) ([]int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	var bases []int64
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("remove leftover: %w", err)
			}
			continue
		}
		if b, ok := parseSegmentName(name); ok && e.Type().IsRegular() {
			bases = append(bases, b)
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	return bases, nil
}
