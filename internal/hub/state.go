package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tetherhub/tether/internal/auth"
)

// StateFile is the hub's identity inside the data directory: its name, its partition count
// (fixed when the hub is created, as in IoT Hub) and its shared access policies.
const StateFile = "hub.json"

// DefaultName is the hub name when none is configured; it appears where IoT Hub uses the hub
// name (user-id of hub-generated messages, the $iothubname enrichment).
const DefaultName = "tether"

// State is what the hub persists about itself. It is small and changes rarely, so it is a JSON
// file written atomically, readable by the CLI without a running hub.
type State struct {
	Name       string         `json:"name"`
	Created    time.Time      `json:"created"`
	Partitions int            `json:"partitions"`
	Policies   []StatePolicy  `json:"policies"`
	mu         sync.RWMutex   `json:"-"`
	byName     map[string]int `json:"-"`
}

// StatePolicy is a shared access policy as stored in hub.json.
type StatePolicy struct {
	KeyName      string `json:"keyName"`
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
	Rights       string `json:"rights"`
}

// LoadState reads dir/hub.json. It returns an error wrapping fs.ErrNotExist for a new data
// directory.
func LoadState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, fmt.Errorf("read hub state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, StateFile), err)
	}
	if err := s.index(); err != nil {
		return nil, err
	}
	return &s, nil
}

// LoadOrCreateState loads the hub state, or creates it with IoT Hub's five default policies
// (fresh random keys) on first start.
func LoadOrCreateState(dir, name string, partitions int, now time.Time) (s *State, created bool, err error) {
	s, err = LoadState(dir)
	if err == nil {
		return s, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	policies, err := auth.DefaultPolicies()
	if err != nil {
		return nil, false, fmt.Errorf("create default policies: %w", err)
	}
	s = &State{Name: name, Created: now.UTC(), Partitions: partitions}
	for _, p := range policies {
		s.Policies = append(s.Policies, StatePolicy{KeyName: p.Name, PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey, Rights: p.Rights.String()})
	}
	if err := s.index(); err != nil {
		return nil, false, err
	}
	if err := s.Save(dir); err != nil {
		return nil, false, err
	}
	return s, true, nil
}

func (s *State) index() error {
	s.byName = make(map[string]int, len(s.Policies))
	for i, p := range s.Policies {
		if _, err := auth.ParsePermissions(p.Rights); err != nil {
			return fmt.Errorf("policy %s: %w", p.KeyName, err)
		}
		s.byName[p.KeyName] = i
	}
	return nil
}

// Save writes the state atomically with owner-only permissions: it holds the policy keys.
func (s *State) Save(dir string) error {
	s.mu.RLock()
	data, err := json.MarshalIndent(s, "", "  ")
	s.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("encode hub state: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dir, StateFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write hub state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace hub state: %w", err)
	}
	return nil
}

// Policy implements auth.PolicyStore.
func (s *State) Policy(name string) (auth.Policy, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i, ok := s.byName[name]
	if !ok {
		return auth.Policy{}, false
	}
	p := s.Policies[i]
	rights, _ := auth.ParsePermissions(p.Rights) // validated in index
	return auth.Policy{Name: p.KeyName, PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey, Rights: rights}, true
}
