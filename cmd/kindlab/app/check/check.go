// Package check is `kindlab check LAB`: run the lab's feature checks against
// its running cluster.
package check

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/check"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/running"
	"github.com/kindlab/kindlab/provision/state"
)

// NewCommand returns the check command.
func NewCommand(s *cli.Streams) *cobra.Command {
	var (
		labs     cli.LabFlags
		out      cli.Output
		name     string
		only     []string
		timeout  time.Duration
		parallel int
	)
	cmd := &cobra.Command{
		Use:   "check [LAB|FILE]",
		Short: "Prove each of a running lab's features works (one row per check)",
		Long: "Runs the lab's checks against its running cluster. Each check drives its feature and fails\n" +
			"if the feature is off or broken. \"unsupported\" means this host cannot support the feature\n" +
			"(e.g. no AppArmor in the kernel) and gives the component's own reason; it does not fail the run.\n\n" +
			"Without LAB, --name names the cluster and the lab is the one it came up with.\n\n" +
			"Exit codes: 0 all passed (or unsupported/skipped), 1 the run failed, 2 bad input (an unknown lab,\n" +
			"check or cluster, or a cluster whose lab lacks the checks asked), 3 a check failed, 4 no container\n" +
			"engine reachable.\n\n" +
			"Checks: " + strings.Join(check.Names(), ", "),
		Example: "  kindlab check all-features\n  kindlab check image-volume -o json\n  kindlab check all-features --only anonymous-auth,node-bound-token\n  kindlab check --name sandbox-1",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if parallel < 1 {
				return cli.Usagef("--parallel: %d, want 1 (one check at a time) or more", parallel)
			}
			c, labName, err := labs.LabArgs(args)
			if err != nil {
				return err
			}
			if labName == "" && name == "" {
				return cli.Usagef("name the lab (kindlab check LAB) or its cluster (--name)")
			}
			var r *lab.Resolved
			if labName != "" {
				// An unknown lab or check is bad input before any cluster is looked at.
				if r, err = c.Resolve(labName, lab.ResolveOptions{KnownChecks: check.Names()}); err != nil {
					return err
				}
				if err := checkOnly(r, only); err != nil {
					return err
				}
				if len(r.Checks) == 0 {
					fmt.Fprintf(s.ErrOut, "lab %s has no checks\n", r.Name)
					return noResults(s, out)
				}
				if name == "" {
					name = r.Name
				}
			}
			store, err := state.Default()
			if err != nil {
				return err
			}
			if r != nil {
				if err := checksOnCluster(store, name, r, only); err != nil {
					return err
				}
			}
			// Check with what the lab came up with: its images and registry
			// port. A cluster kindlab did not make (plain kind from `render
			// -o kind`) is checked with the lab's own. Without LAB, the lab
			// is the one the cluster's record names.
			l, err := running.Open(cmd.Context(), store, cli.ProviderFunc(cmd.Context()), running.Options{
				Cluster: name, Lab: labName, Catalog: c, AllowUnrecorded: true, AllowOtherLab: true,
			})
			if errors.Is(err, running.ErrNotRecorded) && labName == "" {
				return cli.Usagef("cluster %s: kindlab has no record of it, so the lab to check must be named (kindlab check LAB --name %s)", name, name)
			}
			// An unknown cluster is bad input, as the help says, whether
			// kindlab recorded it or not.
			if errors.Is(err, cluster.ErrNotRunning) {
				return cli.WithCode(cli.ExitUsage, err)
			}
			if err != nil {
				return err
			}
			if r == nil {
				r = l.Resolved()
				if err := checkOnly(r, only); err != nil {
					return err
				}
			}
			names := r.Checks
			if len(only) > 0 {
				names = only
			}
			if len(names) == 0 {
				fmt.Fprintf(s.ErrOut, "lab %s has no checks\n", r.Name)
				return noResults(s, out)
			}
			recorded := l.Record != nil
			env := l.CheckEnv()
			env.Timeout, env.Parallelism = timeout, parallel
			if !out.JSON() {
				fmt.Fprintf(s.ErrOut, "Checking lab %s on cluster %s (%s)…\n", r.Name, name, check.Count(len(names)))
				// Checks run concurrently; each line comes once every
				// earlier check is done, so they read in the lab's order.
				env.Progress = check.ProgressTo(s.ErrOut)
			}
			start := time.Now()
			results := check.Run(cmd.Context(), env, names)
			if !out.JSON() {
				fmt.Fprintln(s.ErrOut, check.Summary(results, time.Since(start), parallel))
			}
			if recorded {
				// The last results are what `kindlab bundle create` puts in a bug
				// report; the lab's state is unchanged either way, so a failed
				// write is only a warning.
				if err := saveChecks(store, name, results, len(only) > 0); err != nil {
					fmt.Fprintf(s.ErrOut, "warning: %v\n", err)
				}
			}
			if out.JSON() {
				if err := cli.PrintJSON(s.Out, results); err != nil {
					return err
				}
			} else if err := check.PrintTable(s.Out, results); err != nil {
				return err
			}
			if n := check.Failed(results); n > 0 {
				return cli.WithCode(cli.ExitCheckFailed, fmt.Errorf("%d of %d checks failed", n, len(results)))
			}
			return nil
		},
	}
	labs.AddFlags(cmd)
	out.AddFlag(cmd, "table", "json")
	cmd.Flags().StringVar(&name, "name", "", "cluster name (default: the lab's name)")
	cmd.Flags().StringSliceVar(&only, "only", nil, "run only these checks of the lab (comma-separated)")
	cmd.Flags().DurationVar(&timeout, "timeout", check.DefaultTimeout, "time limit of each check")
	cmd.Flags().IntVar(&parallel, "parallel", check.DefaultParallelism,
		"how many checks run at once (1: one after another); checks that touch the same cluster-wide state never overlap")
	return cmd
}

// checksOnCluster refuses, before any engine is looked for, to run lab r's
// checks (or the --only ones) on a cluster kindlab brought up with another
// lab that lacks one of them: that check would fail (exit 3) for want of
// r's workloads there, not because its feature is broken. A cluster whose
// lab has them all (all-features, for nftables's) is checked, and so is a
// cluster kindlab has no record of (plain kind from `render -o kind`);
// running.Open reports a record it cannot read.
func checksOnCluster(store state.Store, cluster string, r *lab.Resolved, only []string) error {
	rec, err := store.Load(cluster)
	if err != nil || rec.Lab == r.Name {
		return nil
	}
	asked := r.Checks
	if len(only) > 0 {
		asked = only
	}
	for _, c := range asked {
		if slices.Contains(rec.Checks, c) {
			continue
		}
		has := "no checks"
		if len(rec.Checks) > 0 {
			has = "checks: " + strings.Join(rec.Checks, ", ")
		}
		return cli.Usagef("--name: cluster %s runs lab %s (%s), which lacks lab %s's check %s and its workload (kindlab check --name %s checks its own lab)",
			cluster, rec.Lab, has, r.Name, c, cluster)
	}
	return nil
}

// checkOnly refuses an --only naming a check r does not have.
func checkOnly(r *lab.Resolved, only []string) error {
	for _, o := range only {
		if !slices.Contains(r.Checks, o) {
			return cli.Usagef("--only: lab %s has no check %q (its checks: %s)", r.Name, o, strings.Join(r.Checks, ", "))
		}
	}
	return nil
}

// saveChecks records results as the cluster's last check run. A partial run
// (--only) replaces only the checks it ran, so the record still covers
// every check of the lab.
func saveChecks(store state.Store, cluster string, results []check.Result, partial bool) error {
	if partial {
		prev, err := store.LoadChecks(cluster)
		var old []check.Result
		if err == nil {
			if err := json.Unmarshal(prev.Results, &old); err != nil {
				return fmt.Errorf("load check results of %s: %w", cluster, err)
			}
		} else if !errors.Is(err, state.ErrNotFound) {
			return err
		}
		merged := make([]check.Result, 0, len(old)+len(results))
		for _, o := range old {
			i := slices.IndexFunc(results, func(r check.Result) bool { return r.Name == o.Name })
			if i >= 0 {
				o = results[i]
			}
			merged = append(merged, o)
		}
		for _, r := range results {
			if !slices.ContainsFunc(old, func(o check.Result) bool { return o.Name == r.Name }) {
				merged = append(merged, r)
			}
		}
		results = merged
	}
	return store.SaveChecks(cluster, results)
}

// noResults is a run of no checks: nothing on standard output, or an empty
// list with -o json, which a script can read like any other run.
func noResults(s *cli.Streams, out cli.Output) error {
	if out.JSON() {
		return cli.PrintJSON(s.Out, []check.Result{})
	}
	return nil
}
