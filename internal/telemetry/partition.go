package telemetry

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

const (
	maxGroupBytes  = 4 << 20 // cap on one group commit's write (one request may exceed it)
	writebackBytes = 1 << 20 // segment bytes between writeback hints
)

// partition is one ordered stream. The writer goroutine owns the fields in
// the "writer" block; mu guards the published, durable state readers use.
type partition struct {
	id  int
	dir string
	log *Log

	mu     sync.RWMutex
	segs   []*segment // ascending; the last one is active
	first  int64      // first retained sequence
	next   int64      // next sequence to become durable (Last+1)
	lastT  int64      // time of the last durable record (0 = unknown)
	notify chan struct{}
	closed bool

	// writer
	active    *segment
	woff      int64 // write offset in active == active.end between groups
	nextSeq   int64
	wlastT    int64
	lastIndex int64 // offset of the newest index entry in active (-indexInterval if none)
	buf       []byte
	inflight  []*Pending
	entries   []indexEntry
	flushT0   int64       // time of the first record in buf
	failed    error       // sticky: after a failed write or sync nothing more is appended
	updates   []segUpdate // written, published when the group is durable
	written   int64       // offset in active up to which writeback was started
	staged    bool        // in the committer's current group
}

func openPartition(l *Log, id int) (*partition, error) {
	dir := filepath.Join(l.opts.Dir, fmt.Sprintf("p%d", id))
	p := &partition{
		id:     id,
		dir:    dir,
		log:    l,
		notify: make(chan struct{}),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open partition %d: %w", id, err)
	}
	bases, err := listSegments(dir)
	if err != nil {
		return nil, fmt.Errorf("open partition %d: %w", id, err)
	}
	if len(bases) == 0 {
		path := filepath.Join(dir, segmentName(0))
		f, err := createSegmentFile(path, l.opts.SegmentBytes, l.opts.NoSync)
		if err != nil {
			return nil, fmt.Errorf("open partition %d: %w", id, err)
		}
		s := &segment{base: 0, path: path, size: l.opts.SegmentBytes, last: -1, file: newFileRef(f)}
		p.segs = []*segment{s}
	}
	for i, base := range bases {
		s, err := p.loadSegment(base, i == len(bases)-1)
		if err != nil {
			p.closeFiles()
			return nil, fmt.Errorf("open partition %d: %w", id, err)
		}
		p.segs = append(p.segs, s)
	}
	for i := 1; i < len(p.segs); i++ {
		if prev := p.segs[i-1]; prev.last+1 != p.segs[i].base {
			l.opts.Logger.Warn("telemetry: sequence gap between segments",
				"partition", id, "segment", p.segs[i].path, "prev_last", prev.last, "base", p.segs[i].base)
		}
	}
	act := p.segs[len(p.segs)-1]
	p.active = act
	p.first = p.segs[0].base
	p.next = act.last + 1
	for i := len(p.segs) - 1; i >= 0; i-- {
		if !p.segs[i].empty() {
			p.lastT = p.segs[i].lastTime
			break
		}
	}
	p.woff = act.end
	p.written = act.end
	p.nextSeq = p.next
	p.wlastT = p.lastT
	p.lastIndex = -indexInterval
	if n := len(act.index); n > 0 {
		p.lastIndex = act.index[n-1].off
	}
	return p, nil
}

// loadSegment scans one segment file; the active (last) one is also repaired.
func (p *partition) loadSegment(base int64, active bool) (*segment, error) {
	path := filepath.Join(p.dir, segmentName(base))
	flag := os.O_RDONLY
	if active {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("load segment: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("load segment: %w", err)
	}
	res, err := scanSegment(f, fi.Size(), base)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("load segment: %w", err)
	}
	s := &segment{
		base: base, path: path, size: fi.Size(), end: res.end, last: res.last,
		firstTime: res.firstTime, lastTime: res.lastTime, index: res.index,
	}
	lg := p.log.opts.Logger
	if !active {
		if res.stop != nil {
			lg.Error("telemetry: corrupt sealed segment; records after the corruption are unreadable",
				"partition", p.id, "segment", path, "offset", res.end, "err", res.stop)
		}
		return s, f.Close()
	}
	// Zero everything after the valid prefix: stale frames of a torn write must
	// never be taken for records once new appends reach them.
	wrote, err := zeroTail(f, res.end, fi.Size())
	if err == nil && wrote && !p.log.opts.NoSync {
		err = fdatasync(f)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("repair segment: %w", err)
	}
	if wrote || res.stop != nil {
		lg.Warn("telemetry: truncated torn tail of active segment",
			"partition", p.id, "segment", path, "offset", res.end, "last", res.last, "reason", res.stop)
	}
	s.file = newFileRef(f)
	return s, nil
}

// closeFiles releases the partition's handles (on Close or a failed open).
func (p *partition) closeFiles() error {
	var errs []error
	for _, s := range p.segs {
		if s.file != nil {
			errs = append(errs, s.file.release())
			s.file = nil
		}
	}
	if a := p.active; a != nil && a.file != nil {
		// A partition that failed after a roll: the new segment was never published.
		errs = append(errs, a.file.release())
		a.file = nil
	}
	return errors.Join(errs...)
}

// stage encodes r into the write buffer for the committer's current group, writing out what is
// buffered first when r needs a new segment.
func (p *partition) stage(r *Pending) {
	if p.failed != nil {
		failAll([]*Pending{r}, p.failed)
		return
	}
	if p.woff+int64(len(p.buf))+int64(r.size) > p.active.size {
		p.write()
		if p.failed == nil {
			if err := p.roll(int64(r.size)); err != nil {
				p.fail(fmt.Errorf("append to partition %d: roll segment: %w", p.id, err))
			}
		}
		if p.failed != nil {
			failAll([]*Pending{r}, p.failed)
			return
		}
	}
	p.encode(r)
}

// fail makes the partition refuse appends until reopened and fails what is staged: after a
// failed write or sync the state of unsynced pages is unknown.
func (p *partition) fail(err error) {
	if p.failed == nil {
		p.failed = err
		p.log.opts.Logger.Error("telemetry: partition failed", "partition", p.id, "err", err)
	}
	failAll(p.inflight, p.failed)
	clear(p.inflight)
	p.inflight = p.inflight[:0]
	p.buf = p.buf[:0]
	p.entries = p.entries[:0]
	p.updates = p.updates[:0]
}

func failAll(rs []*Pending, err error) {
	for _, r := range rs {
		r.err = err
		r.data = nil
		close(r.done)
	}
}

// encode appends r's records to the write buffer and assigns sequences.
func (p *partition) encode(r *Pending) {
	t := max(r.t, p.wlastT) // keep record times non-decreasing for SeekTime
	p.wlastT = t
	if len(p.buf) == 0 {
		p.flushT0 = t
	}
	r.pos = Position{Partition: p.id, Sequence: p.nextSeq}
	last := len(r.data) - 1
	for i, d := range r.data {
		var flags byte
		if i == 0 {
			flags |= flagBatchStart
		}
		if i == last {
			flags |= flagBatchEnd
		}
		off := p.woff + int64(len(p.buf))
		if off-p.lastIndex >= indexInterval {
			p.entries = append(p.entries, indexEntry{seq: p.nextSeq, time: t, off: off})
			p.lastIndex = off
		}
		p.buf = appendFrame(p.buf, p.nextSeq, t, flags, d)
		p.nextSeq++
	}
	r.data = nil
	p.inflight = append(p.inflight, r)
}

// segUpdate is a change to the partition's published state, applied once the group is durable:
// new frames at the end of seg, or (when next is set) seg sealed and next made active.
type segUpdate struct {
	seg                  *segment
	end, last, t, firstT int64
	entries              []indexEntry
	next                 *segment
}

// write puts the buffered frames into the active segment (not synced) and into the WAL record
// of the group.
func (p *partition) write() {
	if len(p.buf) == 0 || p.failed != nil {
		return
	}
	s := p.active
	if _, err := s.file.f.WriteAt(p.buf, p.woff); err != nil {
		p.fail(fmt.Errorf("append to partition %d: %w", p.id, err))
		return
	}
	if w := p.log.wal; w != nil {
		w.add(p.id, s.file, s.base, p.woff, p.buf)
	}
	p.woff += int64(len(p.buf))
	p.writeback(s.file.f, writebackBytes)
	p.updates = append(p.updates, segUpdate{
		seg: s, end: p.woff, last: p.nextSeq - 1, t: p.wlastT, firstT: p.flushT0,
		entries: append([]indexEntry(nil), p.entries...),
	})
	p.entries = p.entries[:0]
	if cap(p.buf) > 2*maxGroupBytes {
		p.buf = nil // a huge batch went through; do not pin its buffer
	} else {
		p.buf = p.buf[:0]
	}
}

// publish makes the group's writes visible to readers and releases their waiters; the
// committer calls it once the group is durable.
func (p *partition) publish() {
	if len(p.updates) == 0 {
		return
	}
	var sealed []*segment
	p.mu.Lock()
	for _, u := range p.updates {
		s := u.seg
		if u.next != nil {
			p.segs = append(p.segs, u.next)
			sealed = append(sealed, s)
			continue
		}
		if s.empty() {
			s.firstTime = u.firstT
		}
		s.end, s.last, s.lastTime = u.end, u.last, u.t
		s.index = append(s.index, u.entries...)
		p.next, p.lastT = u.last+1, u.t
	}
	ch := p.notify
	p.notify = make(chan struct{})
	p.mu.Unlock()
	close(ch)
	for i, r := range p.inflight {
		close(r.done)
		p.inflight[i] = nil
	}
	p.inflight = p.inflight[:0]
	clear(p.updates)
	p.updates = p.updates[:0]
	for _, s := range sealed {
		p.seal(s)
	}
}

// roll starts a new active segment that can hold need bytes; the old one is sealed when the
// group is published.
func (p *partition) roll(need int64) error {
	old := p.active
	size := max(p.log.opts.SegmentBytes, need)
	if old.empty() && len(p.updates) == 0 {
		// Nothing to seal (a fresh segment too small for a huge batch): grow it.
		if err := old.file.f.Truncate(size); err != nil {
			return fmt.Errorf("grow segment: %w", err)
		}
		p.mu.Lock()
		old.size = size
		p.mu.Unlock()
		return nil
	}
	path := filepath.Join(p.dir, segmentName(p.nextSeq))
	f, err := createSegmentFile(path, size, p.log.opts.NoSync)
	if err != nil {
		return err
	}
	s := &segment{base: p.nextSeq, path: path, size: size, last: p.nextSeq - 1, file: newFileRef(f)}
	p.updates = append(p.updates, segUpdate{seg: old, next: s})
	p.writeback(old.file.f, 1)
	p.active = s
	p.woff = 0
	p.written = 0
	p.lastIndex = -indexInterval
	p.log.opts.Logger.Debug("telemetry: rolled segment", "partition", p.id, "base", s.base)
	return nil
}

// writeback starts writeback of the active segment's bytes written since the last hint, once
// there are at least atLeast of them.
func (p *partition) writeback(f *os.File, atLeast int64) {
	if !p.log.opts.NoSync && p.woff-p.written >= atLeast {
		startWriteback(f, p.written, p.woff-p.written)
		p.written = p.woff
	}
}

// seal gives back a sealed segment's unused tail and drops the partition's handle: readers
// open sealed segments by path.
func (p *partition) seal(s *segment) {
	p.mu.Lock()
	file := s.file
	s.file = nil
	p.mu.Unlock()
	if file == nil {
		return
	}
	// Not synced; if lost, the tail just stays zero.
	if err := file.f.Truncate(s.end); err != nil {
		p.log.opts.Logger.Warn("telemetry: truncate sealed segment", "segment", s.path, "err", err)
	} else {
		p.mu.Lock()
		s.size = s.end
		p.mu.Unlock()
	}
	file.release()
}

// enforceRetention drops the oldest sealed segments that are older than
// cutoff (by newest record time) or exceed maxBytes.
func (p *partition) enforceRetention(cutoff, maxBytes int64) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	var total int64
	for _, s := range p.segs {
		total += s.end
	}
	n := 0
	for ; n < len(p.segs)-1; n++ {
		s := p.segs[n]
		old := s.empty() || s.lastTime < cutoff
		over := maxBytes > 0 && total > maxBytes
		if !old && !over {
			break
		}
		total -= s.end
	}
	removed := append([]*segment(nil), p.segs[:n]...)
	if n > 0 {
		p.segs = append([]*segment(nil), p.segs[n:]...)
		p.first = p.segs[0].base
	}
	p.mu.Unlock()
	var errs []error
	for _, s := range removed {
		// Readers that already opened the file keep reading it after unlink;
		// new readers see first moved and return ErrBeforeRetained.
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("retention of partition %d: %w", p.id, err))
			continue
		}
		p.log.opts.Logger.Debug("telemetry: removed segment", "partition", p.id, "segment", s.path,
			"last", s.last, "last_time", s.lastTime)
	}
	return errors.Join(errs...)
}

// readSpan is what a reader needs to read one segment without the lock.
type readSpan struct {
	path     string
	file     *fileRef // acquired, or nil: open path
	off, end int64
	last     int64 // last durable sequence in the segment
	nextBase int64 // first sequence after the segment
}

// spanFor finds the segment holding seq (the caller holds mu.RLock and has
// checked first <= seq < next).
func (p *partition) spanFor(seq int64, byTime bool, t int64) readSpan {
	i := sort.Search(len(p.segs), func(i int) bool { return p.segs[i].base > seq }) - 1
	i = max(i, 0)
	s := p.segs[i]
	sp := readSpan{path: s.path, end: s.end, last: s.last, nextBase: p.next}
	if i+1 < len(p.segs) {
		sp.nextBase = p.segs[i+1].base
	}
	if byTime {
		sp.off = s.lookupTime(t)
	} else {
		sp.off = s.lookup(seq)
	}
	if s.file != nil {
		s.file.acquire()
		sp.file = s.file
	}
	return sp
}

// open returns a file for the span and a func to release it. A missing file
// means retention removed the segment in the meantime.
func (sp *readSpan) open() (*os.File, func(), error) {
	if sp.file != nil {
		return sp.file.f, func() { sp.file.release() }, nil
	}
	f, err := os.Open(sp.path)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}
