package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hamba/avro/v2/ocf"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tetherhub/tether/internal/routing/endpoint"
	"github.com/tetherhub/tether/internal/testservice"
)

// TestCustomEndpointsThroughBinary is the end-to-end test of the custom endpoints (issue 6).
// Devices send with the official Node SDK over MQTT, each message with an application property
// dest that routes it: hook → a TLS webhook (signed), files → two storage endpoints (JSON and
// Avro, read back with hamba/avro), nats → NATS JetStream, pg → PostgreSQL; any other value, or
// none, → the fallback route → the built-in endpoint. Three rounds:
//
//  1. everything up: each sink gets exactly its messages, once, with their properties;
//  2. the webhook answers 503 and nats-server is stopped while a round is sent: the other sinks
//     keep delivering; once both are back (nats-server restarted on its port with its store)
//     every message arrives;
//  3. the webhook holds its requests, nats-server is stopped and the PostgreSQL table is locked,
//     so deliveries are in flight or pending, and the hub is SIGKILLed; after a restart every
//     message of every round is delivered (duplicates allowed: counted by message id).
//
// Finally the built-in endpoint holds exactly the unmatched messages, through $fallback.
func TestCustomEndpointsThroughBinary(t *testing.T) {
	started := time.Now()
	ctx := context.Background()
	natsSrv := testservice.NewNATS(t)
	pgDSN := testservice.StartPostgres(t)
	hook := newHookReceiver(t)

	dir := t.TempDir()
	jsonDir, avroDir := filepath.Join(dir, "files-json"), filepath.Join(dir, "files-avro")
	config := filepath.Join(dir, "tether.yaml")
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) } // a YAML double-quoted string
	writeTestFile(t, config, strings.NewReplacer(
		"$HOOK_URL", q(hook.srv.URL), "$HOOK_CA", q(hook.caFile), "$HOOK_SECRET", q(hookSecret),
		"$JSON_DIR", q(jsonDir), "$AVRO_DIR", q(avroDir), "$NATS_URL", q(natsSrv.URL), "$PG_DSN", q(pgDSN),
	).Replace(`routing:
  endpoints:
    - name: hook
      type: webhook
      webhook: {url: $HOOK_URL, caFile: $HOOK_CA, secret: $HOOK_SECRET, timeout: 60s}
      retry: {initialInterval: 100ms, maxInterval: 500ms}
    - name: files-json
      type: storage
      storage: {directory: $JSON_DIR, encoding: JSON, batchFrequencyInSeconds: 2, beyondIoTHub: true}
      retry: {initialInterval: 100ms, maxInterval: 500ms}
    - name: files-avro
      type: storage
      storage: {directory: $AVRO_DIR, encoding: Avro, batchFrequencyInSeconds: 2, beyondIoTHub: true}
      retry: {initialInterval: 100ms, maxInterval: 500ms}
    - name: bus
      type: nats
      nats: {url: $NATS_URL, subject: "tether.e2e.{deviceId}", stream: TETHER_E2E, ackTimeout: 2s}
      retry: {initialInterval: 100ms, maxInterval: 500ms}
    - name: db
      type: postgres
      postgres: {connectionString: $PG_DSN, table: e2e_messages}
      retry: {initialInterval: 100ms, maxInterval: 500ms}
  routes:
    - {name: to-hook, source: DeviceMessages, condition: "dest = 'hook'", endpointNames: [hook]}
    - {name: to-files-json, source: DeviceMessages, condition: "dest = 'files'", endpointNames: [files-json]}
    - {name: to-files-avro, source: DeviceMessages, condition: "dest = 'files'", endpointNames: [files-avro]}
    - {name: to-nats, source: DeviceMessages, condition: "dest = 'nats'", endpointNames: [bus]}
    - {name: to-pg, source: DeviceMessages, condition: "dest = 'pg'", endpointNames: [db]}
  fallbackRoute: {isEnabled: true, endpointNames: [events]}
`))

	h := startHub(t, "--config", config)
	devices := []string{"sensor-1", "sensor-2"}
	conns := map[string]string{}
	for _, d := range devices {
		conns[d] = h.createDevice(d)
	}

	pg, err := pgx.Connect(ctx, pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)

	sinks := []*sink{
		{name: "hook", dest: "hook", collect: hook.collect},
		{name: "files-json", dest: "files", collect: func() (deliveries, error) { return readJSONFiles(jsonDir) }},
		{name: "files-avro", dest: "files", collect: func() (deliveries, error) { return readAvroFiles(avroDir) }},
		{name: "bus", dest: "nats", collect: func() (deliveries, error) { return readNATS(natsSrv.URL, "TETHER_E2E") }},
		{name: "db", dest: "pg", collect: func() (deliveries, error) { return readPostgres(pg, "e2e_messages") }},
	}
	var sent []sentMessage
	send := func(round int) []sentMessage {
		t.Helper()
		var batch []sentMessage
		for _, dev := range devices {
			msgs := roundMessages(round, dev)
			payload := make([]map[string]any, len(msgs))
			for i, m := range msgs {
				p := map[string]any{"messageId": m.id, "body": m.body, "contentType": "application/json", "contentEncoding": "utf-8"}
				if m.dest != "" {
					p["properties"] = map[string]string{"dest": m.dest}
				}
				payload[i] = p
			}
			arg, _ := json.Marshal(payload)
			res := h.nodeSDK(conns[dev], "mqtt", "send", string(arg))
			if !res.OK || res.Sent != len(msgs) {
				t.Fatalf("round %d, %s: SDK send: %+v", round, dev, res)
			}
			batch = append(batch, msgs...)
		}
		sent = append(sent, batch...)
		return batch
	}

	// Round 1: every endpoint up.
	send(1)
	waitAll(t, 30*time.Second, "round 1", sinks, sent, false)
	t.Logf("round 1 delivered to every endpoint after %v", time.Since(started).Round(time.Millisecond))

	// Round 2: the webhook fails and nats-server is down while the round is sent.
	hook.setMode(hookDown)
	natsSrv.Stop(t)
	downAt := time.Now()
	round2 := send(2)
	// The endpoints that are up are not held back.
	waitAll(t, 30*time.Second, "round 2, to the endpoints that are up", []*sink{sinks[1], sinks[2], sinks[4]}, sent, false)
	waitFor(t, 20*time.Second, "the hub to retry the failing webhook", func() (bool, string) {
		n := hook.failures()
		return n >= 3, fmt.Sprintf("%d failed requests", n)
	})
	if got, _ := hook.collect(); got.hasAny(round2) {
		t.Fatalf("the webhook acknowledged round 2 messages while answering 503: %v", got)
	}
	// Down for a while: long enough for NATS publishes to time out (ackTimeout 2s) and be retried.
	if d := 3*time.Second - time.Since(downAt); d > 0 {
		time.Sleep(d)
	}
	hook.setMode(hookUp)
	natsSrv.Start(t)
	waitAll(t, 30*time.Second, "round 2, after the webhook and NATS came back", sinks, sent, false)
	t.Logf("round 2 delivered to every endpoint after %v", time.Since(started).Round(time.Millisecond))

	// Round 3: deliveries in flight or pending when the hub is SIGKILLed.
	hook.setMode(hookHold)
	natsSrv.Stop(t)
	lock, err := pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `LOCK TABLE e2e_messages IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	round3 := send(3)
	// A connection of its own: pg is busy with the lock's transaction.
	pgWatch, err := pgx.Connect(ctx, pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pgWatch.Close(ctx)
	waitFor(t, 20*time.Second, "a webhook request in flight and a PostgreSQL insert waiting for the table lock", func() (bool, string) {
		var waiting int
		err := pgWatch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = 'tether endpoint db' AND wait_event_type = 'Lock'`).Scan(&waiting)
		held := hook.heldNow()
		return err == nil && waiting > 0 && held > 0, fmt.Sprintf("webhook requests held: %d, inserts waiting: %d (%v)", held, waiting, err)
	})
	// Round 3 is undelivered: held by the webhook, blocked by the lock, or waiting for NATS; the
	// storage endpoints' share is most likely staged in open files (batch frequency 2 s).
	pending := map[string]int{}
	for _, s := range sinks {
		got, _ := s.collect()
		for _, m := range round3 {
			if m.dest == s.dest && got[m.id] == 0 {
				pending[s.name]++
			}
		}
	}
	h.kill()
	t.Logf("hub SIGKILLed after %v with round 3 undelivered: %v", time.Since(started).Round(time.Millisecond), pending)
	for _, name := range []string{"hook", "bus", "db"} {
		if pending[name] != 4 {
			t.Fatalf("%s had %d round 3 messages undelivered at the SIGKILL, want all 4", name, pending[name])
		}
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	h.start()
	hook.setMode(hookUp)
	natsSrv.Start(t)
	waitAll(t, 45*time.Second, "every round after the SIGKILL and restart", sinks, sent, true)
	t.Logf("round 3 delivered to every endpoint after %v", time.Since(started).Round(time.Millisecond))

	// The built-in endpoint holds the unmatched messages, once each, through the fallback route.
	want := map[string]sentMessage{}
	for _, m := range sent {
		if m.dest != "hook" && m.dest != "files" && m.dest != "nats" && m.dest != "pg" {
			want[m.id] = m
		}
	}
	got := map[string]int{}
	for _, ev := range h.events() {
		id := ev.SystemProperties["message-id"]
		got[id]++
		m, ok := want[id]
		switch {
		case !ok:
			t.Errorf("built-in endpoint has %s (dest %q), which a route sent elsewhere", id, ev.Properties["dest"])
		case !reflect.DeepEqual(ev.Routes, []string{"$fallback"}) || ev.DeviceID != m.device || ev.Body == nil || *ev.Body != m.body ||
			ev.Properties["dest"] != m.dest:
			t.Errorf("built-in endpoint event %s: device %s, routes %v, properties %v, body %v; want %s via [$fallback]",
				id, ev.DeviceID, ev.Routes, ev.Properties, ev.Body, m.body)
		}
	}
	for id := range want {
		if got[id] != 1 {
			t.Errorf("built-in endpoint has unmatched message %s %d times, want once", id, got[id])
		}
	}
	t.Logf("%d messages sent, done after %v", len(sent), time.Since(started).Round(time.Millisecond))
}

// sentMessage is one message a device sent; dest is its dest property ("" for none).
type sentMessage struct {
	id, device, dest, body string
}

// roundMessages are a device's messages of one round: two for each dest, and one without dest.
func roundMessages(round int, device string) []sentMessage {
	var out []sentMessage
	for i, dest := range []string{"hook", "files", "nats", "pg", "other", "hook", "files", "nats", "pg", "other", ""} {
		id := fmt.Sprintf("r%d-%s-%02d", round, device, i)
		body, _ := json.Marshal(map[string]any{"id": id, "dest": dest, "n": i})
		out = append(out, sentMessage{id: id, device: device, dest: dest, body: string(body)})
	}
	return out
}

// deliveries counts what an endpoint received, by message id.
type deliveries map[string]int

func (d deliveries) hasAny(msgs []sentMessage) bool {
	for _, m := range msgs {
		if d[m.id] > 0 {
			return true
		}
	}
	return false
}

// sink reads back what one endpoint received (an error for a content mismatch, or while it
// cannot be read); dest is the property value routed to it.
type sink struct {
	name    string
	dest    string
	collect func() (deliveries, error)
}

// checkMessage compares what an endpoint received for a message with what was sent.
func checkMessage(byID map[string]sentMessage, id, device, dest string, body []byte) error {
	m, ok := byID[id]
	if !ok {
		return fmt.Errorf("unknown message id %q", id)
	}
	if device != m.device || dest != m.dest || string(body) != m.body {
		return fmt.Errorf("message %s: device %q, dest %q, body %s; want %q, %q, %s", id, device, dest, body, m.device, m.dest, m.body)
	}
	return nil
}

// allSent maps every message any round can send by id (the readers check contents against it).
var allSent = func() map[string]sentMessage {
	out := map[string]sentMessage{}
	for round := 1; round <= 3; round++ {
		for _, dev := range []string{"sensor-1", "sensor-2"} {
			for _, m := range roundMessages(round, dev) {
				out[m.id] = m
			}
		}
	}
	return out
}()

// waitAll waits until every sink received every sent message routed to it, then checks that it
// received nothing else and, unless allowDup, each message once.
func waitAll(t *testing.T, timeout time.Duration, what string, sinks []*sink, sent []sentMessage, allowDup bool) {
	t.Helper()
	got := make([]deliveries, len(sinks))
	waitFor(t, timeout, what, func() (bool, string) {
		var missing []string
		for i, s := range sinks {
			d, err := s.collect()
			if err != nil {
				missing = append(missing, fmt.Sprintf("%s: %v", s.name, err))
				continue
			}
			got[i] = d
			n := 0
			for _, m := range sent {
				if m.dest == s.dest && d[m.id] == 0 {
					n++
				}
			}
			if n > 0 {
				missing = append(missing, fmt.Sprintf("%s: %d missing", s.name, n))
			}
		}
		return len(missing) == 0, strings.Join(missing, "; ")
	})
	for i, s := range sinks {
		dups := 0
		for id, n := range got[i] {
			if m := allSent[id]; m.dest != s.dest {
				t.Errorf("%s received %s (dest %q), which is not routed to it", s.name, id, m.dest)
			}
			if n > 1 {
				dups += n - 1
				if !allowDup {
					t.Errorf("%s received %s %d times", s.name, id, n)
				}
			}
		}
		if dups > 0 && allowDup {
			t.Logf("%s: %d redeliveries (allowed after a crash)", s.name, dups)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// waitFor polls cond until it holds, failing the test with cond's last status after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, status := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, status)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

const hookSecret = "e2e-hook-secret"

type hookMode int

const (
	hookUp   hookMode = iota // 204
	hookDown                 // 503
	hookHold                 // hold the request until the mode changes or the client goes, then 503
)

// hookReceiver is a TLS webhook receiver that checks every request and counts the messages it
// acknowledged.
type hookReceiver struct {
	srv    *httptest.Server
	caFile string

	mu       sync.Mutex
	mode     hookMode
	changed  chan struct{} // closed when the mode changes
	got      deliveries
	problems []string
	failed   int
	held     int
}

func newHookReceiver(t *testing.T) *hookReceiver {
	r := &hookReceiver{got: deliveries{}, changed: make(chan struct{})}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(r.serve))
	r.caFile = filepath.Join(t.TempDir(), "hook-ca.pem")
	writeTestFile(t, r.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.srv.Certificate().Raw})))
	t.Cleanup(func() {
		r.setMode(hookUp) // releases held requests
		r.srv.Close()
	})
	return r
}

func (r *hookReceiver) setMode(m hookMode) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mode = m
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	mode, changed := r.mode, r.changed
	switch mode {
	case hookDown:
		r.failed++
	case hookHold:
		r.held++
	}
	r.mu.Unlock()
	switch mode {
	case hookDown:
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	case hookHold:
		select {
		case <-changed:
		case <-req.Context().Done(): // the hub was killed
		}
		r.mu.Lock()
		r.held--
		r.mu.Unlock()
		http.Error(w, "held, then refused", http.StatusServiceUnavailable)
		return
	}
	id := req.Header.Get("message-id")
	var problem error
	switch {
	case endpoint.VerifySignature([]byte(hookSecret), body, req.Header.Get(endpoint.HeaderSignature)) != nil:
		problem = fmt.Errorf("request for %s: bad signature %q", id, req.Header.Get(endpoint.HeaderSignature))
	case req.Header.Get("Content-Type") != "application/json" || req.Header.Get("iothub-content-encoding") != "utf-8" ||
		req.Header.Get(endpoint.HeaderEndpoint) != "hook" || req.Header.Get(endpoint.HeaderDeliveryID) == "" ||
		req.Header.Get("iothub-message-source") != "Telemetry":
		problem = fmt.Errorf("request for %s: headers %v", id, req.Header)
	default:
		problem = checkMessage(allSent, id, req.Header.Get("iothub-connection-device-id"), req.Header.Get("iothub-app-dest"), body)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if problem != nil {
		r.problems = append(r.problems, problem.Error())
	}
	r.got[id]++
	w.WriteHeader(http.StatusNoContent)
}

func (r *hookReceiver) collect() (deliveries, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.problems) > 0 {
		return nil, errors.New(strings.Join(r.problems, "; "))
	}
	return maps.Clone(r.got), nil
}

func (r *hookReceiver) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *hookReceiver) heldNow() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held
}

// storageName is IoT Hub's default file name format, {iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm},
// with "-n" when a name is taken, and the encoding's extension.
var storageName = regexp.MustCompile(`^tether/[0-9]+/[0-9]{4}/[0-9]{2}/[0-9]{2}/[0-9]{2}/[0-9]{2}(-[0-9]+)?\.(json|avro)$`)

// storageFiles lists the committed files of a storage endpoint (not its temporary directory).
func storageFiles(dir, ext string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			if d.Name() == ".tether-tmp" {
				return filepath.SkipDir
			}
			return nil
		}
		if !storageName.MatchString(filepath.ToSlash(rel)) || filepath.Ext(rel) != ext {
			return fmt.Errorf("unexpected file %s", rel)
		}
		files = append(files, path)
		return nil
	})
	sort.Strings(files)
	return files, err
}

func readJSONFiles(dir string) (deliveries, error) {
	files, err := storageFiles(dir, ".json")
	if err != nil {
		return nil, err
	}
	got := deliveries{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if len(data) == 0 || data[len(data)-1] != '\n' {
			return nil, fmt.Errorf("%s: not newline-terminated JSON lines", f)
		}
		for line := range bytes.Lines(data) {
			var rec endpoint.JSONRecord
			if err := json.Unmarshal(line, &rec); err != nil {
				return nil, fmt.Errorf("%s: %v: %s", f, err, line)
			}
			if err := checkStorageRecord(rec.EnqueuedTimeUtc, rec.Properties, rec.SystemProperties, rec.Body); err != nil {
				return nil, fmt.Errorf("%s: %v", f, err)
			}
			got[rec.SystemProperties["messageId"]]++
		}
	}
	return got, nil
}

func readAvroFiles(dir string) (deliveries, error) {
	files, err := storageFiles(dir, ".avro")
	if err != nil {
		return nil, err
	}
	got := deliveries{}
	for _, f := range files {
		file, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		dec, err := ocf.NewDecoder(file)
		if err != nil {
			file.Close()
			return nil, fmt.Errorf("%s: %v", f, err)
		}
		n := 0
		for dec.HasNext() {
			var rec endpoint.AvroRecord
			if err := dec.Decode(&rec); err != nil {
				file.Close()
				return nil, fmt.Errorf("%s: record %d: %v", f, n, err)
			}
			n++
			var body []byte
			if rec.Body != nil {
				body = *rec.Body
			}
			if err := checkStorageRecord(rec.EnqueuedTimeUtc, rec.Properties, rec.SystemProperties, body); err != nil {
				file.Close()
				return nil, fmt.Errorf("%s: %v", f, err)
			}
			got[rec.SystemProperties["messageId"]]++
		}
		err = dec.Error()
		file.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", f, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("%s: an empty file", f)
		}
	}
	return got, nil
}

func checkStorageRecord(enqueued string, props, sys map[string]string, body []byte) error {
	if _, err := time.Parse("2006-01-02T15:04:05.0000000Z", enqueued); err != nil {
		return fmt.Errorf("EnqueuedTimeUtc %q: %v", enqueued, err)
	}
	if sys["contentType"] != "application/json" || sys["contentEncoding"] != "utf-8" || sys["enqueuedTime"] != enqueued {
		return fmt.Errorf("system properties %v", sys)
	}
	return checkMessage(allSent, sys["messageId"], sys["connectionDeviceId"], props["dest"], body)
}

// readNATS reads the whole stream; an error while the server is down.
func readNATS(url, stream string) (deliveries, error) {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return deliveries{}, nil
	}
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	got := deliveries{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		id, dev := m.Header.Get("message-id"), m.Header.Get("iothub-connection-device-id")
		if m.Subject != "tether.e2e."+dev || m.Header.Get(jetstream.MsgIDHeader) == "" || m.Header.Get("iothub-content-type") != "application/json" {
			return nil, fmt.Errorf("stream message %d: subject %s, headers %v", seq, m.Subject, m.Header)
		}
		if err := checkMessage(allSent, id, dev, m.Header.Get("iothub-app-dest"), m.Data); err != nil {
			return nil, fmt.Errorf("stream message %d: %v", seq, err)
		}
		got[id]++
	}
	return got, nil
}

// readPostgres reads the table; empty until the endpoint created it.
func readPostgres(conn *pgx.Conn, table string) (deliveries, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT device_id, system_properties->>'message-id', properties->>'dest', body, body_json IS NOT NULL,
		system_properties->>'content-type' FROM `+pgx.Identifier{table}.Sanitize())
	if err != nil {
		var exists bool
		if qerr := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); qerr == nil && !exists {
			return deliveries{}, nil
		}
		return nil, err
	}
	got := deliveries{}
	for rows.Next() {
		var dev, id, dest, contentType string
		var body []byte
		var isJSON bool
		if err := rows.Scan(&dev, &id, &dest, &body, &isJSON, &contentType); err != nil {
			return nil, err
		}
		if !isJSON || contentType != "application/json" {
			return nil, fmt.Errorf("row %s: body_json set %v, content type %q", id, isJSON, contentType)
		}
		if err := checkMessage(allSent, id, dev, dest, body); err != nil {
			return nil, fmt.Errorf("row: %v", err)
		}
		got[id]++
	}
	return got, rows.Err()
}
