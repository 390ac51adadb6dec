package telemetry

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// copyDir copies the regular files under src to dst: the state a crash leaves when the page
// cache survives (process kill), taken while the log is open and idle.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

func walFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "wal-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestWALRestoresLostSegmentPages: segment pages lost after acknowledgement come back from the
// WAL, across rotations and recycled WAL files; records of a recycled file's old epoch are never
// replayed (renaming the files to other epochs makes every record stale, and the loss stays).
func TestWALRestoresLostSegmentPages(t *testing.T) {
	for _, tc := range []struct {
		name         string
		renameEpochs bool
	}{{"replayed", false}, {"stale epochs ignored", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openTest(t, Options{Dir: dir, Partitions: 3, SegmentBytes: 8 << 10, walFileBytes: 16 << 10})
			exp := make(map[int][]want)
			for i := range 600 {
				key := fmt.Sprintf("dev-%d", i%7)
				d := payload(key, i, 40+i%90)
				mustAppend(t, l, key, time.Time{}, d)
				p := l.PartitionFor(key)
				exp[p] = append(exp[p], want{data: d})
			}
			if n := len(walFiles(t, dir)); n < 2 || n > 3 {
				t.Fatalf("%d WAL files after many rotations, want the current, the next and at most one retiring", n)
			}
			crashed := t.TempDir()
			copyDir(t, dir, crashed)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			os.Remove(filepath.Join(crashed, lockName))
			if zeroed := loseUncheckpointedPages(t, crashed); zeroed == 0 {
				t.Fatal("the WAL covered nothing: the test loses no pages")
			}
			if tc.renameEpochs {
				for _, name := range walFiles(t, crashed) {
					e, _ := parseWALName(filepath.Base(name))
					if err := os.Rename(name, filepath.Join(crashed, walName(e+1000))); err != nil {
						t.Fatal(err)
					}
				}
			}
			r := openTest(t, Options{Dir: crashed})
			lost := 0
			for p := range 3 {
				got := readAll(t, r, p, 0, 1000)
				if !tc.renameEpochs {
					checkRecords(t, p, got, 0, exp[p])
				}
				lost += len(exp[p]) - len(got)
			}
			if tc.renameEpochs && lost == 0 {
				t.Fatal("records of stale epochs were replayed")
			}
		})
	}
}

// TestWALCleanCloseMarksReplayed: after Close the current WAL file starts with a zero header, so
// a clean restart replays (and rewrites, and syncs) nothing.
func TestWALCleanCloseMarksReplayed(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, Options{Dir: dir, Partitions: 2})
	for i := range 10 {
		mustAppend(t, l, fmt.Sprintf("k%d", i), time.Time{}, []byte("x"))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var replayable int
	for _, name := range walFiles(t, dir) {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(string(b[:4]), "TWAL") {
			replayable++
		}
	}
	if replayable != 0 {
		t.Fatalf("%d WAL files still start with a record after a clean close", replayable)
	}
}
