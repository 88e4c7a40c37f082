// Package progress prints the step lines long commands show, the way
// kind's create does: " • Doing X" when a step starts, then " ✓ Doing X
// (1.2s)" or " ✗ …" when it ends.
package progress

import (
	"fmt"
	"io"
	"time"
)

// Status is one step at a time on W (nil W prints nothing).
type Status struct {
	W io.Writer
	// Label is the running step's line; a step may add to it before End.
	Label string
	began time.Time
}

// Start begins a step.
func (s *Status) Start(format string, args ...any) {
	s.Label = fmt.Sprintf(format, args...)
	s.began = time.Now()
	if s.W != nil {
		fmt.Fprintf(s.W, " • %s\n", s.Label)
	}
}

// End finishes the running step, with its duration.
func (s *Status) End(ok bool) {
	if s.W == nil {
		return
	}
	mark := "✓"
	if !ok {
		mark = "✗"
	}
	fmt.Fprintf(s.W, " %s %s (%s)\n", mark, s.Label, time.Since(s.began).Round(100*time.Millisecond))
}

// Fail is End(false).
func (s *Status) Fail() { s.End(false) }

// Done prints a step that needed no work.
func (s *Status) Done(format string, args ...any) {
	if s.W != nil {
		fmt.Fprintf(s.W, " ✓ %s\n", fmt.Sprintf(format, args...))
	}
}
