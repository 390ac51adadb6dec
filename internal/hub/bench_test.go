package hub

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/registry"
	"github.com/tetherhub/tether/internal/telemetry"
)

// BenchmarkSubmit is hub.Submit end to end for one MQTT-shaped message (system and application
// properties, a 256-byte body): validate, stamp, encode, enqueue into a real telemetry log with
// 4 partitions, record activity in a real registry, and wait until the log reports it durable.
// serial: one device, one message at a time (each waits for its own group commit; durable is
// one fdatasync per message). parallel64: 64 devices at once, as group commit sees them.
func BenchmarkSubmit(b *testing.B) {
	for _, durable := range []bool{false, true} {
		for _, par := range []int{1, 64} {
			name := fmt.Sprintf("durable=%v/devices=%d", durable, par)
			b.Run(name, func(b *testing.B) { benchSubmit(b, durable, par) })
		}
	}
}

func benchSubmit(b *testing.B, durable bool, devices int) {
	dir := b.TempDir()
	db, err := bbolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	reg, err := registry.Open(db)
	if err != nil {
		b.Fatal(err)
	}
	tlog, err := telemetry.Open(telemetry.Options{Dir: filepath.Join(dir, "telemetry"), Partitions: 4, NoSync: !durable})
	if err != nil {
		b.Fatal(err)
	}
	defer tlog.Close()
	h := New(Config{Auth: &auth.Authenticator{Identities: reg}, Activity: reg, Log: tlog})
	var next atomic.Int64
	run := func(more func() bool) {
		id := auth.DeviceIdentity{DeviceID: fmt.Sprintf("bench-%d", next.Add(1)), GenerationID: "638000000000000000",
			Scope: "device", Type: "sas", Issuer: "iothub"}
		from := Origin{Identity: id}
		body := make([]byte, 256)
		ctx := context.Background()
		for more() {
			m := &message.Message{MessageID: "5e3d3f2c-9a8b-4c1d-8e2f-0a1b2c3d4e5f", ContentType: "application/json",
				ContentEncoding: "utf-8", Properties: map[string]string{"temperatureAlert": "false"}, Body: body}
			p, err := h.Submit(ctx, from, m)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := p.Wait(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	}
	b.ReportAllocs()
	b.SetBytes(256)
	if devices == 1 {
		run(b.Loop)
	} else {
		b.SetParallelism((devices + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.RunParallel(func(pb *testing.PB) { run(pb.Next) })
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
