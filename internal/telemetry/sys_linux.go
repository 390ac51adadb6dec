//go:build linux

package telemetry

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// fdatasync flushes file data and the metadata needed to read it back
// (cheaper than fsync: no mtime update).
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

// lockFile takes an exclusive advisory lock so two processes never write the
// same log; the kernel drops it when the process dies.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// startWriteback asks the kernel to start writing [off, off+n) of f to disk without waiting,
// so that a checkpoint's fdatasync finds little left to flush and does not hold the disk for
// long in front of the WAL's syncs. Errors are ignored: it is only a hint.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}
