//go:build !linux

package telemetry

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

// lockFile is a no-op outside Linux.
func lockFile(*os.File) error { return nil }

// startWriteback is a no-op outside Linux: checkpoints flush everything.
func startWriteback(*os.File, int64, int64) {}
