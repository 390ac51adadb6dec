package endpoint

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/hamba/avro/v2/ocf"

	"github.com/tetherhub/tether/internal/message"
)

// AvroSchema is the schema of the records in Avro storage files: the fields of IoT Hub's storage
// record (spec 8.4), under IoT Hub's record name.
const AvroSchema = `{"type":"record","name":"Message","namespace":"Microsoft.Azure.Devices","fields":[` +
	`{"name":"EnqueuedTimeUtc","type":"string"},` +
	`{"name":"Properties","type":{"type":"map","values":"string"}},` +
	`{"name":"SystemProperties","type":{"type":"map","values":"string"}},` +
	`{"name":"Body","type":["null","bytes"]}]}`

var avroSchema = avro.MustParse(AvroSchema)

// AvroRecord is one message in an Avro storage file.
type AvroRecord struct {
	EnqueuedTimeUtc  string            `avro:"EnqueuedTimeUtc"`
	Properties       map[string]string `avro:"Properties"`
	SystemProperties map[string]string `avro:"SystemProperties"`
	Body             *[]byte           `avro:"Body"`
}

// JSONRecord is one line of a JSON storage file. Body is the body itself when the message is
// application/json in utf-8, else a base64 string.
type JSONRecord struct {
	EnqueuedTimeUtc  string            `json:"EnqueuedTimeUtc"`
	Properties       map[string]string `json:"Properties"`
	SystemProperties map[string]string `json:"SystemProperties"`
	Body             json.RawMessage   `json:"Body"`
}

// ChunkStore stores the files of a storage endpoint. DirStore writes to a directory; an object
// store (S3, Azure Blob) can implement the same two calls with a multipart upload.
type ChunkStore interface {
	// Create starts a new chunk, invisible to readers until committed.
	Create(ctx context.Context) (Chunk, error)
}

// Chunk is a file being written.
type Chunk interface {
	io.Writer
	// Commit makes the written bytes durable and visible under name ('/'-separated, relative);
	// when name is taken it adds "-1", "-2"… before the extension. It returns the name used.
	Commit(ctx context.Context, name string) (string, error)
	// Abort discards the chunk.
	Abort() error
}

// DirStore is a ChunkStore in a local directory: a chunk is written to a temporary file in
// Dir/.tether-tmp, fsynced, then hard-linked to its name (atomic, never replacing a file) and the
// directories are fsynced.
type DirStore struct {
	Dir    string
	Prefix string // temporary file prefix, so endpoints sharing Dir keep apart

	once sync.Once
}

const tmpDirName = ".tether-tmp"

// Create implements ChunkStore.
func (s *DirStore) Create(context.Context) (Chunk, error) {
	tmp := filepath.Join(s.Dir, tmpDirName)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	s.once.Do(func() {
		// Temporary files of a previous run of this endpoint: its chunks were never committed
		// (their messages are delivered again from the cursor).
		old, _ := filepath.Glob(filepath.Join(tmp, s.Prefix+"*"))
		for _, f := range old {
			_ = os.Remove(f)
		}
	})
	f, err := os.CreateTemp(tmp, s.Prefix+"*")
	if err != nil {
		return nil, err
	}
	return &dirChunk{root: s.Dir, f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

type dirChunk struct {
	root string
	f    *os.File
	w    *bufio.Writer
}

func (c *dirChunk) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *dirChunk) Abort() error {
	c.f.Close()
	return os.Remove(c.f.Name())
}

func (c *dirChunk) Commit(_ context.Context, name string) (string, error) {
	err := c.w.Flush()
	if err == nil {
		err = c.f.Sync()
	}
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(c.f.Name())
		return "", err
	}
	defer os.Remove(c.f.Name())
	final := filepath.Join(c.root, filepath.FromSlash(name))
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	ext := filepath.Ext(final)
	base := strings.TrimSuffix(final, ext)
	used := final
	for i := 1; ; i++ {
		err := os.Link(c.f.Name(), used)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || i > 10000 {
			return "", err
		}
		used = base + "-" + strconv.Itoa(i) + ext
	}
	// Make the new name (and any directories just created) durable.
	for d := dir; ; d = filepath.Dir(d) {
		if err := syncDir(d); err != nil {
			return "", err
		}
		if rel, err := filepath.Rel(c.root, d); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			break
		}
	}
	rel, _ := filepath.Rel(c.root, used)
	return filepath.ToSlash(rel), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}

// storageSink batches messages into files, per partition, like IoT Hub's storage endpoint: a
// file is written when its batch frequency elapsed since its first message or when the next
// message would make it larger than the max chunk size. No empty files are written.
type storageSink struct {
	name      string
	hub       string
	format    string
	ext       string
	encoding  string
	frequency time.Duration
	maxChunk  int64
	store     ChunkStore
	now       func() time.Time

	mu    sync.Mutex
	parts map[int]*openChunk
}

type openChunk struct {
	chunk  Chunk
	avro   *ocf.Encoder
	opened time.Time
	size   int64
	count  int
}

func newStorageSink(s Spec, env sinkEnv) (Sink, batchLimits, error) {
	st := *s.Storage
	if err := os.MkdirAll(st.Directory, 0o755); err != nil {
		return nil, batchLimits{}, &FieldError{Endpoint: s.Name, Field: "storage.directory", Message: err.Error()}
	}
	ss := &storageSink{
		name:      s.Name,
		hub:       env.hub,
		format:    st.FileNameFormat,
		encoding:  strings.ToLower(st.Encoding),
		frequency: time.Duration(st.BatchFrequencyInSeconds) * time.Second,
		maxChunk:  st.MaxChunkSizeInBytes,
		store:     &DirStore{Dir: st.Directory, Prefix: s.Name + "."},
		now:       env.now,
		parts:     map[int]*openChunk{},
	}
	if ss.format == "" {
		ss.format = DefaultFileNameFormat
	}
	if ss.encoding == "" {
		ss.encoding = EncodingAvro
	}
	ss.ext = ".avro"
	if ss.encoding == EncodingJSON {
		ss.ext = ".json"
	}
	if ss.frequency == 0 {
		ss.frequency = DefaultBatchFrequencySeconds * time.Second
	}
	if ss.maxChunk == 0 {
		ss.maxChunk = DefaultMaxChunkSizeBytes
	}
	if ss.hub == "" {
		ss.hub = "tether"
	}
	return ss, batchLimits{records: 256, bytes: 4 << 20}, nil
}

func (s *storageSink) part(p int) *openChunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.parts[p]
}

func (s *storageSink) setPart(p int, c *openChunk) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c == nil {
		delete(s.parts, p)
	} else {
		s.parts[p] = c
	}
}

// Deliver stages the batch into the partition's open file.
func (s *storageSink) Deliver(ctx context.Context, batch []Delivery) error {
	if len(batch) == 0 {
		return nil
	}
	p := batch[0].Partition
	oc := s.part(p)
	for i, d := range batch {
		rec, err := s.encode(d.Message)
		if err != nil {
			return &PartialError{Done: i, Err: err}
		}
		if oc != nil && oc.count > 0 && oc.size+int64(len(rec)) > s.maxChunk {
			return &PartialError{Done: i, Err: errChunkFull}
		}
		if oc == nil {
			if oc, err = s.open(ctx); err != nil {
				return &PartialError{Done: i, Err: err}
			}
			s.setPart(p, oc)
		}
		if oc.avro != nil {
			_, err = oc.avro.Write(rec)
		} else {
			_, err = oc.chunk.Write(rec)
		}
		if err != nil {
			return &PartialError{Done: i, Err: err}
		}
		oc.size += int64(len(rec))
		oc.count++
	}
	return nil
}

func (s *storageSink) open(ctx context.Context) (*openChunk, error) {
	c, err := s.store.Create(ctx)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	oc := &openChunk{chunk: c, opened: s.now()}
	if s.encoding != EncodingJSON {
		codec := ocf.Null
		if s.encoding == EncodingAvroDeflate {
			codec = ocf.Deflate
		}
		oc.avro, err = ocf.NewEncoderWithSchema(avroSchema, c, ocf.WithCodec(codec))
		if err != nil {
			c.Abort()
			return nil, fmt.Errorf("storage: %w", err)
		}
	}
	return oc, nil
}

// encode is one record in the sink's encoding.
func (s *storageSink) encode(m *message.Message) ([]byte, error) {
	props := m.Properties
	if props == nil {
		props = map[string]string{}
	}
	if s.encoding == EncodingJSON {
		b, err := json.Marshal(JSONRecord{
			EnqueuedTimeUtc:  formatTime(m.EnqueuedTime),
			Properties:       props,
			SystemProperties: storageSystemProperties(m),
			Body:             bodyJSON(m),
		})
		return append(b, '\n'), err
	}
	body := m.Body
	if body == nil {
		body = []byte{}
	}
	return avro.Marshal(avroSchema, AvroRecord{
		EnqueuedTimeUtc:  formatTime(m.EnqueuedTime),
		Properties:       props,
		SystemProperties: storageSystemProperties(m),
		Body:             &body,
	})
}

// Due implements stagedSink.
func (s *storageSink) Due(p int) (bool, time.Time) {
	oc := s.part(p)
	if oc == nil {
		return false, time.Time{}
	}
	return true, oc.opened.Add(s.frequency)
}

// Discard implements stagedSink.
func (s *storageSink) Discard(p int) {
	if oc := s.part(p); oc != nil {
		oc.chunk.Abort()
		s.setPart(p, nil)
	}
}

// Commit implements stagedSink: the file is complete, synced and renamed when it returns nil.
func (s *storageSink) Commit(ctx context.Context, p int) error {
	oc := s.part(p)
	if oc == nil {
		return nil
	}
	s.setPart(p, nil)
	if oc.avro != nil {
		if err := oc.avro.Close(); err != nil {
			oc.chunk.Abort()
			return fmt.Errorf("storage: %w", err)
		}
	}
	name := s.fileName(p, oc.opened)
	if _, err := oc.chunk.Commit(ctx, name); err != nil {
		return fmt.Errorf("storage: write %s: %w", name, err)
	}
	return nil
}

// fileName renders fileNameFormat for a file of partition p opened at t (UTC), with the
// encoding's extension.
func (s *storageSink) fileName(p int, t time.Time) string {
	t = t.UTC()
	hub := strings.NewReplacer("/", "_", `\`, "_").Replace(s.hub)
	r := strings.NewReplacer(
		"{iothub}", hub,
		"{partition}", strconv.Itoa(p),
		"{YYYY}", fmt.Sprintf("%04d", t.Year()),
		"{MM}", fmt.Sprintf("%02d", int(t.Month())),
		"{DD}", fmt.Sprintf("%02d", t.Day()),
		"{HH}", fmt.Sprintf("%02d", t.Hour()),
		"{mm}", fmt.Sprintf("%02d", t.Minute()),
	)
	return path.Clean(r.Replace(s.format)) + s.ext
}

func (s *storageSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, oc := range s.parts {
		oc.chunk.Abort()
		delete(s.parts, p)
	}
	return nil
}
