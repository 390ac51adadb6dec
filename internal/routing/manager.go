package routing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/tetherhub/tether/internal/routing/endpoint"
)

// StateFile is where a configuration set through the service API is kept, in the data
// directory. It holds endpoint secrets and is written with owner-only permissions.
const StateFile = "routing.json"

// Where the configuration in force comes from.
const (
	SourceDefault = "default" // neither the file nor the API configured routing
	SourceFile    = "file"    // the configuration file's routing section
	SourceAPI     = "api"     // PUT /configuration/routing (routing.json)
)

// ErrPreconditionFailed is returned by Put when If-Match does not match the configuration in
// force.
var ErrPreconditionFailed = errors.New("the routing configuration changed: its etag does not match")

// Dispatcher is the custom endpoints' deliverer (package routing/endpoint): it is told the
// endpoint specs on every configuration change, before routes may send anything to them.
type Dispatcher interface {
	Apply(ctx context.Context, specs []endpoint.Spec) error
}

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	Router *Router
	// ConfigFile is the hub's YAML configuration file ("" = none); its routing section is read.
	ConfigFile string
	// DataDir holds routing.json.
	DataDir string
	// Dispatcher may be nil (no custom endpoint delivery); it can be set later with
	// SetDispatcher.
	Dispatcher Dispatcher
	Logger     *slog.Logger
}

// Manager keeps the Router's configuration in line with its two sources.
//
// Precedence: a configuration PUT through the service API (kept in routing.json) replaces the
// file's routing section as a whole (endpoints, routes, fallback route, enrichments) until it is
// deleted; the file's limits always apply. The file is re-read on SIGHUP and when its
// modification time or size changes (Watch); an invalid file, or one whose limits the API's
// configuration exceeds, is reported in the log and the configuration in force is kept. At start
// an invalid configuration is an error.
type Manager struct {
	router     *Router
	file       string
	state      string
	logger     *slog.Logger
	mu         sync.Mutex // serializes changes
	dispatcher Dispatcher

	fileDoc   Document
	fileStamp fileStamp
	apiCfg    *Config
	source    string
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// NewManager loads both sources and puts the configuration in force.
func NewManager(ctx context.Context, o ManagerOptions) (*Manager, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{router: o.Router, file: o.ConfigFile, logger: o.Logger, dispatcher: o.Dispatcher}
	if o.DataDir != "" {
		m.state = filepath.Join(o.DataDir, StateFile)
	}
	if m.file != "" {
		doc, stamp, err := m.readFile()
		if err != nil {
			return nil, err
		}
		m.fileDoc, m.fileStamp = doc, stamp
	}
	if m.state != "" {
		data, err := os.ReadFile(m.state)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("read routing configuration: %w", err)
		default:
			doc, err := ParseJSON(data)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", m.state, err)
			}
			m.apiCfg = &doc.Config
		}
	}
	cfg, source := m.effective()
	if err := m.apply(ctx, cfg, m.limits(), source); err != nil {
		if source == SourceAPI {
			return nil, fmt.Errorf("the routing configuration set through the API (%s): %w", m.state, err)
		}
		return nil, fmt.Errorf("%s: %w", m.file, err)
	}
	return m, nil
}

// SetDispatcher sets the custom endpoints' dispatcher and applies the endpoints in force.
func (m *Manager) SetDispatcher(ctx context.Context, d Dispatcher) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dispatcher = d
	cfg, _ := m.router.Config()
	return d.Apply(ctx, cfg.Endpoints)
}

func (m *Manager) readFile() (Document, fileStamp, error) {
	fi, err := os.Stat(m.file)
	if err != nil {
		return Document{}, fileStamp{}, fmt.Errorf("routing configuration: %w", err)
	}
	data, err := os.ReadFile(m.file)
	if err != nil {
		return Document{}, fileStamp{}, fmt.Errorf("routing configuration: %w", err)
	}
	doc, _, err := ParseFile(data)
	if err != nil {
		return Document{}, fileStamp{}, fmt.Errorf("%s: %w", m.file, err)
	}
	return doc, fileStamp{fi.ModTime(), fi.Size()}, nil
}

func (m *Manager) limits() Limits {
	if m.fileDoc.Limits != nil {
		return *m.fileDoc.Limits
	}
	return Limits{}
}

func (m *Manager) effective() (Config, string) {
	switch {
	case m.apiCfg != nil:
		return *m.apiCfg, SourceAPI
	case m.file != "" && !m.fileDoc.Config.isZero():
		return m.fileDoc.Config, SourceFile
	}
	return Config{}, SourceDefault
}

func (c Config) isZero() bool {
	return len(c.Endpoints) == 0 && len(c.Routes) == 0 && c.FallbackRoute == nil && len(c.Enrichments) == 0
}

// apply validates cfg, tells the dispatcher its endpoints, then puts cfg in force.
func (m *Manager) apply(ctx context.Context, cfg Config, limits Limits, source string) error {
	checked, err := Check(cfg, limits)
	if err != nil {
		var errs Errors
		if source == SourceFile && errors.As(err, &errs) { // paths as written in the file
			for i := range errs {
				errs[i].Path = FileKey + "." + errs[i].Path
			}
		}
		return err
	}
	if m.dispatcher != nil {
		if err := m.dispatcher.Apply(ctx, checked.Endpoints); err != nil {
			return fmt.Errorf("custom endpoints: %w", err)
		}
	}
	if err := m.router.Set(checked, limits); err != nil {
		return err
	}
	m.source = source
	return nil
}

// Current returns the configuration in force, its limits, where it comes from and its etag.
func (m *Manager) Current() (cfg Config, limits Limits, source, etag string) {
	m.mu.Lock()
	source = m.source
	m.mu.Unlock()
	cfg, limits = m.router.Config()
	return cfg, limits, source, ETag(cfg)
}

// ETag identifies a configuration's content.
func ETag(c Config) string {
	data, _ := json.Marshal(c)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:12])
}

// Put replaces the configuration through the API and persists it (routing.json); ifMatch ""
// or "*" is unconditional, otherwise it must be the etag of the configuration in force. Limits
// in doc must be absent or equal to those in force.
func (m *Manager) Put(ctx context.Context, doc Document, ifMatch string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, limits := m.router.Config()
	if ifMatch != "" && ifMatch != "*" && ifMatch != ETag(cur) {
		return ErrPreconditionFailed
	}
	if l := doc.Limits; l != nil && l.WithDefaults() != limits {
		return Errors{{Path: "limits", Reason: "limits are set by the operator in the hub's configuration file (routing.limits) and cannot be changed through the API"}}
	}
	checked, err := Check(doc.Config, limits)
	if err != nil {
		return err
	}
	if m.state == "" {
		return errors.New("the hub has no data directory to keep the routing configuration in")
	}
	prev, prevErr := os.ReadFile(m.state)
	if err := writeState(m.state, checked); err != nil {
		return err
	}
	if err := m.apply(ctx, checked, limits, SourceAPI); err != nil {
		// Put the previous state file back: the configuration in force did not change.
		if prevErr == nil {
			_ = writeFileAtomic(m.state, prev)
		} else {
			_ = os.Remove(m.state)
		}
		return err
	}
	m.apiCfg = &checked
	m.logger.Info("routing configuration set through the API", "routes", len(checked.Routes), "endpoints", len(checked.Endpoints), "enrichments", len(checked.Enrichments))
	return nil
}

// Reset removes the configuration set through the API: the file's (or the default) is in force
// again.
func (m *Manager) Reset(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg, source := Config{}, SourceDefault
	if m.file != "" && !m.fileDoc.Config.isZero() {
		cfg, source = m.fileDoc.Config, SourceFile
	}
	if err := m.apply(ctx, cfg, m.limits(), source); err != nil {
		return fmt.Errorf("the configuration file's routing section: %w", err)
	}
	if m.state != "" {
		if err := os.Remove(m.state); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	m.apiCfg = nil
	m.logger.Info("routing configuration set through the API removed", "now", source)
	return nil
}

// Reload re-reads the configuration file; unless force, only when it changed. A file that is
// invalid, or whose limits the configuration in force exceeds, is reported and changes nothing.
func (m *Manager) Reload(ctx context.Context, force bool) error {
	if m.file == "" {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !force {
		fi, err := os.Stat(m.file)
		if err == nil && fi.ModTime().Equal(m.fileStamp.mod) && fi.Size() == m.fileStamp.size {
			return nil
		}
	}
	doc, stamp, err := m.readFile()
	if err != nil {
		if fi, serr := os.Stat(m.file); serr == nil { // report a broken file once, until it changes
			m.fileStamp = fileStamp{fi.ModTime(), fi.Size()}
		}
		m.logger.Error("routing configuration not reloaded; the previous one stays in force", "err", err)
		return err
	}
	old := m.fileDoc
	m.fileDoc, m.fileStamp = doc, stamp
	cfg, source := m.effective()
	if err := m.apply(ctx, cfg, m.limits(), source); err != nil {
		m.fileDoc = old
		m.fileStamp = stamp
		err = fmt.Errorf("%s: %w", m.file, err)
		m.logger.Error("routing configuration not reloaded; the previous one stays in force", "source", source, "err", err)
		return err
	}
	if source == SourceAPI {
		m.logger.Info("routing configuration file reloaded; the configuration set through the API stays in force (only the file's limits apply)", "file", m.file)
	} else {
		m.logger.Info("routing configuration reloaded", "file", m.file, "routes", len(cfg.Routes), "endpoints", len(cfg.Endpoints))
	}
	return nil
}

// Watch reloads the configuration file on SIGHUP and when it changes (checked every interval)
// until ctx ends.
func (m *Manager) Watch(ctx context.Context, interval time.Duration) {
	if m.file == "" {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = m.Reload(ctx, true)
		case <-t.C:
			_ = m.Reload(ctx, false)
		}
	}
}

func writeState(path string, c Config) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode routing configuration: %w", err)
	}
	return writeFileAtomic(path, append(data, '\n'))
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write routing configuration: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write routing configuration: %w", err)
	}
	return nil
}

// Router is the router whose configuration the manager keeps.
func (m *Manager) Router() *Router { return m.router }
