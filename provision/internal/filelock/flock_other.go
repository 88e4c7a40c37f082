//go:build !unix

package filelock

import "os"

// Elsewhere (Windows) kindlab takes no lock: kind's Docker provider is
// what runs there, and the state is a user's own.
func flock(*os.File) error   { return nil }
func funlock(*os.File) error { return nil }
