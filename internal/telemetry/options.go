package telemetry

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults applied by Options.EnsureDefaults.
const (
	DefaultPartitions        = 4 // used only when a log is created with Partitions == 0
	DefaultSegmentBytes      = 64 << 20
	DefaultRetention         = 24 * time.Hour
	DefaultRetentionInterval = time.Minute

	// MaxRecordBytes is the largest data size of a single record.
	MaxRecordBytes = 16 << 20

	minSegmentBytes = 512
)

// Options configure a Log.
type Options struct {
	Dir               string        // root dir; one sub-dir per partition ("p0", "p1", ...)
	Partitions        int           // fixed at creation (0 = DefaultPartitions); 0 on reopen = use persisted
	SegmentBytes      int64         // preallocated segment size (default 64 MiB)
	Retention         time.Duration // default 24h; sealed segments whose newest record is older are deleted
	MaxBytes          int64         // optional per-partition cap on used segment bytes (0 = none)
	RetentionInterval time.Duration // how often the retention sweep runs (default 1 minute)
	Logger            *slog.Logger  // nil = discard
	Now               func() time.Time
	NoSync            bool // benchmarks/tests only: skip fdatasync (appends are not durable)

	walFileBytes int64 // size of a WAL file; tests make it small to rotate often
}

// EnsureDefaults fills zero fields with defaults. Partitions is left alone:
// 0 means "use the persisted count" on reopen.
func (o *Options) EnsureDefaults() {
	if o.SegmentBytes == 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.RetentionInterval == 0 {
		o.RetentionInterval = DefaultRetentionInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.walFileBytes == 0 {
		o.walFileBytes = walFileBytes
	}
}

// validate checks options after EnsureDefaults.
func (o *Options) validate() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("directory is empty"))
	}
	if o.Partitions < 0 || o.Partitions > 1<<16 {
		errs = append(errs, fmt.Errorf("Partitions %d out of range", o.Partitions))
	}
	if o.SegmentBytes < minSegmentBytes || o.SegmentBytes > 1<<32-1 {
		errs = append(errs, fmt.Errorf("SegmentBytes %d out of range [%d, 4GiB)", o.SegmentBytes, minSegmentBytes))
	}
	if o.Retention < 0 {
		errs = append(errs, fmt.Errorf("negative Retention %v", o.Retention))
	}
	if o.RetentionInterval < 0 {
		errs = append(errs, fmt.Errorf("negative RetentionInterval %v", o.RetentionInterval))
	}
	if o.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("negative MaxBytes %d", o.MaxBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("telemetry options: %w", err)
	}
	return nil
}
