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

// ProgressLine is one finished check as progress output shows it, e.g.
// "✓ nftables pass (2.1s)" or "✗ nftables fail (2.1s): <reason>".
func ProgressLine(r Result) string {
	mark := "-"
	switch r.Status {
	case Pass:
		mark = "✓"
	case Fail:
		mark = "✗"
	}
	line := fmt.Sprintf("%s %s %s (%s)", mark, r.Name, r.Status, r.Duration.Round(100*time.Millisecond))
	if r.Status == Fail {
		line += ": " + firstLine(r.Reason)
	}
	return line
}

// ProgressTo returns an Env.Progress that writes each result's
// ProgressLine, indented like a step's detail lines, to w; nil for a nil w.
func ProgressTo(w io.Writer) func(Result) {
	if w == nil {
		return nil
	}
	return func(r Result) { fmt.Fprintf(w, "   %s\n", ProgressLine(r)) }
}

// Summary compares a run's wall time with the sum of its checks' times, e.g.
// "11 checks in 11.0s (22.8s of checks, up to 4 at a time)".
func Summary(results []Result, wall time.Duration, parallelism int) string {
	if parallelism <= 0 {
		parallelism = DefaultParallelism
	}
	var sum time.Duration
	for _, r := range results {
		sum += r.Duration
	}
	return fmt.Sprintf("%s in %s (%s of checks, up to %d at a time)", Count(len(results)),
		wall.Round(100*time.Millisecond), sum.Round(100*time.Millisecond), parallelism)
}

// Count is "1 check" or "N checks".
func Count(n int) string {
	if n == 1 {
		return "1 check"
	}
	return fmt.Sprintf("%d checks", n)
}
