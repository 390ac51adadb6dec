package endpoint

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2/ocf"

	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/telemetry"
)

func storageSpec(name, dir, encoding string, maxChunk int64) Spec {
	return Spec{Name: name, Type: TypeStorage, Retry: fastRetry, Storage: &StorageSpec{
		Directory: dir, Encoding: encoding, BatchFrequencyInSeconds: 1, MaxChunkSizeInBytes: maxChunk, BeyondIoTHub: true,
		FileNameFormat: "{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}",
	}}
}

// storageFiles lists the committed files under dir in write order (per name, then suffix).
func storageFiles(t testing.TB, dir string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == tmpDirName {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	key := func(f string) string { // "mm-2.json" sorts after "mm.json" and "mm-1.json"
		ext := filepath.Ext(f)
		base := strings.TrimSuffix(f, ext)
		if i := strings.LastIndexByte(base, '-'); i > strings.LastIndexByte(base, '/') {
			return base[:i] + "\x01" + strings.Repeat("0", 8-len(base[i+1:])) + base[i+1:]
		}
		return base + "\x00"
	}
	sort.Slice(files, func(i, j int) bool { return key(files[i]) < key(files[j]) })
	return files
}

var fileNameRE = regexp.MustCompile(`^testhub/[01]/\d{4}/\d{2}/\d{2}/\d{2}/\d{2}(-\d+)?\.(json|avro)$`)

func sendBinary(t testing.TB, e *env, dev string, endpoints []string) {
	m := &message.Message{MessageID: "bin", ConnectionDeviceID: dev, EnqueuedTime: time.Now().UTC(), ContentType: "application/octet-stream",
		Body: []byte{0, 1, 2, 0xff}, Routing: &message.Routing{Endpoints: endpoints}}
	data, _ := m.MarshalBinary()
	if _, err := e.log.Append(context.Background(), dev, m.EnqueuedTime, data); err != nil {
		t.Fatal(err)
	}
}

func TestStorageJSON(t *testing.T) {
	e := newEnv(t, telemetry.Options{Partitions: 2})
	dir := filepath.Join(e.dir, "container")
	e.apply(storageSpec("archive", dir, "JSON", 4000))
	e.send(30, []string{"archive"}, "a", "b", "c")
	sendBinary(t, e, "bin-dev", []string{"archive"})
	seq := newSeqChecker()
	var binary int
	waitFor(t, 15*time.Second, "all records in files", func() bool { return e.health("archive").Lag == 0 })
	files := storageFiles(t, dir)
	if len(files) < 3 {
		t.Errorf("files %v: want several (max chunk 4000 bytes)", files)
	}
	for _, f := range files {
		if !fileNameRE.MatchString(f) {
			t.Errorf("file name %q does not follow the format", f)
		}
		st, _ := os.Stat(filepath.Join(dir, f))
		if st.Size() > 4000 {
			t.Errorf("%s is %d bytes, over the max chunk size", f, st.Size())
		}
		fh, err := os.Open(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			var rec struct {
				EnqueuedTimeUtc  string
				Properties       map[string]string
				SystemProperties map[string]string
				Body             json.RawMessage
			}
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("%s: %v: %s", f, err, sc.Bytes())
			}
			if _, err := time.Parse(timeFormat, rec.EnqueuedTimeUtc); err != nil {
				t.Errorf("EnqueuedTimeUtc: %v", err)
			}
			sp := rec.SystemProperties
			if sp["connectionDeviceId"] == "bin-dev" {
				binary++
				var s string
				if err := json.Unmarshal(rec.Body, &s); err != nil {
					t.Errorf("binary body %s is not a base64 string", rec.Body)
				} else if b, _ := base64.StdEncoding.DecodeString(s); string(b) != "\x00\x01\x02\xff" {
					t.Errorf("binary body = %q", b)
				}
				continue
			}
			if sp["contentType"] != "application/json" || sp["contentEncoding"] != "utf-8" || sp["enqueuedTime"] != rec.EnqueuedTimeUtc ||
				sp["connectionDeviceGenerationId"] != "636930642531278483" || !strings.Contains(sp["connectionAuthMethod"], `"scope":"device"`) ||
				rec.Properties["level"] != "storage" {
				t.Errorf("record = %s", sc.Bytes())
			}
			var body struct {
				Device string `json:"device"`
				N      int    `json:"n"`
			}
			if err := json.Unmarshal(rec.Body, &body); err != nil {
				t.Errorf("JSON body stored as %s", rec.Body)
			}
			if err := seq.add(body.Device, body.N); err != nil {
				t.Error(err)
			}
		}
		fh.Close()
	}
	for _, d := range []string{"a", "b", "c"} {
		if n := seq.count(d); n != 30 {
			t.Errorf("device %s: %d messages in files, want 30", d, n)
		}
	}
	if binary != 1 {
		t.Errorf("%d binary records, want 1", binary)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, tmpDirName)); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

func TestStorageAvro(t *testing.T) {
	for _, enc := range []string{"Avro", "AvroDeflate"} {
		t.Run(enc, func(t *testing.T) {
			e := newEnv(t, telemetry.Options{Partitions: 2})
			dir := filepath.Join(e.dir, "container")
			e.apply(storageSpec("archive", dir, enc, 0))
			e.send(20, []string{"archive"}, "a", "b")
			sendBinary(t, e, "bin-dev", []string{"archive"})
			waitFor(t, 15*time.Second, "all records in files", func() bool { return e.health("archive").Lag == 0 })
			seq := newSeqChecker()
			binary := 0
			for _, f := range storageFiles(t, dir) {
				if !fileNameRE.MatchString(f) || !strings.HasSuffix(f, ".avro") {
					t.Errorf("file name %q", f)
				}
				fh, err := os.Open(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				dec, err := ocf.NewDecoder(fh)
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				if got := dec.Schema().(interface{ FullName() string }).FullName(); got != "Microsoft.Azure.Devices.Message" {
					t.Errorf("schema name %s", got)
				}
				for dec.HasNext() {
					var rec AvroRecord
					if err := dec.Decode(&rec); err != nil {
						t.Fatal(err)
					}
					if rec.SystemProperties["connectionDeviceId"] == "bin-dev" {
						binary++
						if rec.Body == nil || string(*rec.Body) != "\x00\x01\x02\xff" {
							t.Errorf("binary body %v", rec.Body)
						}
						continue
					}
					var body struct {
						Device string `json:"device"`
						N      int    `json:"n"`
					}
					if rec.Body == nil || json.Unmarshal(*rec.Body, &body) != nil {
						t.Fatalf("body %v", rec.Body)
					}
					if rec.Properties["level"] != "storage" || rec.SystemProperties["enqueuedTime"] != rec.EnqueuedTimeUtc {
						t.Errorf("record %+v", rec)
					}
					if err := seq.add(body.Device, body.N); err != nil {
						t.Error(err)
					}
				}
				if err := dec.Error(); err != nil {
					t.Fatal(err)
				}
				fh.Close()
			}
			if seq.count("a") != 20 || seq.count("b") != 20 || binary != 1 {
				t.Errorf("got a=%d b=%d binary=%d, want 20 20 1", seq.count("a"), seq.count("b"), binary)
			}
		})
	}
}

// A staged file is committed when the endpoint stops, and its cursor moves with it.
func TestStorageCommitsOnStop(t *testing.T) {
	e := newEnv(t, telemetry.Options{Partitions: 1})
	dir := filepath.Join(e.dir, "container")
	spec := storageSpec("archive", dir, "json", 0)
	spec.Storage.BatchFrequencyInSeconds = 3600
	e.apply(spec)
	e.send(10, []string{"archive"}, "a")
	waitFor(t, 5*time.Second, "staged", func() bool {
		e.d.mu.Lock()
		sink := e.d.eps["archive"].sink.(stagedSink)
		e.d.mu.Unlock()
		open, _ := sink.Due(0)
		return open
	})
	time.Sleep(50 * time.Millisecond)
	if err := e.d.Close(); err != nil {
		t.Fatal(err)
	}
	if files := storageFiles(t, dir); len(files) != 1 {
		t.Fatalf("files after stop: %v", files)
	}
	cur, _, _ := e.d.cursors.load("archive")
	info, _ := e.log.Info(0)
	if cur[0] != info.Last+1 {
		t.Errorf("cursor %d after stop, want %d", cur[0], info.Last+1)
	}
}
