package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/c2d"
)

// C2DCmd groups the cloud-to-device commands.
type C2DCmd struct {
	Send     C2DSendCmd     `cmd:"" help:"Send a cloud-to-device message to a device."`
	Purge    C2DPurgeCmd    `cmd:"" help:"Remove every message of a device's cloud-to-device queue."`
	Feedback C2DFeedbackCmd `cmd:"" help:"Print delivery feedback (messages sent with --ack) and remove what was printed."`
}

// C2DSendCmd sends one message.
type C2DSendCmd struct {
	DeviceID        string        `arg:"" name:"device-id" help:"Device id."`
	Data            string        `name:"data" help:"Message body."`
	MessageID       string        `name:"message-id" help:"Message id (feedback refers to it)."`
	CorrelationID   string        `name:"correlation-id" help:"Correlation id."`
	UserID          string        `name:"user-id" help:"User id."`
	ContentType     string        `name:"content-type" help:"Content type, e.g. application/json."`
	ContentEncoding string        `name:"content-encoding" help:"Content encoding, e.g. utf-8."`
	Expiry          string        `name:"expiry" xor:"expiry" help:"Absolute expiry time (RFC 3339)."`
	TTL             time.Duration `name:"ttl" xor:"expiry" help:"Time to live from now (default: the hub's default TTL, 1h)."`
	Ack             string        `name:"ack" enum:"none,positive,negative,full," default:"" help:"Feedback wanted: none, positive (completed), negative (expired, rejected, too many deliveries, purged) or full."`
	Props           []string      `name:"prop" sep:"none" help:"Application property key=value (repeatable)."`
	JSON            bool          `name:"json" help:"Print the result as JSON."`
}

// Run sends the message.
func (s *C2DSendCmd) Run(env *Env, c *CLI) error {
	m := api.C2DMessage{
		MessageID: s.MessageID, CorrelationID: s.CorrelationID, UserID: s.UserID,
		ContentType: s.ContentType, ContentEncoding: s.ContentEncoding, Ack: s.Ack, Body: s.Data,
	}
	switch {
	case s.Expiry != "":
		t, err := time.Parse(time.RFC3339Nano, s.Expiry)
		if err != nil {
			return fmt.Errorf("--expiry: %w", err)
		}
		m.ExpiryTime = &t
	case s.TTL < 0:
		return errors.New("--ttl must not be negative")
	case s.TTL > 0:
		t := time.Now().Add(s.TTL).UTC()
		m.ExpiryTime = &t
	}
	for _, p := range s.Props {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return fmt.Errorf("--prop %q: want key=value", p)
		}
		if m.Properties == nil {
			m.Properties = map[string]string{}
		}
		m.Properties[k] = v
	}
	t, err := c.connect()
	if err != nil {
		return err
	}
	res, err := t.client.SendC2D(env.ctx, s.DeviceID, m)
	if err != nil {
		return fmt.Errorf("send to %s: %w", s.DeviceID, err)
	}
	if s.JSON {
		return json.NewEncoder(env.Stdout).Encode(res)
	}
	id := res.MessageID
	if id == "" {
		id = "(no message id)"
	}
	fmt.Fprintf(env.Stdout, "Queued %s for %s: sequence number %d, expires %s\n", id, res.DeviceID, res.SequenceNumber,
		res.ExpiryTime.UTC().Format(time.RFC3339))
	return nil
}

// C2DPurgeCmd purges a device's queue.
type C2DPurgeCmd struct {
	DeviceID string `arg:"" name:"device-id" help:"Device id."`
}

// Run purges the queue.
func (p *C2DPurgeCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	n, err := t.client.PurgeC2D(env.ctx, p.DeviceID)
	if err != nil {
		return fmt.Errorf("purge %s: %w", p.DeviceID, err)
	}
	fmt.Fprintf(env.Stdout, "Purged %d message(s) from the queue of %s\n", n, p.DeviceID)
	return nil
}

// C2DFeedbackCmd prints feedback records.
type C2DFeedbackCmd struct {
	Wait time.Duration `name:"wait" help:"How long to wait for feedback when there is none yet (0 = print what is there and exit)."`
	JSON bool          `name:"json" help:"Print one JSON object per feedback record and nothing else on stdout."`
}

// Run prints every feedback message available (waiting up to --wait for the first) and
// completes each one once printed.
func (f *C2DFeedbackCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	wait := f.Wait
	n := 0
	for {
		fb, err := t.client.ReceiveFeedback(env.ctx, wait)
		if err != nil {
			return fmt.Errorf("receive feedback: %w", err)
		}
		if fb == nil {
			break
		}
		wait = 0 // drain what is there, then stop
		for _, r := range fb.Records {
			n++
			if f.JSON {
				if err := json.NewEncoder(env.Stdout).Encode(r); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(env.Stdout, "%s  %-22s device=%s messageId=%s  %s\n", r.EnqueuedTime.UTC().Format(time.RFC3339Nano),
				r.StatusCode, r.DeviceID, r.OriginalMessageID, r.Description)
		}
		if err := t.client.CompleteFeedback(env.ctx, fb.LockToken); err != nil {
			return fmt.Errorf("complete feedback: %w", err)
		}
	}
	if n == 0 && !f.JSON {
		fmt.Fprintln(env.Stderr, "No feedback.")
	}
	return nil
}

// C2DSettingsFlags are the `serve` flags for cloud-to-device messaging (spec 7.2). The
// defaults are IoT Hub's; queue depth and maximum TTL may be raised beyond IoT Hub's limits.
type C2DSettingsFlags struct {
	DefaultTTL       time.Duration `name:"c2d-default-ttl" env:"TETHER_C2D_DEFAULT_TTL" default:"1h" help:"TTL of cloud-to-device messages sent without an expiry (1m .. --c2d-max-ttl)."`
	MaxTTL           time.Duration `name:"c2d-max-ttl" env:"TETHER_C2D_MAX_TTL" default:"48h" help:"Longest cloud-to-device TTL; later expiry times are capped (IoT Hub: 48h; up to 8760h)."`
	MaxDeliveryCount int           `name:"c2d-max-delivery-count" env:"TETHER_C2D_MAX_DELIVERY_COUNT" default:"10" help:"Deliveries (abandons) after which a cloud-to-device message is dead-lettered (1..100)."`
	MaxQueueDepth    int           `name:"c2d-max-queue-depth" env:"TETHER_C2D_MAX_QUEUE_DEPTH" default:"50" help:"Most pending cloud-to-device messages per device (IoT Hub: 50; up to 100000)."`
	FeedbackBatch    int           `name:"c2d-feedback-batch" env:"TETHER_C2D_FEEDBACK_BATCH" default:"64" help:"Most records in one feedback message (1..1000)."`
	FeedbackInterval time.Duration `name:"c2d-feedback-interval" env:"TETHER_C2D_FEEDBACK_INTERVAL" default:"15s" help:"How long feedback records wait to be batched into a feedback message (10ms .. 1h)."`
	FeedbackTTL      time.Duration `name:"c2d-feedback-ttl" env:"TETHER_C2D_FEEDBACK_TTL" default:"1h" help:"How long a feedback message waits to be received."`
	LockDuration     time.Duration `name:"c2d-lock-duration" env:"TETHER_C2D_LOCK_DURATION" default:"1m" hidden:"" help:"How long a received message stays locked (IoT Hub: fixed 1m; for tests)."`
}

func (f C2DSettingsFlags) settings() c2d.Settings {
	return c2d.Settings{
		DefaultTTL:            f.DefaultTTL,
		MaxTTL:                f.MaxTTL,
		MaxDeliveryCount:      f.MaxDeliveryCount,
		LockDuration:          f.LockDuration,
		MaxQueueDepth:         f.MaxQueueDepth,
		FeedbackBatchSize:     f.FeedbackBatch,
		FeedbackBatchInterval: f.FeedbackInterval,
		FeedbackTTL:           f.FeedbackTTL,
	}
}
