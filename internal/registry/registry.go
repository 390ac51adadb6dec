// Package registry is the device identity registry (IoT Hub spec 6.1/6.2):
// devices and modules with their keys, status and etags, persisted in
// bbolt, plus the runtime bookkeeping transports report (connection state,
// last activity) kept in memory and flushed in batches.
//
// The Registry implements auth.IdentityStore. Credential lookups are on
// the CONNECT hot path and are served from an in-memory cache that every
// write invalidates.
package registry

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/bbolt"
)

// Errors callers branch on (HTTP status in parentheses).
var (
	ErrDeviceNotFound      = errors.New("device not found")                // 404001 DeviceNotFound
	ErrModuleNotFound      = errors.New("module not found")                // 404010 ModuleNotFound
	ErrDeviceAlreadyExists = errors.New("device already exists")           // 409001 DeviceAlreadyExists
	ErrModuleAlreadyExists = errors.New("module already exists on device") // 409301 ModuleAlreadyExistsOnDevice
	ErrPreconditionFailed  = errors.New("etag does not match")             // 412001 PreconditionFailed
	ErrInvalidArgument     = errors.New("invalid argument")                // 400004 ArgumentInvalid
	// ErrInvalidID also matches ErrInvalidArgument.
	ErrInvalidID = fmt.Errorf("%w: invalid device or module id", ErrInvalidArgument)
)

// IoT Hub's "list" returns at most this many identities.
const maxList = 1000

var (
	devicesBucket = []byte("devices")
	modulesBucket = []byte("modules") // key: deviceID + "/" + moduleID ('/' cannot occur in ids)
)

// Op is the kind of change reported to OnChange hooks.
type Op int

// Change kinds.
const (
	Created Op = iota + 1
	Updated
	Deleted
)

func (o Op) String() string {
	switch o {
	case Created:
		return "Created"
	case Updated:
		return "Updated"
	case Deleted:
		return "Deleted"
	}
	return "Op(" + strconv.Itoa(int(o)) + ")"
}

// ChangeEvent describes a committed change to a device or module identity.
// ModuleID is empty for device changes. Device is the device after the
// change (before it, for Deleted); for module changes it is the parent
// device as stored, and Module is set.
type ChangeEvent struct {
	Op       Op
	DeviceID string
	ModuleID string
	Device   Device
	Module   *Module
}

// Registry is the identity registry. It is safe for concurrent use.
type Registry struct {
	db  *bbolt.DB
	now func() time.Time

	// mu serialises writes against cache fills, so a fill can never store
	// a value read before a concurrent write committed.
	mu      sync.RWMutex
	cacheMu sync.RWMutex
	cache   map[credKey]credEntry

	genMu   sync.Mutex
	lastGen int64

	liveMu sync.Mutex
	live   map[credKey]*liveState

	hooksMu sync.RWMutex
	hooks   []func(ChangeEvent)
}

// Open returns a registry stored in db, creating its top-level buckets
// ("devices", "modules") if missing. The db may hold other buckets; the
// caller keeps ownership and closes it. Call Flush (or Run) to persist
// activity bookkeeping.
func Open(db *bbolt.DB) (*Registry, error) {
	err := db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{devicesBucket, modulesBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: create buckets: %w", err)
	}
	return &Registry{
		db:    db,
		now:   time.Now,
		cache: make(map[credKey]credEntry),
		live:  make(map[credKey]*liveState),
	}, nil
}

// OnChange registers fn to be called after every committed create, update
// or delete, synchronously in the writer's goroutine. fn must not block for
// long; it may call the registry.
func (r *Registry) OnChange(fn func(ChangeEvent)) {
	r.hooksMu.Lock()
	r.hooks = append(r.hooks, fn)
	r.hooksMu.Unlock()
}

func (r *Registry) emit(events ...ChangeEvent) {
	r.hooksMu.RLock()
	hooks := r.hooks
	r.hooksMu.RUnlock()
	for _, ev := range events {
		for _, fn := range hooks {
			fn(ev)
		}
	}
}

// write runs fn in a bbolt write transaction with cache fills excluded,
// then drops the given cache entries. fn may call r.uncache for entries it
// only discovers inside the transaction.
func (r *Registry) write(fn func(tx *bbolt.Tx) error, invalidate ...credKey) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.db.Update(fn)
	r.uncache(invalidate...)
	return err
}

// uncache drops cached credentials. Callers hold r.mu exclusively.
func (r *Registry) uncache(keys ...credKey) {
	r.cacheMu.Lock()
	for _, k := range keys {
		delete(r.cache, k)
	}
	r.cacheMu.Unlock()
}

// newGenerationID returns an 18-digit decimal id like IoT Hub's (which are
// .NET ticks): 100 ns units since year 1, strictly increasing within the
// process so that a device re-created at once still gets a new one.
func (r *Registry) newGenerationID() string {
	const unixEpochTicks = 621355968000000000
	t := r.now().UnixNano()/100 + unixEpochTicks
	r.genMu.Lock()
	if t <= r.lastGen {
		t = r.lastGen + 1
	}
	r.lastGen = t
	r.genMu.Unlock()
	return strconv.FormatInt(t, 10)
}

// newETag returns an opaque etag: base64 of the bucket's next sequence
// number, the shape IoT Hub's etags have ("MTA4NjQ4NjE1").
func newETag(b *bbolt.Bucket) (string, error) {
	n, err := b.NextSequence()
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(strconv.AppendUint(nil, n, 10)), nil
}

// etagMatches implements If-Match: "" and "*" match anything; otherwise the
// value, with optional W/ prefix and quotes removed, must equal current.
func etagMatches(ifMatch, current string) bool {
	v := ifMatch
	if len(v) >= 2 && (v[:2] == "W/" || v[:2] == "w/") {
		v = v[2:]
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	return v == "" || v == "*" || v == current
}

// ValidateID checks a device or module id against the .NET SDK's rule
// (spec fact 15): 1-128 ASCII characters from A-Z a-z 0-9 - : . + % _ # *
// ? ! ( ) , = @ ; $ '. Errors match ErrInvalidID.
func ValidateID(id string) error {
	if len(id) == 0 || len(id) > 128 {
		return fmt.Errorf("%w: %q must be 1-128 characters", ErrInvalidID, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		switch c {
		case '-', ':', '.', '+', '%', '_', '#', '*', '?', '!', '(', ')', ',', '=', '@', ';', '$', '\'':
			continue
		}
		return fmt.Errorf("%w: %q contains %q", ErrInvalidID, id, c)
	}
	return nil
}

func moduleKey(deviceID, moduleID string) []byte {
	return []byte(deviceID + "/" + moduleID)
}
