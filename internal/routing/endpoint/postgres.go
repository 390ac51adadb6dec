package endpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tetherhub/tether/internal/message"
)

const (
	defaultPostgresTable = "tether_messages"
	defaultPostgresBatch = 500
)

// postgresSink inserts messages into a table keyed by (partition, sequence): a redelivery is
// ignored (ON CONFLICT DO NOTHING), so the table holds each message once. A batch is one
// statement, hence one transaction.
type postgresSink struct {
	name  string
	table string // sanitized, quoted
	pool  *pgxpool.Pool

	mu      sync.Mutex
	created bool
}

func newPostgresSink(s Spec, _ sinkEnv) (Sink, batchLimits, error) {
	p := *s.Postgres
	cfg, err := pgxpool.ParseConfig(p.ConnectionString)
	if err != nil {
		return nil, batchLimits{}, &FieldError{Endpoint: s.Name, Field: "postgres.connectionString", Message: err.Error()}
	}
	cfg.MaxConns = 8
	cfg.ConnConfig.RuntimeParams["application_name"] = "tether endpoint " + s.Name
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, batchLimits{}, &FieldError{Endpoint: s.Name, Field: "postgres.connectionString", Message: err.Error()}
	}
	table := p.Table
	if table == "" {
		table = defaultPostgresTable
	}
	batch := p.MaxBatchSize
	if batch == 0 {
		batch = defaultPostgresBatch
	}
	return &postgresSink{name: s.Name, table: pgx.Identifier(strings.Split(table, ".")).Sanitize(), pool: pool},
		batchLimits{records: batch, bytes: 16 << 20}, nil
}

func (s *postgresSink) ensureTable(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.created {
		return nil
	}
	_, err := s.pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.table+` (
	partition integer NOT NULL,
	sequence bigint NOT NULL,
	enqueued_time timestamptz NOT NULL,
	device_id text NOT NULL,
	module_id text,
	system_properties jsonb NOT NULL,
	properties jsonb NOT NULL,
	body bytea NOT NULL,
	body_json jsonb,
	PRIMARY KEY (partition, sequence))`)
	if err != nil {
		return fmt.Errorf("postgres: create table %s: %w", s.table, err)
	}
	s.created = true
	return nil
}

func (s *postgresSink) Deliver(ctx context.Context, batch []Delivery) error {
	if err := s.ensureTable(ctx); err != nil {
		return err
	}
	n := len(batch)
	parts := make([]int32, n)
	seqs := make([]int64, n)
	times := make([]any, n)
	devices := make([]string, n)
	modules := make([]*string, n)
	sysProps := make([]string, n)
	props := make([]string, n)
	bodies := make([][]byte, n)
	bodyJSON := make([]*string, n)
	for i, d := range batch {
		m := d.Message
		parts[i] = int32(d.Partition)
		seqs[i] = d.Sequence
		times[i] = m.EnqueuedTime.UTC()
		devices[i] = noNUL(m.ConnectionDeviceID)
		if m.ConnectionModuleID != "" {
			v := noNUL(m.ConnectionModuleID)
			modules[i] = &v
		}
		sys := map[string]string{}
		for _, p := range m.SystemProperties() {
			sys[p.Name] = p.Value
		}
		if !m.EnqueuedTime.IsZero() {
			sys[message.NameEnqueuedTime] = formatTime(m.EnqueuedTime)
		}
		sysProps[i] = jsonbText(sys)
		props[i] = jsonbText(m.Properties)
		bodies[i] = m.Body
		if bodies[i] == nil {
			bodies[i] = []byte{}
		}
		if jsonBody(m) && !strings.Contains(string(m.Body), `\u0000`) {
			v := string(m.Body)
			bodyJSON[i] = &v
		}
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO `+s.table+`
	(partition, sequence, enqueued_time, device_id, module_id, system_properties, properties, body, body_json)
SELECT p, s, t, d, m, sp::jsonb, pr::jsonb, b, bj::jsonb
FROM unnest($1::integer[], $2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[], $9::text[])
	AS x(p, s, t, d, m, sp, pr, b, bj)
ON CONFLICT (partition, sequence) DO NOTHING`,
		parts, seqs, times, devices, modules, sysProps, props, bodies, bodyJSON)
	if err != nil {
		return fmt.Errorf("postgres: insert into %s: %w", s.table, err)
	}
	return nil
}

// jsonbText encodes a string map as JSON that jsonb accepts (no NUL characters).
func jsonbText(m map[string]string) string {
	clean := make(map[string]string, len(m))
	for k, v := range m {
		clean[noNUL(k)] = noNUL(v)
	}
	b, _ := json.Marshal(clean)
	return string(b)
}

// noNUL replaces NUL characters, which PostgreSQL text and jsonb cannot hold.
func noNUL(s string) string { return strings.ReplaceAll(s, "\x00", "\uFFFD") }

func (s *postgresSink) Close() error {
	s.pool.Close()
	return nil
}
