//go:build !linux

package mqtt

import "log/slog"

// poller is Linux-only (epoll); elsewhere connections never park.
type poller struct{}

func newPoller(*slog.Logger) *poller { return nil }

func (*poller) park(*conn) (bool, error) { return false, nil }

func (*poller) unpark(*conn) bool { return false }

func (*poller) count() int { return 0 }
