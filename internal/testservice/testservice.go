// Package testservice starts the external servers that the custom endpoint tests talk to: a
// nats-server with JetStream and a PostgreSQL server, each owned by one test (or benchmark),
// on a free loopback port, in a temporary directory, and stopped when the test ends.
//
// The binaries are not vendored: nats-server is looked for in PATH and $(go env GOPATH)/bin,
// PostgreSQL (initdb, postgres) in PATH and /usr/lib/postgresql/<v>/bin. When one is missing the
// test fails with a message naming scripts/install-test-services, which installs both.
package testservice

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

// InstallHint ends the error a test fails with when a server binary is missing.
const InstallHint = "run scripts/install-test-services to install it"

// stopTimeout bounds a graceful stop before the process is killed.
const stopTimeout = 10 * time.Second

// StartNATS starts a nats-server with JetStream for the test and returns its URL
// (nats://127.0.0.1:<port>). It is stopped, and its store removed, when the test ends.
func StartNATS(t testing.TB) string {
	t.Helper()
	return NewNATS(t).URL
}

// NATS is a running nats-server with JetStream owned by one test. Stop and Start take it down
// and bring it back on the same port with the same JetStream store, as a restarted server.
type NATS struct {
	// URL is the client URL, nats://127.0.0.1:<port>; it does not change across restarts.
	URL string

	bin  string
	dir  string
	port int

	mu   sync.Mutex
	proc *process
}

// NewNATS starts a nats-server with JetStream for the test. It is stopped, and its store
// removed, when the test ends.
func NewNATS(t testing.TB) *NATS {
	t.Helper()
	bin, err := findBinary("nats-server", gopathBin(), "/root/go/bin", "/usr/local/bin")
	if err != nil {
		t.Fatalf("cannot start nats-server: %v", err)
	}
	dir, err := os.MkdirTemp("", "tether-nats-")
	if err != nil {
		t.Fatal(err)
	}
	n := &NATS{bin: bin, dir: dir, port: freePort(t)}
	n.URL = fmt.Sprintf("nats://127.0.0.1:%d", n.port)
	t.Cleanup(func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.proc != nil {
			n.proc.stop(syscall.SIGTERM)
			n.proc = nil
		}
		os.RemoveAll(dir)
	})
	n.Start(t)
	return n
}

// Start starts the server if it is stopped and waits until it accepts clients.
func (n *NATS) Start(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil {
		return
	}
	logPath := filepath.Join(n.dir, "server.log")
	cmd := exec.Command(n.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-js", "-sd", filepath.Join(n.dir, "store"))
	p, err := startProcess(cmd, logPath)
	if err != nil {
		t.Fatalf("cannot start nats-server: %v", err)
	}
	n.proc = p
	deadline := time.Now().Add(20 * time.Second)
	for {
		nc, err := nats.Connect(n.URL)
		if err == nil {
			nc.Close()
			return
		}
		if p.exited() || time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("nats-server did not come up on %s: %v\n%s", n.URL, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s). Its JetStream store stays for Start.
func (n *NATS) Stop(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return
	}
	if !n.proc.stop(syscall.SIGTERM) {
		t.Logf("nats-server did not stop within %v of SIGTERM: killed", stopTimeout)
	}
	n.proc = nil
}

// StartPostgres starts a PostgreSQL server for the test, in a temporary data directory on a free
// loopback port, with trust authentication, and returns a connection string for user postgres,
// database postgres (postgres://postgres@127.0.0.1:<port>/postgres?sslmode=disable). It is
// stopped, and its data removed, when the test ends. Durability settings are off (fsync,
// synchronous_commit, full_page_writes): the server is for tests only.
func StartPostgres(t testing.TB) string {
	t.Helper()
	dirs := []string{"/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin"}
	initdb, err := findBinary("initdb", dirs...)
	if err != nil {
		t.Fatalf("cannot start PostgreSQL: %v", err)
	}
	// Prefer the server next to initdb (PATH may hold only symlinks to initdb/pg_ctl).
	if real, err := filepath.EvalSymlinks(initdb); err == nil {
		initdb = real
	}
	server := filepath.Join(filepath.Dir(initdb), "postgres")
	if _, err := os.Stat(server); err != nil {
		if server, err = findBinary("postgres", dirs...); err != nil {
			t.Fatalf("cannot start PostgreSQL: %v", err)
		}
	}
	dir, err := os.MkdirTemp("", "tether-pg-")
	if err != nil {
		t.Fatal(err)
	}
	var proc *process
	t.Cleanup(func() {
		if proc != nil {
			proc.stop(syscall.SIGINT) // fast shutdown
		}
		os.RemoveAll(dir)
	})
	// initdb and postgres refuse to run as root: run them as the postgres user.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("cannot start PostgreSQL: running as root and there is no postgres user to run it as: %v (%s)", err, InstallHint)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	command := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(name, args...)
		c.Dir = dir
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		return c
	}
	if out, err := command(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C").CombinedOutput(); err != nil {
		t.Fatalf("cannot start PostgreSQL: initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	logPath := filepath.Join(dir, "server.log")
	proc, err = startProcess(command(server, "-D", data, "-p", strconv.Itoa(port), "-k", dir, "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"), logPath)
	if err != nil {
		t.Fatalf("cannot start PostgreSQL: %v", err)
	}
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, dsn)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return dsn
		}
		if proc.exited() || time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("PostgreSQL did not come up on port %d: %v\n%s", port, err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// process is a started server and the end of its Wait.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startProcess starts cmd with its output appended to logPath. It stays in the test's process
// group, so a Ctrl-C of `go test` stops it too (the test binary then dies without cleanups).
func startProcess(cmd *exec.Cmd, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop signals the process and waits for it, killing it after stopTimeout. It reports whether
// the process ended by itself.
func (p *process) stop(sig syscall.Signal) bool {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return true
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

// findBinary looks for name in PATH, then in globs (directories), the last in sorted order first
// (the newest version).
func findBinary(name string, globs ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	var found []string
	for _, g := range globs {
		m, _ := filepath.Glob(filepath.Join(g, name))
		found = append(found, m...)
	}
	sort.Strings(found)
	for i := len(found) - 1; i >= 0; i-- {
		if st, err := os.Stat(found[i]); err == nil && !st.IsDir() {
			return found[i], nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s: %s", name, strings.Join(globs, ", "), InstallHint)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func gopathBin() string {
	if gp := os.Getenv("GOPATH"); gp != "" {
		return filepath.Join(strings.Split(gp, string(os.PathListSeparator))[0], "bin")
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		return filepath.Join(strings.TrimSpace(string(out)), "bin")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, "go", "bin")
}
