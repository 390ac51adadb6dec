package endpoint

// The NATS and PostgreSQL tests run against real servers that internal/testservice starts for
// each test (scripts/install-test-services installs nats-server and PostgreSQL).

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tetherhub/tether/internal/telemetry"
	"github.com/tetherhub/tether/internal/testservice"
)

// rewind moves every cursor of the endpoint back to 0 while the dispatcher is closed, as if it
// had crashed before saving them.
func (e *env) rewind(name string) {
	e.t.Helper()
	cur := map[int]int64{}
	for p := range e.log.Partitions() {
		cur[p] = 0
	}
	if err := e.d.cursors.save(name, cur); err != nil {
		e.t.Fatal(err)
	}
}

func TestNATSJetStream(t *testing.T) {
	url := testservice.StartNATS(t)
	e := newEnv(t, telemetry.Options{Partitions: 2})
	spec := Spec{Name: "nats", Type: TypeNATS, Retry: fastRetry, NATS: &NATSSpec{
		URL: url, Subject: "natstest.{deviceId}", Stream: "NATSTEST", MaxBatchSize: 8}}
	e.apply(spec)
	devices := []string{"a", "b", "dev.with.dots"}
	e.send(20, []string{"nats"}, devices...)
	waitFor(t, 15*time.Second, "delivered", func() bool { return e.health("nats").Lag == 0 })

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	stream, err := js.Stream(ctx, "NATSTEST")
	if err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != 60 {
			t.Fatalf("stream holds %d messages, want 60", info.State.Msgs)
		}
		seq := newSeqChecker()
		for i := uint64(1); i <= info.State.LastSeq; i++ {
			m, err := stream.GetMsg(ctx, i)
			if err != nil {
				t.Fatal(err)
			}
			dev := m.Header.Get("iothub-connection-device-id")
			if want := "natstest." + subjectToken(dev); m.Subject != want {
				t.Errorf("subject %q, want %q", m.Subject, want)
			}
			if m.Header.Get(jetstream.MsgIDHeader) == "" || m.Header.Get("iothub-content-type") != "application/json" ||
				m.Header.Get("iothub-app-level") != "storage" || m.Header.Get("message-id") == "" || m.Header.Get(HeaderSequenceNumber) == "" {
				t.Errorf("headers %v", m.Header)
			}
			var body struct {
				Device string `json:"device"`
				N      int    `json:"n"`
			}
			if err := json.Unmarshal(m.Data, &body); err != nil {
				t.Fatal(err)
			}
			if n, _ := strconv.Atoi(m.Header.Get("iothub-app-n")); n != body.N || body.Device != dev {
				t.Errorf("headers %v do not match body %s", m.Header, m.Data)
			}
			if err := seq.add(dev, body.N); err != nil {
				t.Error(err)
			}
		}
	}
	check()

	// A crash before the cursors were saved: everything is published again, and JetStream drops
	// the duplicates by Nats-Msg-Id.
	if err := e.d.Close(); err != nil {
		t.Fatal(err)
	}
	e.rewind("nats")
	e.open()
	e.apply(spec)
	waitFor(t, 15*time.Second, "redelivered", func() bool { h := e.health("nats"); return h.Lag == 0 && h.Delivered == 60 })
	check()
}

func TestPostgres(t *testing.T) {
	url := testservice.StartPostgres(t)
	e := newEnv(t, telemetry.Options{Partitions: 2})
	spec := Spec{Name: "pg", Type: TypePostgres, Retry: fastRetry, Postgres: &PostgresSpec{
		ConnectionString: url, Table: "public.pgtest_messages", MaxBatchSize: 16}}
	e.apply(spec)
	e.send(25, []string{"pg"}, "a", "b")
	sendBinary(t, e, "bin-dev", []string{"pg"})
	waitFor(t, 15*time.Second, "delivered", func() bool { return e.health("pg").Lag == 0 })

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	check := func() {
		t.Helper()
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM public.pgtest_messages`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 51 {
			t.Fatalf("%d rows, want 51", n)
		}
		var dev, sysDev, prop, bodyDev string
		var module *string
		var body []byte
		err := conn.QueryRow(ctx, `SELECT device_id, module_id, system_properties->>'iothub-connection-device-id', properties->>'n',
			body_json->>'device', body FROM public.pgtest_messages WHERE device_id = 'a' ORDER BY enqueued_time DESC, sequence DESC LIMIT 1`).
			Scan(&dev, &module, &sysDev, &prop, &bodyDev, &body)
		if err != nil {
			t.Fatal(err)
		}
		if dev != "a" || module != nil || sysDev != "a" || prop != "24" || bodyDev != "a" || string(body) != `{"device":"a","n":24}` {
			t.Errorf("row = %s %v %s %s %s %s", dev, module, sysDev, prop, bodyDev, body)
		}
		var nullJSON bool
		if err := conn.QueryRow(ctx, `SELECT body_json IS NULL FROM public.pgtest_messages WHERE device_id = 'bin-dev'`).Scan(&nullJSON); err != nil || !nullJSON {
			t.Errorf("binary body_json null = %v, %v", nullJSON, err)
		}
		// Per device, sequence order is enqueue order.
		rows, _ := conn.Query(ctx, `SELECT (properties->>'n')::int FROM public.pgtest_messages WHERE device_id = 'b' ORDER BY sequence`)
		ns, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range ns {
			if n != i {
				t.Fatalf("device b rows in sequence order: %v", ns)
			}
		}
	}
	check()
	// Redelivery after a crash is idempotent.
	if err := e.d.Close(); err != nil {
		t.Fatal(err)
	}
	e.rewind("pg")
	e.open()
	e.apply(spec)
	waitFor(t, 15*time.Second, "redelivered", func() bool { h := e.health("pg"); return h.Lag == 0 && h.Delivered == 51 })
	check()
}
