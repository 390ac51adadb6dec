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

// EventStreamBinary is the media type of the event stream's binary form. A reader that names it
// in Accept gets the same stream (events, heartbeats, the final error) in it instead of NDJSON,
// at a fraction of the CPU per event on both ends: the hub sends each record as it stores it.
// The stream is a sequence of frames:
//
//	frame = kind (1 byte) | length (uvarint) | payload (length bytes)
//
//	EventFrameEvent      partition (uvarint) | sequence number (uvarint) | record
//	EventFrameHeartbeat  no payload
//	EventFrameError      the JSON object of the NDJSON stream's error line: {"error":{...}}
//
// record is the message in Tether's versioned storage encoding, after the built-in endpoint's
// enrichments; Tether's Go client (package client) decodes it into the Event the NDJSON line
// would give. A reader skips frames of a kind it does not know.
const EventStreamBinary = "application/vnd.tether.events+binary"

// The frame kinds of EventStreamBinary.
const (
	EventFrameHeartbeat byte = 0
	EventFrameEvent     byte = 1
	EventFrameError     byte = 2
)

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
