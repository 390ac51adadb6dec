// Package c2d is Tether's cloud-to-device messaging state (IoT Hub spec 7): one durable FIFO
// queue per device, the lock/settle cycle devices drive, and the delivery feedback the service
// reads. It holds state and semantics only; transports and the service API translate to it.
//
// # Model
//
// A message is Enqueued (visible) or Invisible (locked by a receive, with a random lock token
// and a lock expiry). Complete removes it; Reject, expiry, and an Abandon that makes the
// delivery count reach MaxDeliveryCount dead-letter it (remove it, with feedback). Abandon
// returns it to Enqueued with delivery count + 1; lock expiry returns it to Enqueued without
// touching the delivery count (IoT Hub's current rule, spec 7.1), and so does Release, which a
// transport calls when a connection ends with a delivery unacknowledged. Receive delivers the visible
// message with the lowest sequence number and skips locked ones.
//
// Feedback records (spec 7.4) are produced for the ack mode a message asked for, collected in
// a pending batch and turned into feedback messages of up to FeedbackBatchSize records, or
// when the oldest pending record is FeedbackBatchInterval old. Feedback messages form one
// hub-wide queue with the same lock/settle semantics, their own TTL and delivery limit.
//
// # Storage
//
// Everything lives in bbolt, in top-level buckets this package owns (c2d.*); the db may be
// shared with other packages. Every state change is one write transaction, so a crash leaves
// either the old or the new state; locks, delivery counts and sequence numbers survive
// restarts. Per device bucket (nested in c2d.queues, keyed by device id):
//
//	"n"            pending count (Enqueued + Invisible), 8 bytes big-endian
//	'm' seq(8)     the immutable message (properties and body)
//	's' seq(8)     its mutable state (delivery count, expiry, lock token, lock expiry)
//	'l' token      lock index: token -> seq(8)
//
// Splitting message and state keeps a receive or abandon from rewriting a 64 KB body. The
// feedback queue uses the same layout in c2d.feedback. c2d.seq holds the last sequence number
// per device, kept across purge and delete so a number is never reused. c2d.timers orders
// every queued message by its next deadline (lock expiry if locked, else expiry) so the
// sweeper finds due work without scanning queues; its key is deadline(8) seq(8) deviceID,
// with an empty device id for the feedback queue (device ids are never empty).
// c2d.pending holds feedback records not yet batched.
package c2d

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/bbolt"
)

// Errors callers branch on (IoT Hub error code in parentheses).
var (
	ErrQueueFull      = errors.New("device queue is full")                  // 403004 DeviceMaximumQueueDepthExceeded
	ErrDeviceNotFound = errors.New("device not found")                      // 404001 DeviceNotFound
	ErrLockLost       = errors.New("message lock lost")                     // 412002 DeviceMessageLockLost
	ErrTooLarge       = errors.New("message too large")                     // 413001 MessageTooLarge
	ErrInvalid        = errors.New("invalid message")                       // 400004 ArgumentInvalid
	ErrInvalidSetting = errors.New("invalid cloud-to-device configuration") // configuration, not a request
)

// MaxMessageSize is IoT Hub's limit for a cloud-to-device message, counted as Message.Size does.
const MaxMessageSize = 64 * 1024

// FeedbackContentType is the content type of feedback messages (spec 7.4).
const FeedbackContentType = "application/vnd.microsoft.iothub.feedback.json"

// Settings are the hub-wide cloud-to-device settings (spec 7.2). Zero fields take IoT Hub's
// defaults; see EnsureDefaults and Validate for the ranges.
type Settings struct {
	// DefaultTTL applies to messages without an expiry time. 1h; 1 min .. MaxTTL.
	DefaultTTL time.Duration
	// MaxTTL caps every message's expiry at enqueue time + MaxTTL, including expiry times the
	// sender set. IoT Hub's maximum TTL is 2 days (the default); an operator may raise it up to
	// a year, which IoT Hub does not allow.
	MaxTTL time.Duration
	// MaxDeliveryCount is the delivery count at which an abandoned message is dead-lettered.
	// 10; 1..100.
	MaxDeliveryCount int
	// LockDuration is how long a received message stays invisible. IoT Hub fixes it at 1 min
	// (the default); 5 s .. 5 min.
	LockDuration time.Duration
	// MaxQueueDepth is the most pending (Enqueued + Invisible) messages per device. IoT Hub's
	// is 50 (the default); an operator may raise it up to 100000.
	MaxQueueDepth int

	// FeedbackBatchSize is the most records in one feedback message. 64; 1..1000.
	FeedbackBatchSize int
	// FeedbackBatchInterval is how old the oldest pending record may get before the pending
	// records are sent as a feedback message. 15 s; 10 ms .. 1 h.
	FeedbackBatchInterval time.Duration
	// FeedbackTTL is how long a feedback message waits to be received. 1h; 1 min .. MaxTTL.
	FeedbackTTL time.Duration
	// FeedbackLockDuration is how long a received feedback message stays invisible. 1 min;
	// 5 s .. 5 min.
	FeedbackLockDuration time.Duration
	// FeedbackMaxDeliveryCount is the delivery count at which an abandoned feedback message is
	// dropped. 10; 1..100.
	FeedbackMaxDeliveryCount int
}

// EnsureDefaults fills zero fields with IoT Hub's defaults.
func (s *Settings) EnsureDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	def(&s.DefaultTTL, time.Hour)
	def(&s.MaxTTL, 48*time.Hour)
	defInt(&s.MaxDeliveryCount, 10)
	def(&s.LockDuration, time.Minute)
	defInt(&s.MaxQueueDepth, 50)
	defInt(&s.FeedbackBatchSize, 64)
	def(&s.FeedbackBatchInterval, 15*time.Second)
	def(&s.FeedbackTTL, time.Hour)
	def(&s.FeedbackLockDuration, time.Minute)
	defInt(&s.FeedbackMaxDeliveryCount, 10)
}

// Validate checks the ranges documented on the fields. Errors wrap ErrInvalidSetting.
func (s *Settings) Validate() error {
	var errs []error
	dur := func(name string, v, lo, hi time.Duration) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%w: %s %v is outside %v..%v", ErrInvalidSetting, name, v, lo, hi))
		}
	}
	num := func(name string, v, lo, hi int) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%w: %s %d is outside %d..%d", ErrInvalidSetting, name, v, lo, hi))
		}
	}
	dur("MaxTTL", s.MaxTTL, time.Minute, 365*24*time.Hour)
	dur("DefaultTTL", s.DefaultTTL, time.Minute, s.MaxTTL)
	num("MaxDeliveryCount", s.MaxDeliveryCount, 1, 100)
	dur("LockDuration", s.LockDuration, 5*time.Second, 5*time.Minute)
	num("MaxQueueDepth", s.MaxQueueDepth, 1, 100000)
	num("FeedbackBatchSize", s.FeedbackBatchSize, 1, 1000)
	dur("FeedbackBatchInterval", s.FeedbackBatchInterval, 10*time.Millisecond, time.Hour)
	dur("FeedbackTTL", s.FeedbackTTL, time.Minute, s.MaxTTL)
	dur("FeedbackLockDuration", s.FeedbackLockDuration, 5*time.Second, 5*time.Minute)
	num("FeedbackMaxDeliveryCount", s.FeedbackMaxDeliveryCount, 1, 100)
	return errors.Join(errs...)
}

// DeviceLookup reports whether a device exists and its generation id. The store does not know
// the registry; the hub passes the registry's lookup.
type DeviceLookup func(ctx context.Context, deviceID string) (generationID string, ok bool, err error)

// Options configure a Store.
type Options struct {
	Settings Settings
	// HubName is the user id of feedback messages. Required.
	HubName string
	// DeviceExists lets Send refuse unknown devices with ErrDeviceNotFound and stamp the
	// device generation id into feedback. Nil accepts every device (generation id empty).
	DeviceExists DeviceLookup
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now defaults to time.Now; tests pass a fake clock.
	Now func() time.Time
	// SweepInterval is how often the background sweeper looks for expired messages and locks
	// and due feedback batches. 0 means 1 s; negative starts no sweeper (call Sweep yourself).
	SweepInterval time.Duration
}

var (
	queuesBucket   = []byte("c2d.queues")
	seqBucket      = []byte("c2d.seq")
	timersBucket   = []byte("c2d.timers")
	feedbackBucket = []byte("c2d.feedback")
	pendingBucket  = []byte("c2d.pending")
)

// Store holds the cloud-to-device queues and feedback. It is safe for concurrent use.
type Store struct {
	db       *bbolt.DB
	set      Settings
	hubName  string
	exists   DeviceLookup
	log      *slog.Logger
	now      func() time.Time
	interval time.Duration

	notifyMu sync.Mutex
	notify   map[string]chan struct{} // "" is the feedback queue

	gcMu    sync.Mutex // group commit, see commit.go
	gcQueue []*op
	gcBusy  bool

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Open returns a store in db, creating its buckets if missing, and starts the background
// sweeper (see Options.SweepInterval). The caller keeps ownership of db and closes it after
// Close.
func Open(db *bbolt.DB, opts Options) (*Store, error) {
	set := opts.Settings
	set.EnsureDefaults()
	if err := set.Validate(); err != nil {
		return nil, fmt.Errorf("c2d: open: %w", err)
	}
	if opts.HubName == "" {
		return nil, fmt.Errorf("c2d: open: %w: HubName is required", ErrInvalidSetting)
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{queuesBucket, seqBucket, timersBucket, feedbackBucket, pendingBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("c2d: open: create buckets: %w", err)
	}
	s := &Store{
		db:       db,
		set:      set,
		hubName:  opts.HubName,
		exists:   opts.DeviceExists,
		log:      opts.Logger,
		now:      opts.Now,
		interval: opts.SweepInterval,
		notify:   make(map[string]chan struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.interval == 0 {
		s.interval = time.Second
	}
	if s.interval > 0 {
		go s.run()
	} else {
		close(s.done)
	}
	return s, nil
}

// Settings returns the effective settings (defaults filled in).
func (s *Store) Settings() Settings { return s.set }

// Close stops the sweeper and waits for it. Pending feedback stays durable and is sent after
// the next Open. It does not close the db.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return nil
}

// Notify returns a channel that is closed when a message may have become visible for the
// device (sent, abandoned, lock expired) or the device's queue was dropped. Take the channel
// before calling Receive and wait on it only if Receive found nothing, so no wake-up is lost.
func (s *Store) Notify(deviceID string) <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	ch := s.notify[deviceID]
	if ch == nil {
		ch = make(chan struct{})
		s.notify[deviceID] = ch
	}
	return ch
}

// NotifyFeedback is Notify for the feedback queue: closed when a feedback message may have
// become visible.
func (s *Store) NotifyFeedback() <-chan struct{} { return s.Notify("") }

// wake closes the notification channels of the given queues ("" = feedback).
func (s *Store) wake(ids ...string) {
	if len(ids) == 0 {
		return
	}
	s.notifyMu.Lock()
	for _, id := range ids {
		if ch := s.notify[id]; ch != nil {
			close(ch)
			delete(s.notify, id)
		}
	}
	s.notifyMu.Unlock()
}
