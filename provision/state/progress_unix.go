//go:build unix

package state

import "golang.org/x/sys/unix"

// openNoBlock keeps an open(2) from waiting on a FIFO swapped in for a
// progress file after it was looked at.
const openNoBlock = unix.O_NONBLOCK | unix.O_NOFOLLOW
