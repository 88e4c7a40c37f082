//go:build !linux

package testenv

import "syscall"

// Only Linux can tie a child's life to its parent; elsewhere Stop is the
// only cleanup.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func sweepStale() {}
