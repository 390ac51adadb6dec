package telemetry

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
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
	l, err := Open(Options{Dir: dir, Partitions: 4, SegmentBytes: 64 << 10})
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
	dir := t.TempDir()
	var all []acked
	for round := range 3 {
		got := runCrashChild(t, dir, round, 3000+round*1000)
		t.Logf("round %d: %d acknowledged batches before SIGKILL", round, len(got))
		all = append(all, got...)
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
