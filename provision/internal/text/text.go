// Package text holds the string helpers several provision packages need
// for their one-line errors.
package text

import "strings"

// OneLine folds s onto one line (runs of spaces and newlines become one
// space), so a multi-line message from Docker, a registry or kind stays
// inside kindlab's one-line errors.
func OneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
