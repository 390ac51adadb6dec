package endpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tetherhub/tether/internal/message"
)

// Delivery is one message for an endpoint: its position in the telemetry log and the decoded,
// enriched message (a private copy the sink may keep).
type Delivery struct {
	Partition int
	Sequence  int64
	Message   *message.Message
}

// Sink delivers messages to one endpoint. Deliver is called with the deliveries of one
// partition, in log order, and must return nil only when the endpoint has them (then the
// dispatcher persists its cursor past them). Deliver may be called concurrently for different
// partitions. Close releases the sink's resources.
type Sink interface {
	Deliver(ctx context.Context, batch []Delivery) error
	Close() error
}

// PartialError reports that the first Done deliveries of a batch were delivered before Err:
// the dispatcher retries from the next one instead of from the start.
type PartialError struct {
	Done int
	Err  error
}

func (e *PartialError) Error() string { return fmt.Sprintf("after %d delivered: %v", e.Done, e.Err) }
func (e *PartialError) Unwrap() error { return e.Err }

// stagedSink is a sink (storage) that collects deliveries into a chunk it makes durable later:
// Deliver only stages; the dispatcher moves its cursor when Commit returns nil.
type stagedSink interface {
	Sink
	// Commit makes the partition's staged deliveries durable. On error the staged deliveries
	// are discarded (the dispatcher stages them again).
	Commit(ctx context.Context, partition int) error
	// Discard drops the partition's staged deliveries.
	Discard(partition int)
	// Due reports whether the partition has staged deliveries and when they must be committed.
	Due(partition int) (open bool, at time.Time)
}

// errChunkFull is returned (inside a PartialError) by a staged sink whose open chunk cannot take
// the next delivery: the dispatcher commits and stages the rest in a new chunk.
var errChunkFull = errors.New("chunk full")

// batchLimits are how many records a deliverer reads and hands to its sink at once.
type batchLimits struct {
	records int
	bytes   int
}

// openSink builds the sink of a validated spec. It does local work only (reading files,
// creating directories); network connections are made on first use, so an endpoint that is down
// fails its deliveries, not Apply.
func openSink(s Spec, env sinkEnv) (Sink, batchLimits, error) {
	switch s.Type {
	case TypeWebhook:
		return newWebhookSink(s, env)
	case TypeStorage:
		return newStorageSink(s, env)
	case TypeNATS:
		return newNATSSink(s, env)
	case TypePostgres:
		return newPostgresSink(s, env)
	}
	return nil, batchLimits{}, fmt.Errorf("endpoint %q: unknown type %q", s.Name, s.Type)
}

// sinkEnv is what sinks get from the dispatcher.
type sinkEnv struct {
	hub string
	now func() time.Time
	log *slog.Logger
}
