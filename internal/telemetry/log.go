package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"
)

// Sentinel errors; returned errors wrap them with detail (use errors.Is).
var (
	ErrClosed         = errors.New("telemetry log closed")
	ErrBeforeRetained = errors.New("sequence before first retained record")
	ErrBadPartition   = errors.New("no such partition")
)

const (
	queueLen    = 16384    // pending Submits before Submit blocks
	readBufSize = 64 << 10 // read chunk
	metaName    = "meta.json"
	lockName    = "LOCK"
)

// Position locates a record.
type Position struct {
	Partition int
	Sequence  int64
}

// Record is a record read from the log. Data is a private copy.
type Record struct {
	Partition int
	Sequence  int64
	Time      time.Time
	Data      []byte
}

// PartitionInfo describes the retained, durable records of a partition.
// When Empty, First == Last+1 == the next sequence to be written.
type PartitionInfo struct {
	Partition        int
	First            int64
	Last             int64
	LastEnqueuedTime time.Time // time of the newest durable record; zero if unknown
	Empty            bool
	Bytes            int64 // bytes of frames (headers + data) in retained segments
}

// Log is a durable, partitioned, append-only log. It is safe for concurrent use.
type Log struct {
	opts  Options
	parts []*partition
	lock  *os.File
	queue chan *Pending
	wal   *wal // nil with NoSync

	// The committer goroutine's.
	group   []*Pending
	touched []*partition

	closeMu sync.RWMutex // held shared by Submit while enqueueing, exclusively by Close
	closed  bool
	stop    chan struct{}
	writers sync.WaitGroup
	bg      sync.WaitGroup
	bufs    sync.Pool // *[]byte read buffers
}

// Pending is a submitted batch whose durability can be awaited.
type Pending struct {
	part *partition
	t    int64
	data [][]byte
	size int // encoded bytes
	done chan struct{}
	pos  Position
	err  error
}

// Done is closed when the batch is durable or has failed.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait blocks until the batch is durable (fdatasync done) or failed and
// returns the position of its first record.
func (p *Pending) Wait(ctx context.Context) (Position, error) {
	select {
	case <-p.done:
		return p.pos, p.err
	default:
	}
	select {
	case <-p.done:
		return p.pos, p.err
	case <-ctx.Done():
		return Position{}, fmt.Errorf("wait for append: %w", ctx.Err())
	}
}

type meta struct {
	Version    int `json:"version"`
	Partitions int `json:"partitions"`
}

// Open creates or recovers the log in opts.Dir and starts its goroutines.
func Open(opts Options) (*Log, error) {
	opts.EnsureDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("open telemetry log: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(opts.Dir, lockName), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open telemetry log: %w", err)
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open telemetry log %s: already in use: %w", opts.Dir, err)
	}
	n, err := loadMeta(&opts)
	if err != nil {
		lock.Close()
		return nil, err
	}
	opts.Partitions = n
	l := &Log{opts: opts, lock: lock, stop: make(chan struct{}), queue: make(chan *Pending, queueLen)}
	l.bufs.New = func() any { b := make([]byte, readBufSize); return &b }
	// Before the partitions are scanned: replay restores acknowledged records whose segment
	// pages a crash lost. Also with NoSync, so that its recovery never rewrites what a WAL
	// still holds.
	walFiles, maxEpoch, err := replayWAL(opts.Dir, n, opts.Logger)
	if err != nil {
		lock.Close()
		return nil, err
	}
	if opts.NoSync {
		err, walFiles = removeWALFiles(walFiles), nil
	}
	fail := func(err error) (*Log, error) {
		for _, q := range l.parts {
			if q != nil {
				q.closeFiles()
			}
		}
		for _, f := range walFiles {
			f.f.Close() // a second Close of a file startWAL took over only reports ErrClosed
		}
		lock.Close()
		return nil, err
	}
	if err != nil {
		return fail(err)
	}
	// Partitions recover independently: scanning them in parallel divides the time to open a
	// large log by up to the number of cores (the scan is CPU-bound when the files are cached).
	// One scan per core at most: each holds a read buffer of zeroChunk bytes.
	l.parts = make([]*partition, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			l.parts[i], errs[i] = openPartition(l, i)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	if !opts.NoSync {
		if l.wal, err = startWAL(opts.Dir, walFiles, maxEpoch, opts.walFileBytes, opts.Logger); err != nil {
			return fail(err)
		}
	}
	l.writers.Add(1)
	go l.commitLoop()
	l.bg.Add(1)
	go l.retentionLoop()
	opts.Logger.Info("telemetry: log opened", "dir", opts.Dir, "partitions", n)
	return l, nil
}

// loadMeta reads the persisted partition count or persists a new one.
func loadMeta(opts *Options) (int, error) {
	path := filepath.Join(opts.Dir, metaName)
	b, err := os.ReadFile(path)
	if err == nil {
		var m meta
		if err := json.Unmarshal(b, &m); err != nil {
			return 0, fmt.Errorf("read %s: %w", path, err)
		}
		if m.Version != 1 || m.Partitions < 1 {
			return 0, fmt.Errorf("read %s: unsupported version %d or partitions %d", path, m.Version, m.Partitions)
		}
		if opts.Partitions != 0 && opts.Partitions != m.Partitions {
			return 0, fmt.Errorf("open telemetry log: %d partitions requested, log in %s has %d", opts.Partitions, opts.Dir, m.Partitions)
		}
		return m.Partitions, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("open telemetry log: %w", err)
	}
	n := opts.Partitions
	if n == 0 {
		n = DefaultPartitions
	}
	b, _ = json.Marshal(meta{Version: 1, Partitions: n})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return 0, fmt.Errorf("write meta: %w", err)
	}
	if f, err := os.Open(tmp); err == nil {
		err = f.Sync()
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("write meta: %w", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, fmt.Errorf("write meta: %w", err)
	}
	if err := syncDir(opts.Dir); err != nil {
		return 0, err
	}
	return n, nil
}

// Close drains pending appends (they complete durably), stops the goroutines
// and closes the files. Closing twice is a no-op.
func (l *Log) Close() error {
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return nil
	}
	l.closed = true
	l.closeMu.Unlock()
	close(l.stop)
	l.writers.Wait()
	l.bg.Wait()
	var errs []error
	if l.wal != nil {
		errs = append(errs, l.wal.close())
	}
	for _, p := range l.parts {
		p.mu.Lock()
		p.closed = true
		close(p.notify)
		p.mu.Unlock()
		errs = append(errs, p.closeFiles())
	}
	errs = append(errs, l.lock.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close telemetry log: %w", err)
	}
	return nil
}

// Partitions returns the number of partitions.
func (l *Log) Partitions() int { return len(l.parts) }

// PartitionFor maps a key (the device id) to a partition with FNV-1a 32-bit
// modulo partitions. This mapping is part of the on-disk contract and must
// never change. partitions < 1 yields 0.
func PartitionFor(key string, partitions int) int {
	if partitions < 1 {
		return 0
	}
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(partitions))
}

// PartitionFor maps key to one of this log's partitions.
func (l *Log) PartitionFor(key string) int { return PartitionFor(key, len(l.parts)) }

func (l *Log) part(partition int) (*partition, error) {
	if partition < 0 || partition >= len(l.parts) {
		return nil, fmt.Errorf("partition %d of %d: %w", partition, len(l.parts), ErrBadPartition)
	}
	return l.parts[partition], nil
}

// Submit enqueues the records as one atomic batch for key's partition and
// returns at once; it blocks only while the partition's queue is full, until
// ctx is done. A zero t means now. Times are made non-decreasing per partition.
// Submits from one goroutine are appended in order. The caller must not
// modify data after Submit.
func (l *Log) Submit(ctx context.Context, key string, t time.Time, data ...[]byte) (*Pending, error) {
	p := l.parts[l.PartitionFor(key)]
	if len(data) == 0 {
		return nil, fmt.Errorf("append to partition %d: no records", p.id)
	}
	size := 0
	for _, d := range data {
		if len(d) > MaxRecordBytes {
			return nil, fmt.Errorf("append to partition %d: record of %d bytes exceeds %d", p.id, len(d), MaxRecordBytes)
		}
		size += frameSize(len(d))
	}
	if t.IsZero() {
		t = l.opts.Now()
	}
	r := &Pending{part: p, t: t.UnixNano(), data: data, size: size, done: make(chan struct{})}
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return nil, fmt.Errorf("append to partition %d: %w", p.id, ErrClosed)
	}
	select {
	case l.queue <- r:
		return r, nil
	default:
	}
	select {
	case l.queue <- r:
		return r, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("append to partition %d: %w", p.id, ctx.Err())
	}
}

// commitLoop is the committer goroutine: group commit of all partitions until stop, then it
// drains the queue.
func (l *Log) commitLoop() {
	defer l.writers.Done()
	for {
		var first *Pending
		select {
		case first = <-l.queue:
		case <-l.stop:
			// Close guarantees no new Submit after stop; finish what is queued.
			for {
				select {
				case r := <-l.queue:
					l.commit(l.collect(r))
				default:
					return
				}
			}
		}
		l.commit(l.collect(first))
	}
}

// collect takes first and whatever else is queued, up to maxGroupBytes.
func (l *Log) collect(first *Pending) []*Pending {
	g := append(l.group[:0], first)
	n := first.size
	for n < maxGroupBytes {
		select {
		case r := <-l.queue:
			g = append(g, r)
			n += r.size
			continue
		default:
		}
		break
	}
	l.group = g
	return g
}

// commit writes a group to its partitions' segments and the WAL, syncs the WAL once, then
// publishes every partition's part and releases the waiters.
func (l *Log) commit(group []*Pending) {
	touched := l.touched[:0]
	for _, r := range group {
		p := r.part
		if !p.staged {
			p.staged = true
			touched = append(touched, p)
		}
		p.stage(r)
	}
	for _, p := range touched {
		p.write()
	}
	if l.wal != nil {
		if err := l.wal.commit(); err != nil {
			// Nothing of the group is known to be durable, and the WAL cannot take more.
			err = fmt.Errorf("append: %w", err)
			for _, p := range l.parts {
				p.fail(err)
			}
		}
	}
	for _, p := range touched {
		p.publish()
		p.staged = false
	}
	clear(group)
	clear(touched)
	l.touched = touched[:0]
}

// Append is Submit followed by Wait.
func (l *Log) Append(ctx context.Context, key string, t time.Time, data ...[]byte) (Position, error) {
	pd, err := l.Submit(ctx, key, t, data...)
	if err != nil {
		return Position{}, err
	}
	return pd.Wait(ctx)
}

// Notify returns a channel closed after the next durable append to the
// partition or on Close. For a bad partition it returns a closed channel
// (the following Read reports the error).
func (l *Log) Notify(partition int) <-chan struct{} {
	p, err := l.part(partition)
	if err != nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.notify
}

// Info describes the partition's retained, durable records.
func (l *Log) Info(partition int) (PartitionInfo, error) {
	p, err := l.part(partition)
	if err != nil {
		return PartitionInfo{}, err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return PartitionInfo{}, fmt.Errorf("info of partition %d: %w", partition, ErrClosed)
	}
	info := PartitionInfo{Partition: partition, First: p.first, Last: p.next - 1, Empty: p.first >= p.next}
	if p.lastT != 0 {
		info.LastEnqueuedTime = time.Unix(0, p.lastT).UTC()
	}
	for _, s := range p.segs {
		info.Bytes += s.end
	}
	return info, nil
}

// Read returns up to max (> 0) durable records with Sequence >= from. It
// returns an error wrapping ErrBeforeRetained when from < First and an empty
// slice when from > Last. maxBytes caps the total data size (0 = no cap) but
// at least one record is returned when available. Data is copied out.
func (l *Log) Read(partition int, from int64, max int, maxBytes int) ([]Record, error) {
	return l.ReadInto(new(ReadBuffer), partition, from, max, maxBytes)
}

// ReadBuffer is memory that ReadInto reuses from one call to the next, for a
// reader that is done with a batch before it reads the next one (a tailing
// reader would otherwise allocate, and clear, its batch's memory on every
// read). The zero value is ready to use.
type ReadBuffer struct {
	arena []byte
	ends  []int
	recs  []Record
}

// ReadInto is Read into buf: the records and their Data are buf's, valid until
// the next ReadInto with buf.
func (l *Log) ReadInto(buf *ReadBuffer, partition int, from int64, max int, maxBytes int) ([]Record, error) {
	p, err := l.part(partition)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if max <= 0 {
		return nil, fmt.Errorf("read partition %d: max %d must be positive", partition, max)
	}
	var (
		recs  = buf.recs[:0]
		ends  = buf.ends[:0] // end of each record's data in arena
		arena = buf.arena[:0]
		sized bool
		full  bool
	)
	for len(recs) < max && !full {
		p.mu.RLock()
		if p.closed {
			p.mu.RUnlock()
			return nil, fmt.Errorf("read partition %d: %w", partition, ErrClosed)
		}
		if from < p.first {
			first := p.first
			p.mu.RUnlock()
			if len(recs) > 0 {
				break // retention raced with us; return what we have
			}
			return nil, fmt.Errorf("read partition %d from %d (first retained %d): %w", partition, from, first, ErrBeforeRetained)
		}
		if from >= p.next {
			p.mu.RUnlock()
			break
		}
		sp := p.spanFor(from, false, 0)
		p.mu.RUnlock()
		if from > sp.last { // a gap (only after corruption): skip to the next segment
			if sp.file != nil {
				sp.file.release()
			}
			if sp.nextBase <= from {
				return nil, fmt.Errorf("read partition %d at %d: %w: inconsistent segments", partition, from, errCorrupt)
			}
			from = sp.nextBase
			continue
		}
		f, release, err := sp.open()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && !p.retained(from) {
				continue // removed by retention meanwhile; the loop reports it
			}
			return nil, fmt.Errorf("read partition %d: %w", partition, err)
		}
		start := from
		if !sized {
			// Sized once from what the span holds: growing by append copied the batch
			// several times (a tailing reader asks for little more than was just written).
			sized = true
			n := sp.end - sp.off
			if maxBytes > 0 && n > int64(maxBytes) {
				n = int64(maxBytes)
			}
			k := int64(max)
			if est := n / (headerSize + 64); est < k {
				k = est + 1
			}
			if n > int64(cap(arena)) {
				arena = make([]byte, 0, n)
			}
			if k > int64(cap(ends)) {
				ends = make([]int, 0, k)
				recs = make([]Record, 0, k)
			}
		}
		err = l.iterate(f, sp.off, sp.end, func(h frameHeader, data []byte) bool {
			if h.seq < from {
				return true
			}
			if len(recs) > 0 && maxBytes > 0 && len(arena)+len(data) > maxBytes {
				full = true
				return false
			}
			arena = append(arena, data...)
			ends = append(ends, len(arena))
			recs = append(recs, Record{Partition: partition, Sequence: h.seq, Time: time.Unix(0, h.time).UTC()})
			from = h.seq + 1
			if len(recs) >= max || (maxBytes > 0 && len(arena) >= maxBytes) {
				full = true
				return false
			}
			return true
		})
		release()
		if err != nil {
			return nil, fmt.Errorf("read partition %d at %d: %w", partition, start, err)
		}
		if !full && from <= sp.last {
			return nil, fmt.Errorf("read partition %d: %w: sequence %d not found in %s", partition, errCorrupt, from, sp.path)
		}
	}
	prev := 0
	for i := range recs {
		recs[i].Data = arena[prev:ends[i]:ends[i]]
		prev = ends[i]
	}
	buf.arena, buf.ends, buf.recs = arena, ends, recs
	return recs, nil
}

// retained reports whether seq has not been removed by retention.
func (p *partition) retained(seq int64) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return seq >= p.first
}

// SeekTime returns the sequence of the first retained record whose Time >= t
// (Last+1 if none).
func (l *Log) SeekTime(partition int, t time.Time) (int64, error) {
	p, err := l.part(partition)
	if err != nil {
		return 0, fmt.Errorf("seek time: %w", err)
	}
	tn := t.UnixNano()
	for {
		p.mu.RLock()
		if p.closed {
			p.mu.RUnlock()
			return 0, fmt.Errorf("seek time in partition %d: %w", partition, ErrClosed)
		}
		i := sort.Search(len(p.segs), func(i int) bool {
			s := p.segs[i]
			return !s.empty() && s.lastTime >= tn
		})
		if i == len(p.segs) {
			next := p.next
			p.mu.RUnlock()
			return next, nil
		}
		sp := p.spanFor(p.segs[i].base, true, tn)
		p.mu.RUnlock()
		f, release, err := sp.open()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed by retention meanwhile; search again
			}
			return 0, fmt.Errorf("seek time in partition %d: %w", partition, err)
		}
		seq := sp.last + 1
		err = l.iterate(f, sp.off, sp.end, func(h frameHeader, _ []byte) bool {
			if h.time >= tn {
				seq = h.seq
				return false
			}
			return true
		})
		release()
		if err != nil {
			return 0, fmt.Errorf("seek time in partition %d: %w", partition, err)
		}
		return seq, nil
	}
}

// iterate calls fn for each CRC-checked frame of f in [off, end) until fn
// returns false. data is only valid during the call.
func (l *Log) iterate(f *os.File, off, end int64, fn func(h frameHeader, data []byte) bool) error {
	bp := l.bufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 1<<20 {
			l.bufs.Put(bp)
		}
	}()
	for off < end {
		buf := *bp
		n := int(min(int64(len(buf)), end-off))
		if n < headerSize {
			return fmt.Errorf("%w: %d stray bytes at offset %d", errCorrupt, n, off)
		}
		if m, err := f.ReadAt(buf[:n], off); m < n {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read %s: %w", f.Name(), err)
		}
		b := buf[:n]
		for len(b) >= headerSize {
			h, err := parseHeader(b)
			if err != nil {
				return fmt.Errorf("at offset %d: %w", off, err)
			}
			if int64(h.size) > end-off {
				return fmt.Errorf("%w: frame at offset %d runs past durable end %d", errCorrupt, off, end)
			}
			if h.size > len(b) {
				if h.size > len(buf) {
					nb := make([]byte, h.size)
					*bp = nb
				}
				break
			}
			if err := checkFrame(h, b); err != nil {
				return fmt.Errorf("at offset %d: %w", off, err)
			}
			if !fn(h, b[headerSize:h.size]) {
				return nil
			}
			off += int64(h.size)
			b = b[h.size:]
		}
	}
	return nil
}

// EnforceRetention removes sealed segments past Retention or MaxBytes now
// (the background loop calls it every RetentionInterval).
func (l *Log) EnforceRetention() error {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return fmt.Errorf("enforce retention: %w", ErrClosed)
	}
	cutoff := l.opts.Now().Add(-l.opts.Retention).UnixNano()
	var errs []error
	for _, p := range l.parts {
		errs = append(errs, p.enforceRetention(cutoff, l.opts.MaxBytes))
	}
	return errors.Join(errs...)
}

func (l *Log) retentionLoop() {
	defer l.bg.Done()
	t := time.NewTicker(l.opts.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.EnforceRetention(); err != nil && !errors.Is(err, ErrClosed) {
				l.opts.Logger.Error("telemetry: retention", "err", err)
			}
		}
	}
}
