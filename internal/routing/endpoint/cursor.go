package endpoint

import (
	"encoding/binary"
	"fmt"

	"go.etcd.io/bbolt"
)

// cursorsBucket holds one sub-bucket per custom endpoint, keyed by the endpoint name, mapping a
// partition (4-byte big-endian) to the next sequence number to deliver (8-byte big-endian).
var cursorsBucket = []byte("routing.endpoint.cursors")

type cursorStore struct{ db *bbolt.DB }

func newCursorStore(db *bbolt.DB) (*cursorStore, error) {
	err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(cursorsBucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("endpoint cursors: %w", err)
	}
	return &cursorStore{db: db}, nil
}

func partitionKey(p int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(p)) }

// load returns the endpoint's cursors; ok is false when the endpoint has none (a new endpoint).
func (c *cursorStore) load(name string) (cursors map[int]int64, ok bool, err error) {
	err = c.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(cursorsBucket).Bucket([]byte(name))
		if b == nil {
			return nil
		}
		ok = true
		cursors = make(map[int]int64)
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 4 || len(v) != 8 {
				return fmt.Errorf("endpoint %q: corrupt cursor entry", name)
			}
			cursors[int(binary.BigEndian.Uint32(k))] = int64(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return nil, false, fmt.Errorf("load cursors of endpoint %q: %w", name, err)
	}
	return cursors, ok, nil
}

// save stores cursors of the endpoint (creating its bucket).
func (c *cursorStore) save(name string, cursors map[int]int64) error {
	err := c.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.Bucket(cursorsBucket).CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		for p, seq := range cursors {
			if err := b.Put(partitionKey(p), binary.BigEndian.AppendUint64(nil, uint64(seq))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save cursor of endpoint %q: %w", name, err)
	}
	return nil
}

// names lists the endpoints that have cursors.
func (c *cursorStore) names() ([]string, error) {
	var out []string
	err := c.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(cursorsBucket).ForEachBucket(func(k []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}

// remove deletes the endpoint's cursors.
func (c *cursorStore) remove(name string) error {
	err := c.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(cursorsBucket)
		if b.Bucket([]byte(name)) == nil {
			return nil
		}
		return b.DeleteBucket([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("delete cursors of endpoint %q: %w", name, err)
	}
	return nil
}
