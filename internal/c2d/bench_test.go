package c2d

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// BenchmarkSendReceiveComplete measures one message's whole cycle: Send, Receive, Complete,
// three write transactions each fsynced by bbolt. "parallel" runs one device per goroutine,
// like many MQTT connections at once, where group commit shares transactions; "nosync" is the
// CPU cost alone. Compare with BenchmarkBoltCommit from the same run: the disk is shared.
func BenchmarkSendReceiveComplete(b *testing.B) {
	body := make([]byte, 256)
	for _, bc := range []struct {
		name     string
		parallel bool
		noSync   bool
	}{
		{"serial", false, false},
		{"parallel", true, false},
		{"serial-nosync", false, true},
		{"parallel-nosync", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnvSync(b, nil, bc.noSync)
			b.ReportAllocs()
			if !bc.parallel {
				for b.Loop() {
					cycle(b, e, "dev", body)
				}
			} else {
				var n atomic.Int64
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					dev := fmt.Sprint("dev", n.Add(1))
					for pb.Next() {
						cycle(b, e, dev, body)
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

func cycle(b *testing.B, e *env, dev string, body []byte) {
	if _, err := e.s.Send(ctx, dev, Message{MessageID: "m", Ack: AckPositive, Properties: map[string]string{"k": "v"}, Body: body}); err != nil {
		b.Fatal(err)
	}
	m, ok, err := e.s.Receive(ctx, dev)
	if err != nil || !ok {
		b.Fatal(ok, err)
	}
	if err := e.s.Complete(ctx, dev, m.LockToken); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBoltCommit is the floor: one small Put per fsynced bbolt transaction.
func BenchmarkBoltCommit(b *testing.B) {
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "b.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var i uint64
	for b.Loop() {
		i++
		err := db.Update(func(tx *bbolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return bk.Put(u64(i), make([]byte, 256))
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
}
