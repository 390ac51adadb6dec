package api

import "time"

// Cloud-to-device messaging (spec section 7). IoT Hub's service sends C2D over AMQP; Tether's
// service API adds REST operations for it:
//
//	POST   /devices/{id}/commands                          send one message (C2DMessage) → C2DSendResult
//	DELETE /devices/{id}/commands                          purge the queue → C2DPurgeResult (IoT Hub's own)
//	GET    /messages/serviceBound/feedback[?wait=<dur>]    receive a feedback message: 200 + ETag, or 204
//	DELETE /messages/serviceBound/feedback/{lockToken}     complete it
//	POST   /messages/serviceBound/feedback/{lockToken}/abandon
//
// All need ServiceConnect.

// FeedbackContentType is the Content-Type of a feedback message's body (an array of
// FeedbackRecord).
const FeedbackContentType = "application/vnd.microsoft.iothub.feedback.json"

// C2DMessage is a cloud-to-device message to send. Every field is optional.
type C2DMessage struct {
	MessageID       string `json:"messageId,omitempty"`
	CorrelationID   string `json:"correlationId,omitempty"`
	UserID          string `json:"userId,omitempty"`
	ContentType     string `json:"contentType,omitempty"`
	ContentEncoding string `json:"contentEncoding,omitempty"`
	// ExpiryTime is the absolute expiry; nil takes the hub's default TTL. The hub caps it at
	// its maximum TTL.
	ExpiryTime *time.Time `json:"expiryTimeUtc,omitempty"`
	// Ack is the feedback wanted: none (default), positive, negative or full.
	Ack        string            `json:"ack,omitempty"`
	Properties map[string]string `json:"properties,omitempty"`
	// Body is the body as text; BodyBase64 the body as base64 for binary data. At most one.
	Body       string `json:"body,omitempty"`
	BodyBase64 string `json:"bodyBase64,omitempty"`
}

// C2DSendResult describes an enqueued cloud-to-device message.
type C2DSendResult struct {
	DeviceID       string    `json:"deviceId"`
	MessageID      string    `json:"messageId,omitempty"`
	SequenceNumber uint64    `json:"sequenceNumber"`
	EnqueuedTime   time.Time `json:"enqueuedTimeUtc"`
	ExpiryTime     time.Time `json:"expiryTimeUtc"`
}

// C2DPurgeResult is IoT Hub's answer to a purge (PurgeMessageQueueResult).
type C2DPurgeResult struct {
	DeviceID            string `json:"deviceId"`
	TotalMessagesPurged int    `json:"totalMessagesPurged"`
}

// FeedbackRecord is one delivery outcome in a feedback message, as IoT Hub writes it.
// StatusCode is Success, Expired, DeliveryCountExceeded, Rejected or Purged.
type FeedbackRecord struct {
	OriginalMessageID  string    `json:"originalMessageId"`
	EnqueuedTime       time.Time `json:"enqueuedTimeUtc"`
	StatusCode         string    `json:"statusCode"`
	Description        string    `json:"description"`
	DeviceID           string    `json:"deviceId"`
	DeviceGenerationID string    `json:"deviceGenerationId"`
}
