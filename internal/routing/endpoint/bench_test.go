package endpoint

import (
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/telemetry"
	"github.com/tetherhub/tether/internal/testservice"
)

// BenchmarkDeliver measures catch-up throughput: 2000 messages (4 devices, 2 partitions, about
// 100-byte bodies) appended while the endpoint is stopped, then delivered from the cursor.
func BenchmarkDeliver(b *testing.B) {
	const perOp = 2000
	sinks := map[string]func(b *testing.B, e *env) Spec{
		"webhook": func(b *testing.B, e *env) Spec {
			ts, ca := tlsServer(b, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			return webhookSpec("w", ts.URL, ca, false)
		},
		"webhook-batch": func(b *testing.B, e *env) Spec {
			ts, ca := tlsServer(b, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			return webhookSpec("w", ts.URL, ca, true)
		},
		"storage-json": func(b *testing.B, e *env) Spec {
			return storageSpec("w", filepath.Join(e.dir, "c"), "json", 64<<10)
		},
		"storage-avro": func(b *testing.B, e *env) Spec {
			return storageSpec("w", filepath.Join(e.dir, "c"), "avro", 64<<10)
		},
		"nats": func(b *testing.B, e *env) Spec {
			return Spec{Name: "w", Type: TypeNATS, NATS: &NATSSpec{URL: testservice.StartNATS(b), Subject: "bench.{deviceId}", Stream: "BENCH"}}
		},
		"postgres": func(b *testing.B, e *env) Spec {
			return Spec{Name: "w", Type: TypePostgres, Postgres: &PostgresSpec{ConnectionString: testservice.StartPostgres(b), Table: "bench_messages"}}
		},
	}
	for _, name := range []string{"webhook", "webhook-batch", "storage-json", "storage-avro", "nats", "postgres"} {
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, telemetry.Options{Partitions: 2})
			spec := sinks[name](b, e)
			e.apply(spec)
			var total time.Duration
			for i := 0; b.Loop(); i++ {
				if err := e.d.Close(); err != nil {
					b.Fatal(err)
				}
				e.send(perOp/4, []string{"w"}, "d1", "d2", "d3", "d4")
				e.open()
				start := time.Now()
				e.apply(spec)
				waitFor(b, 60*time.Second, "catch-up "+strconv.Itoa(i), func() bool { return e.health("w").Lag == 0 })
				total += time.Since(start)
			}
			b.ReportMetric(float64(perOp*b.N)/total.Seconds(), "msgs/s")
		})
	}
}
