package routing

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/routing/endpoint"
)

type recordDispatcher struct {
	applied [][]endpoint.Spec
	fail    error
}

func (d *recordDispatcher) Apply(_ context.Context, specs []endpoint.Spec) error {
	if d.fail != nil {
		return d.fail
	}
	d.applied = append(d.applied, specs)
	return nil
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func routeNames(r *Router) []string {
	cfg, _ := r.Config()
	var out []string
	for _, rt := range cfg.Routes {
		out = append(out, rt.Name)
	}
	return out
}

func TestManagerPrecedenceAndReload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "tether.yaml")
	writeFile(t, file, `mqtt-addr: ":8883"
routing:
  limits: {routes: 2}
  routes:
    - {name: from-file, source: DeviceMessages, endpointNames: [events]}
`)
	r := NewRouter("h", nil)
	d := &recordDispatcher{}
	m, err := NewManager(ctx, ManagerOptions{Router: r, ConfigFile: file, DataDir: dir, Dispatcher: d})
	if err != nil {
		t.Fatal(err)
	}
	if _, limits, source, _ := m.Current(); source != SourceFile || limits.Routes != 2 || limits.Endpoints != 10 {
		t.Fatalf("source %s limits %+v", source, limits)
	}
	if got := routeNames(r); len(got) != 1 || got[0] != "from-file" || len(d.applied) != 1 {
		t.Fatalf("routes %v, applied %d", got, len(d.applied))
	}

	// The API's configuration takes precedence and is persisted; limits are the file's.
	doc, _ := ParseYAML([]byte("routes:\n- {name: from-api, source: DeviceMessages, endpointNames: [events]}"))
	_, _, _, etag := m.Current()
	if err := m.Put(ctx, doc, "stale"); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("stale etag: %v", err)
	}
	if err := m.Put(ctx, doc, etag); err != nil {
		t.Fatal(err)
	}
	if got := routeNames(r); got[0] != "from-api" {
		t.Fatalf("after put: %v", got)
	}
	three, _ := ParseYAML([]byte(`routes:
- {name: a, source: DeviceMessages, endpointNames: [events]}
- {name: b, source: DeviceMessages, endpointNames: [events]}
- {name: c, source: DeviceMessages, endpointNames: [events]}`))
	if err := m.Put(ctx, three, ""); err == nil || !strings.Contains(err.Error(), "the limit is 2") {
		t.Fatalf("over the file's limit: %v", err)
	}
	doc.Limits = &Limits{Routes: 50}
	if err := m.Put(ctx, doc, ""); err == nil || !strings.Contains(err.Error(), "limits: limits are set by the operator") {
		t.Fatalf("limits through the API: %v", err)
	}
	doc.Limits = nil
	d.fail = errors.New("boom")
	bad, _ := ParseYAML([]byte("routes:\n- {name: other, source: DeviceMessages, endpointNames: [events]}"))
	if err := m.Put(ctx, bad, ""); err == nil {
		t.Fatal("dispatcher failure not reported")
	}
	d.fail = nil
	if got := routeNames(r); got[0] != "from-api" {
		t.Fatalf("a failed put changed the routes: %v", got)
	}

	// A restart keeps the API's configuration.
	r2 := NewRouter("h", nil)
	if _, err := NewManager(ctx, ManagerOptions{Router: r2, ConfigFile: file, DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	if got := routeNames(r2); got[0] != "from-api" {
		t.Fatalf("after restart: %v", got)
	}

	// Reset returns to the file; reloads follow the file; a broken file changes nothing.
	if err := m.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile)); !os.IsNotExist(err) {
		t.Fatalf("routing.json still there: %v", err)
	}
	writeFile(t, file, "routing:\n  routes:\n    - {name: edited, source: DeviceMessages, endpointNames: [events]}\n")
	future := time.Now().Add(time.Minute)
	os.Chtimes(file, future, future)
	if err := m.Reload(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := routeNames(r); got[0] != "edited" {
		t.Fatalf("after reload: %v", got)
	}
	writeFile(t, file, "routing:\n  routes:\n    - {name: broken, source: Nope, endpointNames: [events]}\n")
	if err := m.Reload(ctx, true); err == nil || !strings.Contains(err.Error(), `routing.routes[0].source: "Nope"`) {
		t.Fatalf("broken file: %v", err)
	}
	if got := routeNames(r); got[0] != "edited" {
		t.Fatalf("a broken file changed the routes: %v", got)
	}
	// A broken file at start is an error.
	if _, err := NewManager(ctx, ManagerOptions{Router: NewRouter("h", nil), ConfigFile: file, DataDir: t.TempDir()}); err == nil {
		t.Fatal("start with a broken file")
	}
}
