package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/tetherhub/tether/api"
)

const groupsPath = "/messages/events/consumergroups"

func groupPath(name string) string { return groupsPath + "/" + url.PathEscape(name) }

// ConsumerGroups lists the consumer groups of the built-in endpoint ($Default included).
func (c *Client) ConsumerGroups(ctx context.Context) ([]api.ConsumerGroup, error) {
	var out []api.ConsumerGroup
	_, err := c.do(ctx, http.MethodGet, groupsPath, nil, nil, nil, &out)
	return out, err
}

// ConsumerGroup returns a consumer group with its checkpoints.
func (c *Client) ConsumerGroup(ctx context.Context, name string) (api.ConsumerGroup, error) {
	var out api.ConsumerGroup
	_, err := c.do(ctx, http.MethodGet, groupPath(name), nil, nil, nil, &out)
	return out, err
}

// CreateConsumerGroup creates a consumer group, or returns it if it exists. The hub allows 20
// groups by default; names are 1-50 letters, digits, '.', '-' and '_', case-insensitive.
// Managing groups needs a policy with ServiceConnect and RegistryWrite (iothubowner).
func (c *Client) CreateConsumerGroup(ctx context.Context, name string) (api.ConsumerGroup, error) {
	var out api.ConsumerGroup
	_, err := c.do(ctx, http.MethodPut, groupPath(name), nil, nil, struct{}{}, &out)
	return out, err
}

// DeleteConsumerGroup deletes a consumer group and its checkpoints. $Default cannot be deleted.
func (c *Client) DeleteConsumerGroup(ctx context.Context, name string) error {
	resp, err := c.do(ctx, http.MethodDelete, groupPath(name), nil, nil, nil, nil)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

// CommitCheckpoint records seq as the last event group processed in partition; a reader with
// ReadOptions.Resume starts there + 1. Checkpointer batches commits for a stream.
func (c *Client) CommitCheckpoint(ctx context.Context, group string, partition int, seq int64) (api.Checkpoint, error) {
	var out api.Checkpoint
	path := groupPath(group) + "/partitions/" + strconv.Itoa(partition) + "/checkpoint"
	_, err := c.do(ctx, http.MethodPut, path, nil, nil, api.CheckpointRequest{SequenceNumber: seq}, &out)
	return out, err
}

// Partition describes one partition of the built-in endpoint: first and last sequence number
// and last enqueued time, like Event Hubs' GetPartitionProperties.
func (c *Client) Partition(ctx context.Context, partition int) (api.PartitionInfo, error) {
	var out api.PartitionInfo
	_, err := c.do(ctx, http.MethodGet, "/messages/events/partitions/"+strconv.Itoa(partition), nil, nil, nil, &out)
	return out, err
}

// Checkpointer remembers the last event processed in each partition and commits them to a
// consumer group when asked, so a reader can checkpoint every few seconds instead of per
// event. Mark an event only after it is processed: after a crash the reader resumes after the
// last commit and sees the events since then again, never fewer. It is safe for concurrent use.
type Checkpointer struct {
	client *Client
	group  string

	mu      sync.Mutex
	pending map[int]int64 // partition -> last processed, not yet committed
}

// NewCheckpointer returns a Checkpointer for group ("" = $Default).
func (c *Client) NewCheckpointer(group string) *Checkpointer {
	if group == "" {
		group = api.DefaultConsumerGroup
	}
	return &Checkpointer{client: c, group: group, pending: make(map[int]int64)}
}

// Mark records ev as processed.
func (cp *Checkpointer) Mark(ev api.Event) {
	cp.mu.Lock()
	cp.pending[ev.Partition] = ev.SequenceNumber
	cp.mu.Unlock()
}

// Commit commits every partition marked since the last commit.
func (cp *Checkpointer) Commit(ctx context.Context) error {
	cp.mu.Lock()
	batch := cp.pending
	cp.pending = make(map[int]int64, len(batch))
	cp.mu.Unlock()
	var errs []error
	for p, seq := range batch {
		if _, err := cp.client.CommitCheckpoint(ctx, cp.group, p, seq); err != nil {
			errs = append(errs, fmt.Errorf("checkpoint partition %d at %d: %w", p, seq, err))
			cp.mu.Lock()
			if _, newer := cp.pending[p]; !newer { // retry with the next Commit
				cp.pending[p] = seq
			}
			cp.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}
