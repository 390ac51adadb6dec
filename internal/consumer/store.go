package consumer

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

var (
	rootBucket        = []byte("consumergroups")
	groupKey          = []byte("group")
	checkpointsBucket = []byte("checkpoints")
)

// Options configure a Store.
type Options struct {
	// MaxGroups caps the number of groups, $Default included (0 = DefaultMaxGroups).
	MaxGroups int
	// Now is the clock (nil = time.Now).
	Now func() time.Time
}

// Store keeps consumer groups and checkpoints in a bbolt database. It is safe for concurrent
// use: bbolt serialises write transactions, so a commit racing a delete either lands before
// the delete (and goes with it) or fails with ErrGroupNotFound.
type Store struct {
	db  *bbolt.DB
	max int
	now func() time.Time
}

// Open returns a store in db, creating its bucket and the $Default group if missing. The db may
// hold other buckets; the caller keeps ownership and closes it.
func Open(db *bbolt.DB, opts Options) (*Store, error) {
	if opts.MaxGroups <= 0 {
		opts.MaxGroups = DefaultMaxGroups
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{db: db, max: opts.MaxGroups, now: opts.Now}
	err := db.Update(func(tx *bbolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(rootBucket)
		if err != nil {
			return err
		}
		if root.Bucket(key(DefaultGroup)) != nil {
			return nil
		}
		_, err = s.create(root, DefaultGroup)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("consumer groups: open: %w", err)
	}
	return s, nil
}

// CreateGroup creates a group, or returns the existing one of that name (any case) with
// created false: creating is idempotent, like a PUT on IoT Hub's consumer group resource.
// Errors: ErrInvalidName, ErrLimitExceeded.
func (s *Store) CreateGroup(ctx context.Context, name string) (g Group, created bool, err error) {
	if err := ctx.Err(); err != nil {
		return Group{}, false, err
	}
	if err := ValidateName(name); err != nil {
		return Group{}, false, fmt.Errorf("consumer groups: create: %w", err)
	}
	err = s.db.Update(func(tx *bbolt.Tx) error {
		root := tx.Bucket(rootBucket)
		if b := root.Bucket(key(name)); b != nil {
			g, err = decodeGroup(b)
			return err
		}
		n := 0
		if err := root.ForEachBucket(func([]byte) error { n++; return nil }); err != nil {
			return err
		}
		if n >= s.max {
			return fmt.Errorf("%w: the hub has %d of %d", ErrLimitExceeded, n, s.max)
		}
		created = true
		g, err = s.create(root, name)
		return err
	})
	if err != nil {
		return Group{}, false, fmt.Errorf("consumer groups: create %s: %w", name, err)
	}
	return g, created, nil
}

func (s *Store) create(root *bbolt.Bucket, name string) (Group, error) {
	b, err := root.CreateBucket(key(name))
	if err != nil {
		return Group{}, err
	}
	if _, err := b.CreateBucket(checkpointsBucket); err != nil {
		return Group{}, err
	}
	g := Group{Name: name, CreatedTime: s.now().UTC()}
	data, err := json.Marshal(g)
	if err != nil {
		return Group{}, err
	}
	return g, b.Put(groupKey, data)
}

// Group returns a group. Errors: ErrGroupNotFound.
func (s *Store) Group(ctx context.Context, name string) (Group, error) {
	if err := ctx.Err(); err != nil {
		return Group{}, err
	}
	var g Group
	err := s.db.View(func(tx *bbolt.Tx) error {
		b, err := groupBucket(tx, name)
		if err != nil {
			return err
		}
		g, err = decodeGroup(b)
		return err
	})
	if err != nil {
		return Group{}, fmt.Errorf("consumer groups: get %s: %w", name, err)
	}
	return g, nil
}

// Groups lists the groups in name order (case-insensitive).
func (s *Store) Groups(ctx context.Context) ([]Group, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Group
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(rootBucket).ForEachBucket(func(k []byte) error {
			g, err := decodeGroup(tx.Bucket(rootBucket).Bucket(k))
			if err != nil {
				return err
			}
			out = append(out, g)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("consumer groups: list: %w", err)
	}
	return out, nil
}

// DeleteGroup deletes a group and its checkpoints. Errors: ErrGroupNotFound, ErrDefaultGroup.
func (s *Store) DeleteGroup(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		if string(key(name)) == string(key(DefaultGroup)) {
			return ErrDefaultGroup
		}
		if _, err := groupBucket(tx, name); err != nil {
			return err
		}
		return tx.Bucket(rootBucket).DeleteBucket(key(name))
	})
	if err != nil {
		return fmt.Errorf("consumer groups: delete %s: %w", name, err)
	}
	return nil
}

// Checkpoints returns a group's checkpoints in partition order; partitions without one are
// absent. Errors: ErrGroupNotFound.
func (s *Store) Checkpoints(ctx context.Context, group string) ([]Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Checkpoint
	err := s.db.View(func(tx *bbolt.Tx) error {
		b, err := groupBucket(tx, group)
		if err != nil {
			return err
		}
		return b.Bucket(checkpointsBucket).ForEach(func(k, v []byte) error {
			cp, err := decodeCheckpoint(k, v)
			if err != nil {
				return err
			}
			out = append(out, cp)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("consumer groups: checkpoints of %s: %w", group, err)
	}
	return out, nil
}

// Commit records seq as the last sequence number the group processed in partition. A later
// commit replaces it, lower or higher: a reader may rewind on purpose. Errors:
// ErrGroupNotFound, ErrBadPartition, ErrBadCheckpoint.
func (s *Store) Commit(ctx context.Context, group string, partition int, seq int64) (Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return Checkpoint{}, err
	}
	if partition < 0 || partition > 1<<16 {
		return Checkpoint{}, fmt.Errorf("consumer groups: commit %s/%d: %w", group, partition, ErrBadPartition)
	}
	if seq < 0 {
		return Checkpoint{}, fmt.Errorf("consumer groups: commit %s/%d: %w: sequence number %d is negative", group, partition, ErrBadCheckpoint, seq)
	}
	cp := Checkpoint{Partition: partition, SequenceNumber: seq, UpdatedTime: s.now().UTC()}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, err := groupBucket(tx, group)
		if err != nil {
			return err
		}
		k, v := encodeCheckpoint(cp)
		return b.Bucket(checkpointsBucket).Put(k, v)
	})
	if err != nil {
		return Checkpoint{}, fmt.Errorf("consumer groups: commit %s/%d: %w", group, partition, err)
	}
	return cp, nil
}

func groupBucket(tx *bbolt.Tx, name string) (*bbolt.Bucket, error) {
	b := tx.Bucket(rootBucket).Bucket(key(name))
	if b == nil {
		return nil, ErrGroupNotFound
	}
	return b, nil
}

func decodeGroup(b *bbolt.Bucket) (Group, error) {
	var g Group
	if err := json.Unmarshal(b.Get(groupKey), &g); err != nil {
		return Group{}, fmt.Errorf("decode group: %w", err)
	}
	return g, nil
}

// A checkpoint is stored as key = partition (uint32 big-endian, so ForEach yields partition
// order) and value = sequence number and update time (int64 Unix nanoseconds), big-endian.
func encodeCheckpoint(cp Checkpoint) (k, v []byte) {
	k = binary.BigEndian.AppendUint32(nil, uint32(cp.Partition))
	v = binary.BigEndian.AppendUint64(nil, uint64(cp.SequenceNumber))
	v = binary.BigEndian.AppendUint64(v, uint64(cp.UpdatedTime.UnixNano()))
	return k, v
}

func decodeCheckpoint(k, v []byte) (Checkpoint, error) {
	if len(k) != 4 || len(v) != 16 {
		return Checkpoint{}, fmt.Errorf("decode checkpoint: %d-byte key, %d-byte value", len(k), len(v))
	}
	return Checkpoint{
		Partition:      int(binary.BigEndian.Uint32(k)),
		SequenceNumber: int64(binary.BigEndian.Uint64(v)),
		UpdatedTime:    time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))).UTC(),
	}, nil
}
