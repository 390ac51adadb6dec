package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhub/tether/api"
)

// SendC2D enqueues a cloud-to-device message for a device. Errors from the hub are *Error
// with IoT Hub's codes: DeviceNotFound, DeviceMaximumQueueDepthExceeded (the queue is full),
// MessageTooLarge, ArgumentInvalid.
func (c *Client) SendC2D(ctx context.Context, deviceID string, m api.C2DMessage) (api.C2DSendResult, error) {
	var out api.C2DSendResult
	_, err := c.do(ctx, http.MethodPost, devicePath(deviceID)+"/commands", nil, nil, m, &out)
	return out, err
}

// PurgeC2D removes every message of a device's cloud-to-device queue and returns how many
// there were.
func (c *Client) PurgeC2D(ctx context.Context, deviceID string) (int, error) {
	var out api.C2DPurgeResult
	_, err := c.do(ctx, http.MethodDelete, devicePath(deviceID)+"/commands", nil, nil, nil, &out)
	return out.TotalMessagesPurged, err
}

// Feedback is one feedback message: a batch of delivery outcomes, locked for this receiver
// until it is completed or abandoned (or the lock expires).
type Feedback struct {
	LockToken      string
	SequenceNumber uint64
	EnqueuedTime   time.Time
	DeliveryCount  int
	UserID         string // the hub name
	Records        []api.FeedbackRecord
}

const feedbackPath = "/messages/serviceBound/feedback"

// serverMaxWait is the longest wait one feedback request asks the hub for.
const serverMaxWait = 50 * time.Second

// ReceiveFeedback returns the next feedback message, waiting up to wait for one; nil when
// none arrived. Complete it once handled, or abandon it to have it delivered again.
func (c *Client) ReceiveFeedback(ctx context.Context, wait time.Duration) (*Feedback, error) {
	deadline := time.Now().Add(wait)
	for {
		step := min(max(time.Until(deadline), 0), serverMaxWait)
		q := url.Values{}
		if step > 0 {
			q.Set("wait", step.String())
		}
		resp, err := c.do(ctx, http.MethodGet, feedbackPath, q, nil, nil, nil)
		if err != nil {
			return nil, err
		}
		fb, err := readFeedback(resp)
		if err != nil || fb != nil {
			return fb, err
		}
		if !time.Now().Before(deadline) {
			return nil, nil
		}
	}
}

func readFeedback(resp *http.Response) (*Feedback, error) {
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read feedback: %w", err)
	}
	fb := &Feedback{
		LockToken: strings.Trim(resp.Header.Get("ETag"), `"`),
		UserID:    resp.Header.Get("iothub-userid"),
	}
	fb.SequenceNumber, _ = strconv.ParseUint(resp.Header.Get("iothub-sequencenumber"), 10, 64)
	fb.DeliveryCount, _ = strconv.Atoi(resp.Header.Get("iothub-deliverycount"))
	fb.EnqueuedTime, _ = time.Parse(time.RFC3339Nano, resp.Header.Get("iothub-enqueuedtime"))
	if err := json.Unmarshal(data, &fb.Records); err != nil {
		return nil, fmt.Errorf("decode feedback: %w", err)
	}
	return fb, nil
}

// CompleteFeedback removes a received feedback message. An expired or unknown lock is an
// *Error with code DeviceMessageLockLost.
func (c *Client) CompleteFeedback(ctx context.Context, lockToken string) error {
	resp, err := c.do(ctx, http.MethodDelete, feedbackPath+"/"+url.PathEscape(lockToken), nil, nil, nil, nil)
	return closeBody(err, resp)
}

// AbandonFeedback returns a received feedback message to the queue for another receive.
func (c *Client) AbandonFeedback(ctx context.Context, lockToken string) error {
	resp, err := c.do(ctx, http.MethodPost, feedbackPath+"/"+url.PathEscape(lockToken)+"/abandon", nil, nil, nil, nil)
	return closeBody(err, resp)
}

func closeBody(err error, resp *http.Response) error {
	if resp != nil {
		resp.Body.Close()
	}
	return err
}
