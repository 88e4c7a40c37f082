package check

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// AnyFailed reports whether a check failed; unsupported and skipped do not
// fail a run.
func AnyFailed(results []Result) bool { return Failed(results) > 0 }

// Failed counts failed checks.
func Failed(results []Result) int {
	n := 0
	for _, r := range results {
		if r.Status == Fail {
			n++
		}
	}
	return n
}

// PrintTable writes one row per check, then each check's steps and, for a
// check that did not pass, its reason.
func PrintTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tTIME\tFEATURE")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, strings.ToUpper(string(r.Status)), r.Duration.Round(100*time.Millisecond), r.Feature)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		if _, err := fmt.Fprintf(w, "\n%s: %s\n", r.Name, r.Status); err != nil {
			return err
		}
		for _, d := range r.Details {
			fmt.Fprintf(w, "  ✓ %s\n", d)
		}
		if r.Reason != "" {
			mark := "-"
			if r.Status == Fail {
				mark = "✗"
			}
			fmt.Fprintf(w, "  %s %s\n", mark, r.Reason)
		}
	}
	return nil
}
