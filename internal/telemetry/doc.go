// Package telemetry is Tether's durable, partitioned, append-only segment log:
// the storage behind the hub's built-in "events" endpoint (architecture
// decision 3).
//
// # Layout
//
// A log lives in Options.Dir:
//
//	meta.json                       partition count (fixed at creation) and format version
//	LOCK                            flock'ed while a process has the log open
//	wal-00000000000000000007.log    write-ahead log, named by epoch: the current
//	wal-00000000000000000008.log    file and the next one (recycled)
//	p0/00000000000000000000.seg     segments of partition 0, named by the
//	p0/00000000000000001234.seg     sequence number of their first record
//
// # Records
//
// Every record is a frame of a 32-byte little-endian header followed by the
// data:
//
//	0  uint32 frame length (header + data); 0 marks the end of written data
//	4  uint32 CRC-32C (Castagnoli) over bytes 0..3 and 8..end (header + data)
//	8  int64  sequence number
//	16 int64  record time, Unix nanoseconds
//	24 uint8  format version (1)
//	25 uint8  flags: bit 0 first record of a batch, bit 1 last record of a batch
//	26 6 bytes reserved, zero
//
// The records of one Submit form a batch written contiguously; recovery only
// accepts complete batches, so a batch is visible entirely or not at all.
//
// # Writing
//
// One committer goroutine, fed by a bounded queue, writes every partition. It
// takes everything pending (group commit), encodes each partition's part into
// one buffer and writes it with one pwrite into that partition's active
// segment, without syncing; the same bytes go, as one record for the whole
// group, into the write-ahead log (wal.go), and one fdatasync of the WAL makes
// the group durable. Then it publishes each partition's new durable end to
// readers and releases all waiters. A device fdatasync costs tens of
// microseconds of CPU and a device cache flush whatever its size, so the
// number of syncs per second, not bytes, is what a group commit saves; one
// sync for all partitions instead of one per partition is what keeps many
// partitions cheap on one disk.
//
// WAL files are zero-filled once and then recycled, so appending to them
// changes no metadata and fdatasync only flushes data. When one is full the
// committer continues in the next and a background checkpoint fdatasyncs the
// segment files written meanwhile, after which the full file is recycled.
// Segments are sparse files synced only by checkpoints. A batch that does not
// fit in the active segment rolls to a new one; a batch larger than
// Options.SegmentBytes gets a segment sized to hold it. Sealed segments are
// truncated to their used size.
//
// # Recovery
//
// On Open, the records of every WAL file are first replayed into the segment
// files (only bytes that differ are written, then synced): acknowledged groups
// whose segment pages a power loss dropped come back. A torn or corrupt WAL
// record, or one of another epoch (a recycled file's old content), ends its
// file; such a group was never acknowledged. Then every segment is scanned
// once to rebuild the in-memory index (sequential read of the whole retained
// log: roughly the disk's sequential read speed, e.g. about 1 s per GB). The
// last (active) segment is validated frame by frame (length, CRC, sequence
// continuity, batch flags); everything from the first torn or corrupt record
// or incomplete batch on is zeroed and synced, so that stale bytes of a torn
// write can never be mistaken for records later (this reads the rest of the
// active segment once: at most SegmentBytes per partition per Open). A write
// or fdatasync error makes the partition (for the WAL: every partition)
// refuse further appends until reopened, because the state of unsynced pages
// is unknown after a failed fdatasync. Close checkpoints everything and marks
// the WAL replayed, so a clean restart replays nothing.
//
// # Throughput
//
// Durable throughput is bound by fdatasyncs per second times records per
// group commit. Closed-loop appenders (each waits before its next append) put
// at most one record per appender into a group; callers that keep several
// Submits in flight (Submit now, Wait later) get much larger groups.
//
// # Index
//
// Per segment the log keeps a sparse in-memory index with one entry (sequence,
// time, offset) about every 16 KiB of frames, about 0.15% of the data size.
// Read and SeekTime binary-search segments and then the index, and read at
// most one index interval of frames that they do not return.
//
// # Retention
//
// A background loop (and EnforceRetention) deletes whole sealed segments from
// the oldest on, when their newest record is older than now-Retention or when
// the partition holds more than MaxBytes. The active segment is never
// deleted, so sequence numbers are never reused. Readers copy data out of the
// files; a segment deleted while being read stays readable through the open
// file descriptor.
package telemetry
