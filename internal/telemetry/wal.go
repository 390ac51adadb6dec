package telemetry

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// The write-ahead log makes one group commit of every partition durable with a single
// fdatasync. Each group's frames are written to their partitions' segment files (not synced)
// and, as one record, to the current WAL file, which is synced. A device's fdatasync costs tens
// of microseconds of CPU and a flush of the device cache whatever the size, so one sync per group
// instead of one per partition is what lets many partitions share a disk.
//
// When a WAL file is full the committer continues in the next one (prepared in the background)
// and hands the full one to a checkpoint: the segment files written during its epoch are
// fdatasynced, after which its records are redundant and the file is recycled as the WAL file
// after next. On Open every WAL file's records are replayed into the segment files (only bytes
// that differ are written) before the partitions are scanned, so an acknowledged group is in its
// segments even if the crash lost their unsynced pages.

const (
	walPrefix          = "wal-"
	walSuffix          = ".log"
	walFileBytes       = 32 << 20
	walHeaderSize      = 32
	walChunkHeaderSize = 24
	walMagic           = 0x4c415754 // "TWAL"
)

// A WAL record:
//
//	0  uint32 magic
//	4  uint32 record length (header + chunks)
//	8  uint32 CRC-32C of bytes 12..length
//	12 uint32 number of chunks
//	16 uint64 epoch (the file's, from its name: stale records of a recycled file do not match)
//	24 8 bytes reserved, zero
//
// followed by chunks, each a 24-byte header and the frames written to one segment:
//
//	0  uint32 partition
//	4  uint32 length of the frames
//	8  int64  segment base (names the file)
//	16 int64  offset of the frames in the segment

type walFile struct {
	epoch uint64
	path  string
	f     *os.File
	size  int64
	off   int64
}

func walName(epoch uint64) string { return fmt.Sprintf("%s%020d%s", walPrefix, epoch, walSuffix) }

func parseWALName(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, walPrefix)
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, walSuffix)
	if !ok {
		return 0, false
	}
	e, err := strconv.ParseUint(s, 10, 64)
	return e, err == nil
}

// checkpointJob retires a full WAL file: sync the segment files written in its epoch, then
// recycle the file as epoch next.
type checkpointJob struct {
	old   *walFile // nil: only prepare epoch next
	files []*fileRef
	next  uint64
}

// wal is owned by the log's committer goroutine, except for the checkpoint goroutine's own
// channels.
type wal struct {
	dir       string
	fileBytes int64 // size of a new WAL file
	logger    *slog.Logger
	cur       *walFile
	dirty     map[*fileRef]struct{} // segment files written in cur's epoch (each holds a ref)

	buf     []byte     // the record being built
	chunks  int        // chunks in buf
	recRefs []*fileRef // files the record's chunks were written to
	failed  error      // sticky

	prepared chan *walFile // the next WAL file
	jobs     chan checkpointJob
	done     chan struct{} // checkpoint goroutine ended
}

// startWAL takes over the (already replayed and checkpointed) WAL files left in dir and
// starts epoch after maxEpoch, recycling old files rather than zero-filling new ones.
func startWAL(dir string, old []*walFile, maxEpoch uint64, fileBytes int64, logger *slog.Logger) (*wal, error) {
	w := &wal{
		dir: dir, logger: logger, fileBytes: fileBytes, dirty: make(map[*fileRef]struct{}),
		prepared: make(chan *walFile, 1), jobs: make(chan checkpointJob, 1), done: make(chan struct{}),
	}
	epoch := maxEpoch + 1
	var spare *walFile
	var err error
	switch {
	case len(old) > 0:
		w.cur, err = recycleWAL(dir, old[0], epoch)
		if err == nil && len(old) > 1 {
			spare, err = recycleWAL(dir, old[1], epoch+1)
		}
		for _, f := range old[min(len(old), 2):] {
			f.f.Close()
			if rerr := os.Remove(f.path); rerr != nil && err == nil {
				err = fmt.Errorf("remove old WAL file: %w", rerr)
			}
		}
		if err == nil {
			err = syncDir(dir)
		}
	default:
		w.cur, err = createWAL(dir, epoch, fileBytes)
	}
	if err != nil {
		for _, f := range []*walFile{w.cur, spare} {
			if f != nil {
				f.f.Close()
			}
		}
		return nil, fmt.Errorf("start WAL: %w", err)
	}
	go w.checkpoints()
	if spare != nil {
		w.prepared <- spare
	} else {
		w.jobs <- checkpointJob{next: epoch + 1}
	}
	return w, nil
}

// createWAL makes a zero-filled WAL file (real blocks: appending to it changes no metadata, so
// its fdatasync only flushes data) and makes its name durable.
func createWAL(dir string, epoch uint64, size int64) (*walFile, error) {
	path := filepath.Join(dir, walName(epoch))
	f, err := createZeroFile(path, size)
	if err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return &walFile{epoch: epoch, path: path, f: f, size: size}, nil
}

// recycleWAL renames a retired WAL file to epoch's name; its old records no longer match the
// name's epoch. The caller syncs the directory before writing to it.
func recycleWAL(dir string, f *walFile, epoch uint64) (*walFile, error) {
	path := filepath.Join(dir, walName(epoch))
	if err := os.Rename(f.path, path); err != nil {
		f.f.Close()
		return nil, fmt.Errorf("recycle WAL file: %w", err)
	}
	return &walFile{epoch: epoch, path: path, f: f.f, size: f.size}, nil
}

// add appends to the record being built a chunk: frames just written at off in the segment
// with the given base.
func (w *wal) add(partition int, ref *fileRef, base, off int64, frames []byte) {
	if len(w.buf) == 0 {
		w.buf = append(w.buf, make([]byte, walHeaderSize)...)
	}
	var h [walChunkHeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(partition))
	binary.LittleEndian.PutUint32(h[4:], uint32(len(frames)))
	binary.LittleEndian.PutUint64(h[8:], uint64(base))
	binary.LittleEndian.PutUint64(h[16:], uint64(off))
	w.buf = append(w.buf, h[:]...)
	w.buf = append(w.buf, frames...)
	w.chunks++
	w.recRefs = append(w.recRefs, ref)
}

// commit writes the record built since the last commit and makes it durable. After an error
// the WAL refuses everything: what reached the file is unknown.
func (w *wal) commit() error {
	if w.chunks == 0 {
		return w.failed
	}
	rec, chunks, refs := w.buf, w.chunks, w.recRefs
	w.chunks = 0
	w.recRefs = w.recRefs[:0]
	if cap(w.buf) > 2*maxGroupBytes {
		w.buf = nil // a huge group went through; do not pin its buffer
	} else {
		w.buf = w.buf[:0]
	}
	defer clear(refs)
	if w.failed != nil {
		return w.failed
	}
	if w.cur.off+int64(len(rec)) > w.cur.size {
		if err := w.rotate(int64(len(rec))); err != nil {
			w.failed = err
			return err
		}
	}
	for _, ref := range refs {
		if _, ok := w.dirty[ref]; !ok {
			ref.acquire()
			w.dirty[ref] = struct{}{}
		}
	}
	binary.LittleEndian.PutUint32(rec[0:], walMagic)
	binary.LittleEndian.PutUint32(rec[4:], uint32(len(rec)))
	binary.LittleEndian.PutUint32(rec[12:], uint32(chunks))
	binary.LittleEndian.PutUint64(rec[16:], w.cur.epoch)
	binary.LittleEndian.PutUint32(rec[8:], crc32.Checksum(rec[12:], castagnoli))
	if _, err := w.cur.f.WriteAt(rec, w.cur.off); err != nil {
		w.failed = fmt.Errorf("write WAL: %w", err)
		return w.failed
	}
	if err := fdatasync(w.cur.f); err != nil {
		w.failed = fmt.Errorf("sync WAL: %w", err)
		return w.failed
	}
	w.cur.off += int64(len(rec))
	return nil
}

// rotate retires the current file to a checkpoint and continues in the prepared one, which it
// grows when one record needs more room than a WAL file has.
func (w *wal) rotate(need int64) error {
	files := make([]*fileRef, 0, len(w.dirty))
	for ref := range w.dirty {
		files = append(files, ref)
	}
	clear(w.dirty)
	old := w.cur
	w.jobs <- checkpointJob{old: old, files: files, next: old.epoch + 2}
	next := <-w.prepared
	if next == nil {
		return errors.New("rotate WAL: no next file (see the earlier checkpoint error)")
	}
	w.cur = next
	if need > next.size {
		if err := fillZeros(next.f, next.size, need); err != nil {
			return fmt.Errorf("rotate WAL: %w", err)
		}
		next.size = need
	}
	return nil
}

// checkpoints runs the checkpoint jobs in order and prepares each next WAL file.
func (w *wal) checkpoints() {
	defer close(w.done)
	for job := range w.jobs {
		synced := true
		for _, ref := range job.files {
			if err := fdatasync(ref.f); err != nil {
				synced = false
				w.logger.Error("telemetry: checkpoint sync failed; the WAL file is kept for replay",
					"file", ref.f.Name(), "err", err)
			}
			ref.release()
		}
		var (
			next *walFile
			err  error
		)
		if job.old != nil && synced {
			next, err = recycleWAL(w.dir, job.old, job.next)
			if err == nil {
				err = syncDir(w.dir)
			}
		} else {
			if job.old != nil {
				job.old.f.Close()
			}
			next, err = createWAL(w.dir, job.next, w.fileBytes)
		}
		if err != nil {
			w.logger.Error("telemetry: prepare next WAL file", "epoch", job.next, "err", err)
			next = nil
		}
		w.prepared <- next
	}
}

// close checkpoints everything (Close drained the queue first), marks the current file as
// replayed by zeroing its first record header, and closes the files.
func (w *wal) close() error {
	var errs []error
	for ref := range w.dirty {
		if err := fdatasync(ref.f); err != nil {
			errs = append(errs, err)
		}
		ref.release()
	}
	clear(w.dirty)
	close(w.jobs)
	<-w.done
	select {
	case next := <-w.prepared:
		if next != nil {
			errs = append(errs, next.f.Close())
		}
	default: // a failed rotation took the last one
	}
	if errors.Join(errs...) == nil && w.failed == nil && w.cur.off > 0 {
		var zero [walHeaderSize]byte
		_, err := w.cur.f.WriteAt(zero[:], 0)
		if err == nil {
			err = fdatasync(w.cur.f)
		}
		errs = append(errs, err)
	}
	errs = append(errs, w.cur.f.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close WAL: %w", err)
	}
	return nil
}

// replayWAL writes the records of every WAL file in dir into the partitions' segment files,
// syncs what it changed and returns the WAL files (open, to be recycled) and the highest
// epoch. A record that is torn, corrupt or of another epoch ends its file.
func replayWAL(dir string, partitions int, logger *slog.Logger) ([]*walFile, uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("replay WAL: %w", err)
	}
	var files []*walFile
	var maxEpoch uint64
	for _, e := range entries {
		if epoch, ok := parseWALName(e.Name()); ok && e.Type().IsRegular() {
			files = append(files, &walFile{epoch: epoch, path: filepath.Join(dir, e.Name())})
			maxEpoch = max(maxEpoch, epoch)
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].epoch < files[j].epoch })
	r := replayer{dir: dir, partitions: partitions, logger: logger, segs: make(map[string]*os.File)}
	for _, wf := range files {
		if err := r.replayFile(wf); err != nil {
			r.closeAll()
			for _, f := range files {
				if f.f != nil {
					f.f.Close()
				}
			}
			return nil, 0, err
		}
	}
	if err := r.finish(); err != nil {
		for _, f := range files {
			f.f.Close()
		}
		return nil, 0, err
	}
	return files, maxEpoch, nil
}

// removeWALFiles deletes replayed WAL files (a log opened with NoSync runs without a WAL).
func removeWALFiles(files []*walFile) error {
	var errs []error
	for _, f := range files {
		f.f.Close()
		if err := os.Remove(f.path); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove replayed WAL files: %w", err)
	}
	return nil
}

type replayer struct {
	dir        string
	partitions int
	logger     *slog.Logger
	segs       map[string]*os.File // segment files opened for replay; nil = missing
	changed    map[*os.File]bool
	cmp        []byte
	records    int
	rewritten  int64
}

// Every segment a record covers is synced, not only those replay changed: after a process
// crash (no reboot) the bytes are there but possibly only in the page cache, and the WAL files
// are recycled once replay returns.

func (r *replayer) replayFile(wf *walFile) error {
	f, err := os.OpenFile(wf.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("replay WAL: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("replay WAL: %w", err)
	}
	wf.f, wf.size = f, fi.Size()
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, wf.size), zeroChunk)
	var hdr [walHeaderSize]byte
	var rec []byte
	for off := int64(0); off+walHeaderSize <= wf.size; {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return fmt.Errorf("replay %s at %d: %w", wf.path, off, err)
		}
		n := int64(binary.LittleEndian.Uint32(hdr[4:]))
		if binary.LittleEndian.Uint32(hdr[0:]) != walMagic || n < walHeaderSize || off+n > wf.size ||
			binary.LittleEndian.Uint64(hdr[16:]) != wf.epoch {
			return nil
		}
		if int64(cap(rec)) < n {
			rec = make([]byte, n)
		}
		rec = rec[:n]
		copy(rec, hdr[:])
		if _, err := io.ReadFull(br, rec[walHeaderSize:]); err != nil {
			return fmt.Errorf("replay %s at %d: %w", wf.path, off, err)
		}
		if crc32.Checksum(rec[12:], castagnoli) != binary.LittleEndian.Uint32(rec[8:]) {
			return nil // torn: the group was never acknowledged
		}
		if err := r.applyRecord(rec, binary.LittleEndian.Uint32(rec[12:])); err != nil {
			return fmt.Errorf("replay %s at %d: %w", wf.path, off, err)
		}
		off += n
	}
	return nil
}

func (r *replayer) applyRecord(rec []byte, chunks uint32) error {
	b := rec[walHeaderSize:]
	for range chunks {
		if len(b) < walChunkHeaderSize {
			return fmt.Errorf("%w: short WAL chunk", errCorrupt)
		}
		part := int(binary.LittleEndian.Uint32(b[0:]))
		n := int(binary.LittleEndian.Uint32(b[4:]))
		base := int64(binary.LittleEndian.Uint64(b[8:]))
		off := int64(binary.LittleEndian.Uint64(b[16:]))
		b = b[walChunkHeaderSize:]
		if part >= r.partitions || n > len(b) || off < 0 {
			return fmt.Errorf("%w: WAL chunk for partition %d, %d bytes at %d", errCorrupt, part, n, off)
		}
		if err := r.apply(part, base, off, b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	r.records++
	return nil
}

// apply writes frames at off in the segment unless they are already there. A missing segment
// was removed by retention after the record was written: nothing to restore.
func (r *replayer) apply(part int, base, off int64, frames []byte) error {
	path := filepath.Join(r.dir, fmt.Sprintf("p%d", part), segmentName(base))
	f, ok := r.segs[path]
	if !ok {
		var err error
		f, err = os.OpenFile(path, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			f = nil
		} else if err != nil {
			return fmt.Errorf("open segment for replay: %w", err)
		}
		r.segs[path] = f
	}
	if f == nil {
		return nil
	}
	if cap(r.cmp) < len(frames) {
		r.cmp = make([]byte, len(frames))
	}
	cur := r.cmp[:len(frames)]
	n, err := f.ReadAt(cur, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read segment for replay: %w", err)
	}
	if n == len(frames) && bytes.Equal(cur, frames) {
		return nil
	}
	if _, err := f.WriteAt(frames, off); err != nil {
		return fmt.Errorf("replay into segment: %w", err)
	}
	if r.changed == nil {
		r.changed = make(map[*os.File]bool)
	}
	r.changed[f] = true
	r.rewritten += int64(len(frames))
	return nil
}

// finish syncs the segments the records cover and closes them.
func (r *replayer) finish() error {
	var errs []error
	for _, f := range r.segs {
		if f != nil {
			errs = append(errs, fdatasync(f))
		}
	}
	r.closeAll()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("replay WAL: %w", err)
	}
	if r.rewritten > 0 {
		r.logger.Warn("telemetry: restored acknowledged records from the WAL",
			"records", r.records, "segments", len(r.changed), "bytes", r.rewritten)
	}
	return nil
}

func (r *replayer) closeAll() {
	for _, f := range r.segs {
		if f != nil {
			f.Close()
		}
	}
	clear(r.segs)
}
