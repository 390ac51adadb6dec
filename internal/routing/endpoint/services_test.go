package endpoint

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

// The NATS and PostgreSQL tests run against real servers the tests start themselves:
// nats-server (go install, into $(go env GOPATH)/bin) and PostgreSQL (Debian's postgresql, in
// /usr/lib/postgresql/<v>/bin). scripts/install-test-services installs both.

const installHint = "run scripts/install-test-services to install it"

var (
	svcMu    sync.Mutex
	natsProc *exec.Cmd
	natsURL  string
	natsErr  error
	natsDone bool
	pgProc   *exec.Cmd
	pgURL    string
	pgErr    error
	pgDone   bool
	svcDirs  []string
)

func stopServices() {
	svcMu.Lock()
	defer svcMu.Unlock()
	for _, c := range []*exec.Cmd{natsProc, pgProc} {
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(syscall.SIGINT)
			done := make(chan struct{})
			go func() { c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = c.Process.Kill()
				<-done
			}
		}
	}
	for _, d := range svcDirs {
		os.RemoveAll(d)
	}
}

// findBinary looks for name in PATH, then in dirs (globs), newest last.
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
	return "", fmt.Errorf("%s not found in PATH or %s: %s", name, strings.Join(globs, ", "), installHint)
}

func freePort(t testing.TB) int {
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

// startNATS starts (once per test binary) nats-server with JetStream on a free loopback port.
func startNATS(t testing.TB) string {
	t.Helper()
	svcMu.Lock()
	defer svcMu.Unlock()
	if !natsDone {
		natsDone = true
		natsURL, natsErr = launchNATS(t)
	}
	if natsErr != nil {
		t.Fatalf("cannot start nats-server: %v", natsErr)
	}
	return natsURL
}

func launchNATS(t testing.TB) (string, error) {
	bin, err := findBinary("nats-server", gopathBin(), "/root/go/bin", "/usr/local/bin")
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "tether-nats-")
	if err != nil {
		return "", err
	}
	svcDirs = append(svcDirs, dir)
	port := freePort(t)
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir)
	logf, _ := os.Create(filepath.Join(dir, "server.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%s: %w", bin, err)
	}
	natsProc = cmd
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			nc.Close()
			return url, nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			return "", fmt.Errorf("nats-server did not come up: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startPostgres starts (once per test binary) a PostgreSQL server in a temporary data directory
// on a free loopback port, trust auth, user postgres.
func startPostgres(t testing.TB) string {
	t.Helper()
	svcMu.Lock()
	defer svcMu.Unlock()
	if !pgDone {
		pgDone = true
		pgURL, pgErr = launchPostgres(t)
	}
	if pgErr != nil {
		t.Fatalf("cannot start PostgreSQL: %v", pgErr)
	}
	return pgURL
}

func launchPostgres(t testing.TB) (string, error) {
	dirs := []string{"/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin"}
	initdb, err := findBinary("initdb", dirs...)
	if err != nil {
		return "", err
	}
	// Prefer the server next to initdb (PATH may hold only symlinks to initdb/pg_ctl).
	if real, err := filepath.EvalSymlinks(initdb); err == nil {
		initdb = real
	}
	server := filepath.Join(filepath.Dir(initdb), "postgres")
	if _, err := os.Stat(server); err != nil {
		if server, err = findBinary("postgres", dirs...); err != nil {
			return "", err
		}
	}
	dir, err := os.MkdirTemp("", "tether-pg-")
	if err != nil {
		return "", err
	}
	svcDirs = append(svcDirs, dir)
	// initdb and postgres refuse to run as root: run them as the postgres user.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", fmt.Errorf("running as root and there is no postgres user to run PostgreSQL as: %v (%s)", err, installHint)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", err
		}
	}
	data := filepath.Join(dir, "data")
	run := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(name, args...)
		c.Dir = dir
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
		return c
	}
	if out, err := run(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C").CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	cmd := run(server, "-D", data, "-p", strconv.Itoa(port), "-k", dir, "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	logPath := filepath.Join(dir, "server.log")
	logf, _ := os.Create(logPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%s: %w", server, err)
	}
	pgProc = cmd
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, url)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return url, nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			return "", fmt.Errorf("PostgreSQL did not come up: %v\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
