package service

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/consumer"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/telemetry"
)

// Read sizes for the stream: what one partition reader holds in memory at most. A slow client
// blocks the writer, so the hub's memory per stream stays bounded by these.
const (
	readBatchRecords = 256
	readBatchBytes   = 1 << 20
)

// heartbeatInterval is how often an idle stream writes an empty line, so proxies keep it open
// and a vanished client is noticed.
const heartbeatInterval = 15 * time.Second

func (s *Server) listPartitions(w http.ResponseWriter, r *http.Request) {
	out := make([]api.PartitionInfo, 0, s.log.Partitions())
	for p := range s.log.Partitions() {
		info, err := s.log.Info(p)
		if err != nil {
			s.writeError(w, r, http.StatusInternalServerError, "ServerError", err.Error())
			return
		}
		out = append(out, partitionInfo(info))
	}
	writeJSON(w, http.StatusOK, out)
}

func partitionInfo(info telemetry.PartitionInfo) api.PartitionInfo {
	return api.PartitionInfo{
		Partition:                  info.Partition,
		BeginningSequenceNumber:    info.First,
		LastEnqueuedSequenceNumber: info.Last,
		LastEnqueuedTime:           info.LastEnqueuedTime,
		IsEmpty:                    info.Empty,
	}
}

// streamEvents streams the built-in endpoint as newline-delimited JSON events (api.Event).
// Query: from=start|end|<sequenceNumber>|<RFC 3339 time> (default end), partition=<n> (default
// all, or the device's partition with device=), device=<id> (only that device's messages),
// consumerGroup=<name> (default $Default; 404 if it does not exist), resume=true (start each
// partition after the group's checkpoint; from= applies to partitions without one).
// If the stream fails after it started (a reader overtaken by retention), its last line is an
// api.StreamError.
//
// The built-in endpoint is the log filtered by the routing decision stored with each message:
// records not routed to "events" are skipped, so sequence numbers have gaps once routes exist.
// Enrichments configured for "events" are stamped as the events are read. raw=true (needs
// RoutingAdmin) streams the log unfiltered and unenriched, every event with its matched routes
// and endpoints: the tap before routing.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	device := q.Get("device")
	raw, err := parseBool(q.Get("raw"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", "raw: "+err.Error())
		return
	}
	if raw {
		if _, err := s.auth.AuthenticateService(r.Context(), r.Header.Get("Authorization"), strings.TrimPrefix(r.URL.Path, "/"), RoutingAdmin); err != nil {
			s.writeError(w, r, http.StatusUnauthorized, "IotHubUnauthorizedAccess", "raw=true reads every endpoint's messages: "+err.Error())
			return
		}
	}
	partitions, err := s.selectPartitions(q.Get("partition"), device)
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return
	}
	resume, err := parseBool(q.Get("resume"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return
	}
	group := q.Get("consumerGroup")
	if group == "" {
		group = consumer.DefaultGroup
	}
	var resumeAt map[int]int64
	if s.groups != nil {
		if _, err := s.groups.Group(r.Context(), group); err != nil {
			s.writeGroupError(w, r, err)
			return
		}
		if resume {
			if resumeAt, err = s.resumePositions(r.Context(), group); err != nil {
				s.writeGroupError(w, r, err)
				return
			}
		}
	} else if resume || group != consumer.DefaultGroup {
		s.haveGroups(w, r)
		return
	}
	starts := make([]int64, len(partitions))
	for i, p := range partitions {
		if seq, ok := resumeAt[p]; ok {
			starts[i], err = s.resumeSequence(group, p, seq)
		} else {
			starts[i], err = s.startSequence(p, q.Get("from"))
		}
		if err != nil {
			s.writeError(w, r, http.StatusBadRequest, "ArgumentInvalid", err.Error())
			return
		}
	}
	flusher, _ := w.(http.Flusher)
	out := &eventWriter{w: bufio.NewWriterSize(w, 32<<10), flusher: flusher, binary: acceptsBinaryEvents(r.Header.Values("Accept"))}
	if out.binary {
		w.Header().Set("Content-Type", api.EventStreamBinary)
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := out.flush(); err != nil {
		return
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(partitions))
	for i, p := range partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.tailPartition(ctx, p, starts[i], device, raw, out)
		}()
	}
	heartbeat := time.NewTicker(heartbeatInterval)
	defer heartbeat.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var failed error
	for {
		select {
		case <-done:
			if failed != nil {
				// Said in the stream, so the reader learns why it ended instead of seeing EOF.
				_ = out.streamError(failed)
			}
			return
		case err := <-errs:
			// One partition failing ends the stream: the client reconnects from where it was.
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("event stream ended", "err", err)
				failed = err
				cancel()
			}
		case <-heartbeat.C:
			if err := out.heartbeat(); err != nil {
				cancel()
			}
		}
	}
}

// selectPartitions returns the partitions a stream reads.
func (s *Server) selectPartitions(partition, device string) ([]int, error) {
	if partition != "" {
		p, err := strconv.Atoi(partition)
		if err != nil || p < 0 || p >= s.log.Partitions() {
			return nil, fmt.Errorf("partition %q does not exist: the hub has partitions 0 to %d", partition, s.log.Partitions()-1)
		}
		return []int{p}, nil
	}
	if device != "" {
		return []int{s.log.PartitionFor(device)}, nil
	}
	all := make([]int, s.log.Partitions())
	for i := range all {
		all[i] = i
	}
	return all, nil
}

// startSequence resolves a from= value for one partition.
func (s *Server) startSequence(p int, from string) (int64, error) {
	info, err := s.log.Info(p)
	if err != nil {
		return 0, err
	}
	switch from {
	case "", "end":
		return info.Last + 1, nil
	case "start":
		return info.First, nil
	}
	if seq, err := strconv.ParseInt(from, 10, 64); err == nil {
		if seq < info.First {
			return 0, fmt.Errorf("sequence number %d of partition %d is no longer retained: the partition begins at %d", seq, p, info.First)
		}
		return seq, nil
	}
	t, err := time.Parse(time.RFC3339Nano, from)
	if err != nil {
		return 0, fmt.Errorf("from=%q is not start, end, a sequence number or an RFC 3339 time", from)
	}
	return s.log.SeekTime(p, t)
}

// resumeSequence checks where a reader resuming after group's checkpoint in partition p starts.
// Events the group has not read but retention removed are not skipped silently.
func (s *Server) resumeSequence(group string, p int, seq int64) (int64, error) {
	info, err := s.log.Info(p)
	if err != nil {
		return 0, err
	}
	switch {
	case seq < info.First:
		return 0, fmt.Errorf("consumer group %s: its checkpoint in partition %d is at sequence number %d, but the partition now begins at %d: "+
			"events %d to %d were removed by retention before the group read them; to go on from the oldest retained event, read partition %d from=start without resume and commit a checkpoint",
			group, p, seq-1, info.First, seq, info.First-1, p)
	case seq > info.Last+1:
		return 0, fmt.Errorf("consumer group %s: its checkpoint in partition %d is at sequence number %d, beyond the partition's last event %d", group, p, seq-1, info.Last)
	}
	return seq, nil
}

func parseBool(v string) (bool, error) {
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%q is not true or false", v)
	}
	return b, nil
}

// tailPartition writes the partition's events from seq on until the request ends.
func (s *Server) tailPartition(ctx context.Context, p int, seq int64, device string, raw bool, out *eventWriter) error {
	var (
		view message.View         // reused for every record: decoding one allocates nothing
		buf  []byte               // the batch's encoded events, reused
		read telemetry.ReadBuffer // the batch's records, reused: each is done with before the next read
	)
	for {
		// Subscribe before reading so an append between the read and the wait is not missed.
		notify := s.log.Notify(p)
		records, err := s.log.ReadInto(&read, p, seq, readBatchRecords, readBatchBytes)
		if errors.Is(err, telemetry.ErrBeforeRetained) {
			// Retention overtook a slow reader: say so in the stream rather than skip silently.
			first := "later"
			if info, ierr := s.log.Info(p); ierr == nil {
				first = "at " + strconv.FormatInt(info.First, 10)
			}
			return fmt.Errorf("partition %d: the reader fell behind retention: events from sequence number %d on were removed before it read them, and the partition now begins %s: %w", p, seq, first, err)
		}
		if err != nil {
			return fmt.Errorf("read partition %d at %d: %w", p, seq, err)
		}
		if len(records) == 0 {
			select {
			case <-notify:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		// Encoded outside the writer's lock, so partitions encode in parallel, and written in
		// pieces of about writeChunk, so a stream holds little more than its read batches.
		buf = buf[:0]
		wrote := false // a piece without its flush
		size := 0      // of the batch's records
		for _, rec := range records {
			size += len(rec.Data)
			if len(buf) >= writeChunk {
				if err := out.write(buf, true); err != nil {
					return err
				}
				buf, wrote = buf[:0], true
			}
			seq = rec.Sequence + 1
			data, ok, err := s.builtInRecord(rec, &view, device, raw)
			if err != nil {
				return err
			}
			switch {
			case !ok:
			case out.binary:
				buf = appendBinaryEvent(buf, rec.Partition, rec.Sequence, data)
			default:
				buf = appendEvent(buf, rec.Partition, rec.Sequence, &view, raw)
			}
		}
		if len(buf) > 0 || wrote {
			if err := out.write(buf, false); err != nil {
				return err
			}
		}
		if cap(buf) > 2*writeChunk {
			buf = nil // one large record; do not keep its buffer
		}
		if size > readBatchBytes/4 {
			read = telemetry.ReadBuffer{} // a large batch (a reader catching up): do not keep its memory
		}
	}
}

// writeChunk is how much of a batch's events a partition reader encodes before writing them out.
const writeChunk = 64 << 10

// builtInRecord decodes the record into v and returns its encoding as the stream shows it (the
// record, or its re-encoding with the enrichments for "events" applied), and false when the
// message was not routed to the built-in endpoint or is not device's (device ""; every device).
// raw keeps every record as stored.
func (s *Server) builtInRecord(rec telemetry.Record, v *message.View, device string, raw bool) ([]byte, bool, error) {
	if err := v.Decode(rec.Data); err != nil {
		return nil, false, fmt.Errorf("decode record %d of partition %d: %w", rec.Sequence, rec.Partition, err)
	}
	if !raw && !v.ToEndpoint(message.BuiltInEndpoint) {
		return nil, false, nil
	}
	if device != "" && string(v.ConnectionDeviceID) != device {
		return nil, false, nil
	}
	enrich := !raw && s.routing != nil && s.routing.Router().HasEnrichments(message.BuiltInEndpoint)
	if !enrich && v.PropertiesInOrder() {
		return rec.Data, true, nil
	}
	// Through a Message: the enrichments set properties, and a record with its properties out
	// of order (never written by the hub) is written as the map it decodes to.
	var m message.Message
	if err := m.UnmarshalBinary(rec.Data); err != nil {
		return nil, false, fmt.Errorf("decode record %d of partition %d: %w", rec.Sequence, rec.Partition, err)
	}
	if enrich {
		s.routing.Router().Enrich(message.BuiltInEndpoint, &m)
	}
	data, err := m.MarshalBinary()
	if err == nil {
		err = v.Decode(data)
	}
	if err != nil {
		return nil, false, fmt.Errorf("re-encode record %d of partition %d: %w", rec.Sequence, rec.Partition, err)
	}
	return data, true, nil
}

// eventWriter serialises partition readers onto one response.
type eventWriter struct {
	mu      sync.Mutex
	w       *bufio.Writer
	flusher http.Flusher
	// waiting counts writers waiting for mu. A writer that sees another waiting leaves the
	// flush to it: the last one flushes what all wrote, one flush (a few system calls and TLS
	// records) instead of one per partition.
	waiting atomic.Int32
	binary  bool // api.EventStreamBinary frames, not NDJSON lines
}

// write writes encoded events; more says that the caller writes again at once (no flush yet).
func (e *eventWriter) write(lines []byte, more bool) error {
	e.waiting.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.waiting.Add(-1)
	if _, err := e.w.Write(lines); err != nil {
		return fmt.Errorf("write events: %w", err)
	}
	if more || e.waiting.Load() > 0 {
		return nil
	}
	return e.flushLocked()
}

// streamError writes the line that ends a failed stream.
func (e *eventWriter) streamError(err error) error {
	status, code := http.StatusInternalServerError, "ServerError"
	if errors.Is(err, telemetry.ErrBeforeRetained) {
		status, code = http.StatusBadRequest, "ArgumentInvalid"
	}
	line, jerr := json.Marshal(struct {
		Error api.StreamError `json:"error"`
	}{api.StreamError{Status: status, ErrorBody: api.NewErrorBody(code, err.Error())}})
	if jerr != nil {
		return jerr
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.binary {
		_, err = e.w.Write(appendFrame(nil, api.EventFrameError, line))
	} else {
		_, err = e.w.Write(append(line, '\n'))
	}
	if err != nil {
		return err
	}
	return e.flushLocked()
}

func (e *eventWriter) heartbeat() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	heartbeat := []byte("\n")
	if e.binary {
		heartbeat = appendFrame(nil, api.EventFrameHeartbeat, nil)
	}
	if _, err := e.w.Write(heartbeat); err != nil {
		return err
	}
	return e.flushLocked()
}

func (e *eventWriter) flush() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.flushLocked()
}

func (e *eventWriter) flushLocked() error {
	if err := e.w.Flush(); err != nil {
		return err
	}
	if e.flusher != nil {
		e.flusher.Flush()
	}
	return nil
}
