package telemetry

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashEnv = "TELEMETRY_CRASH_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

func crashPayload(g, i, j int) []byte {
	return payload(fmt.Sprintf("g%d-%d", g, i), j, 64+(i*31+j)%200)
}

// crashChild appends from several goroutines until killed and prints
// "partition sequence records goroutine counter" for every acknowledged batch.
func crashChild(dir string) {
	// Small WAL files: the load rotates through several, so checkpoints and recycled files
	// are part of what the crash interrupts.
	l, err := Open(Options{Dir: dir, Partitions: 4, SegmentBytes: 64 << 10, walFileBytes: 256 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	round := os.Getenv(crashEnv + "_ROUND")
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				n := 1 + i%3
				var data [][]byte
				for j := range n {
					data = append(data, crashPayload(g, i, j))
				}
				pos, err := l.Append(context.Background(), fmt.Sprintf("%s-dev-%d", round, g), time.Time{}, data...)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				line := fmt.Sprintf("%d %d %d %d %d\n", pos.Partition, pos.Sequence, n, g, i)
				mu.Lock()
				os.Stdout.WriteString(line) // one write per line: a whole line or nothing
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

type acked struct {
	part       int
	seq        int64
	n, g, iter int
}

func runCrashChild(t *testing.T, dir string, round, killAfter int) []acked {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir, crashEnv+"_ROUND="+strconv.Itoa(round))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var got []acked
	sc := bufio.NewScanner(out)
	deadline := time.Now().Add(20 * time.Second)
	killed := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 5 {
			t.Fatalf("bad child line %q", sc.Text())
		}
		var a acked
		a.part, _ = strconv.Atoi(f[0])
		a.seq, _ = strconv.ParseInt(f[1], 10, 64)
		a.n, _ = strconv.Atoi(f[2])
		a.g, _ = strconv.Atoi(f[3])
		a.iter, _ = strconv.Atoi(f[4])
		got = append(got, a)
		if !killed && (len(got) >= killAfter || time.Now().After(deadline)) {
			// SIGKILL mid-load: no chance to flush or close anything.
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("child exited before it was killed after %d acks", len(got))
	}
	return got
}

func TestCrashRecoverySIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	for _, powerLoss := range []bool{false, true} {
		t.Run(fmt.Sprintf("powerLoss=%v", powerLoss), func(t *testing.T) {
			testCrashRecovery(t, powerLoss)
		})
	}
}

// testCrashRecovery SIGKILLs an appending child three times. With powerLoss, every segment
// byte the surviving WAL records cover is then zeroed, as if a power cut had lost all segment
// pages written since the last checkpoint: acknowledged records must come back from the WAL.
func testCrashRecovery(t *testing.T, powerLoss bool) {
	dir := t.TempDir()
	var all []acked
	for round := range 3 {
		got := runCrashChild(t, dir, round, 3000+round*1000)
		t.Logf("round %d: %d acknowledged batches before SIGKILL", round, len(got))
		all = append(all, got...)
		if powerLoss {
			n := loseUncheckpointedPages(t, dir)
			t.Logf("round %d: zeroed %d segment bytes covered by the WAL", round, n)
			if n == 0 {
				t.Fatal("no WAL record survived the crash: the power-loss case tests nothing")
			}
		}
	}
	l := openTest(t, Options{Dir: dir})
	next := make(map[int]int64)
	for _, a := range all {
		recs, err := l.Read(a.part, a.seq, a.n, 0)
		if err != nil {
			t.Fatalf("acked %+v: %v", a, err)
		}
		if len(recs) != a.n {
			t.Fatalf("acked %+v: read %d records", a, len(recs))
		}
		for j, r := range recs {
			if want := crashPayload(a.g, a.iter, j); string(r.Data) != string(want) {
				t.Fatalf("acked %+v record %d: data %q, want %q", a, j, r.Data, want)
			}
		}
		next[a.part] = max(next[a.part], a.seq+int64(a.n))
	}
	// Sequences continue after the highest acknowledged one and are never reused.
	for p := range l.Partitions() {
		info, _ := l.Info(p)
		if info.Last+1 < next[p] {
			t.Fatalf("partition %d: Last %d below acknowledged %d", p, info.Last, next[p]-1)
		}
		readAll(t, l, p, 0, 500) // contiguous and CRC-clean
	}
}

// loseUncheckpointedPages zeroes the segment bytes that valid records of the WAL files in dir
// cover (the record format is read independently of the replay code) and returns how many.
func loseUncheckpointedPages(t *testing.T, dir string) int64 {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "wal-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	var zeroed int64
	for _, name := range names {
		epoch, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(name), "wal-"), ".log"), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+32 <= len(b); {
			n := int(binary.LittleEndian.Uint32(b[off+4:]))
			if binary.LittleEndian.Uint32(b[off:]) != 0x4c415754 || n < 32 || off+n > len(b) ||
				binary.LittleEndian.Uint64(b[off+16:]) != epoch ||
				crc32.Checksum(b[off+12:off+n], crc32.MakeTable(crc32.Castagnoli)) != binary.LittleEndian.Uint32(b[off+8:]) {
				break
			}
			rec := b[off+32 : off+n]
			for range binary.LittleEndian.Uint32(b[off+12:]) {
				part := binary.LittleEndian.Uint32(rec[0:])
				size := int(binary.LittleEndian.Uint32(rec[4:]))
				base := int64(binary.LittleEndian.Uint64(rec[8:]))
				at := int64(binary.LittleEndian.Uint64(rec[16:]))
				seg := filepath.Join(dir, fmt.Sprintf("p%d", part), fmt.Sprintf("%020d.seg", base))
				if f, err := os.OpenFile(seg, os.O_RDWR, 0); err == nil {
					if _, err := f.WriteAt(make([]byte, size), at); err != nil {
						t.Fatal(err)
					}
					f.Close()
					zeroed += int64(size)
				}
				rec = rec[24+size:]
			}
			off += n
		}
	}
	return zeroed
}
