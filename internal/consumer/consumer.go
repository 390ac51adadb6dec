// Package consumer stores the consumer groups of the built-in endpoint and their checkpoints:
// for each group and partition, the sequence number of the last event a reader of that group
// has processed. A reader resumes after its group's checkpoint, so after a restart of the
// reader or of the hub nothing is skipped (delivery is at-least-once: events after the last
// commit are read again).
//
// The embedded Store keeps everything in the hub's metadata bbolt database, in its own
// top-level bucket "consumergroups": one sub-bucket per group (keyed by the lower-case name,
// since group names are case-insensitive like IoT Hub's) holding the group's JSON under "group"
// and its checkpoints in a "checkpoints" sub-bucket keyed by big-endian partition number.
// Deleting a group deletes its bucket, so its checkpoints go in the same transaction.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultGroup always exists and cannot be deleted, as in IoT Hub.
const DefaultGroup = "$Default"

// DefaultMaxGroups is IoT Hub's limit of consumer groups per hub ($Default included).
const DefaultMaxGroups = 20

// maxNameLen is Event Hubs' limit on consumer group names.
const maxNameLen = 50

// Errors callers branch on.
var (
	ErrGroupNotFound = errors.New("consumer group not found")
	ErrLimitExceeded = errors.New("consumer group limit reached")
	ErrInvalidName   = errors.New("invalid consumer group name")
	ErrDefaultGroup  = errors.New("the $Default consumer group cannot be deleted")
	ErrBadPartition  = errors.New("partition out of range")
	ErrBadCheckpoint = errors.New("invalid checkpoint")
)

// GroupStore is what the hub needs of a consumer-group and checkpoint store. Store implements it
// on bbolt; consumertest.Run is the behaviour any implementation must have.
type GroupStore interface {
	CreateGroup(ctx context.Context, name string) (Group, bool, error)
	Group(ctx context.Context, name string) (Group, error)
	Groups(ctx context.Context) ([]Group, error)
	DeleteGroup(ctx context.Context, name string) error
	Checkpoints(ctx context.Context, group string) ([]Checkpoint, error)
	Commit(ctx context.Context, group string, partition int, seq int64) (Checkpoint, error)
}

var _ GroupStore = (*Store)(nil)

// Group is a consumer group.
type Group struct {
	Name        string    `json:"name"`
	CreatedTime time.Time `json:"createdTime"`
}

// Checkpoint is the last sequence number a group's reader processed in a partition.
type Checkpoint struct {
	Partition      int       `json:"partition"`
	SequenceNumber int64     `json:"sequenceNumber"`
	UpdatedTime    time.Time `json:"updatedTime"`
}

// ValidateName checks a group name against Event Hubs' rule: 1-50 letters, digits, periods,
// hyphens and underscores, beginning and ending with a letter or digit. $Default (any case) is
// the one name outside that rule. Errors match ErrInvalidName.
func ValidateName(name string) error {
	if strings.EqualFold(name, DefaultGroup) {
		return nil
	}
	if len(name) == 0 || len(name) > maxNameLen {
		return fmt.Errorf("%w: %q must be 1-%d characters", ErrInvalidName, name, maxNameLen)
	}
	alnum := func(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }
	if !alnum(name[0]) || !alnum(name[len(name)-1]) {
		return fmt.Errorf("%w: %q must begin and end with a letter or digit", ErrInvalidName, name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !alnum(c) && c != '.' && c != '-' && c != '_' {
			return fmt.Errorf("%w: %q contains %q (allowed: letters, digits, '.', '-', '_')", ErrInvalidName, name, c)
		}
	}
	return nil
}

// key is the storage key of a group: names are case-insensitive.
func key(name string) []byte { return []byte(strings.ToLower(name)) }
