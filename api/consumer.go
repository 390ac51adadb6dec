package api

import "time"

// DefaultConsumerGroup always exists and cannot be deleted.
const DefaultConsumerGroup = "$Default"

// ConsumerGroup is a consumer group of the built-in endpoint. Each group reads every partition
// independently and keeps its own checkpoints.
type ConsumerGroup struct {
	Name        string    `json:"name"`
	CreatedTime time.Time `json:"createdTime"`
	// Checkpoints are present when one group is read (not in lists), ordered by partition;
	// partitions without a checkpoint are absent.
	Checkpoints []Checkpoint `json:"checkpoints,omitempty"`
}

// Checkpoint is the sequence number of the last event a group's reader processed in a
// partition; a reader resuming from it starts at SequenceNumber+1.
type Checkpoint struct {
	Partition      int       `json:"partition"`
	SequenceNumber int64     `json:"sequenceNumber"`
	UpdatedTime    time.Time `json:"updatedTime"`
}

// CheckpointRequest is the body of a checkpoint commit.
type CheckpointRequest struct {
	SequenceNumber int64 `json:"sequenceNumber"`
}

// StreamError is the last line of an event stream the hub ends because of an error, e.g. a
// reader that fell behind retention: {"error":{"status":400,"Message":"ErrorCode:...",...}}.
type StreamError struct {
	Status int `json:"status"`
	ErrorBody
}

// Module is a module identity as IoT Hub's registry API returns it.
type Module struct {
	ModuleID                   string          `json:"moduleId"`
	DeviceID                   string          `json:"deviceId"`
	GenerationID               string          `json:"generationId,omitempty"`
	ETag                       string          `json:"etag,omitempty"`
	ManagedBy                  *string         `json:"managedBy,omitempty"`
	ConnectionState            string          `json:"connectionState,omitempty"`
	ConnectionStateUpdatedTime time.Time       `json:"connectionStateUpdatedTime"`
	LastActivityTime           time.Time       `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int             `json:"cloudToDeviceMessageCount"`
	Authentication             *Authentication `json:"authentication,omitempty"`
}
