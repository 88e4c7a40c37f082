// Package app is the kindlab command tree: one package per verb, as kind does.
package app

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/artifact"
	"github.com/kindlab/kindlab/cmd/kindlab/app/bundle"
	"github.com/kindlab/kindlab/cmd/kindlab/app/check"
	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/cmd/kindlab/app/conformance"
	"github.com/kindlab/kindlab/cmd/kindlab/app/console"
	crishimcmd "github.com/kindlab/kindlab/cmd/kindlab/app/crishim"
	"github.com/kindlab/kindlab/cmd/kindlab/app/doctor"
	"github.com/kindlab/kindlab/cmd/kindlab/app/down"
	"github.com/kindlab/kindlab/cmd/kindlab/app/instructions"
	"github.com/kindlab/kindlab/cmd/kindlab/app/kit"
	"github.com/kindlab/kindlab/cmd/kindlab/app/labs"
	"github.com/kindlab/kindlab/cmd/kindlab/app/migrate"
	"github.com/kindlab/kindlab/cmd/kindlab/app/registry"
	"github.com/kindlab/kindlab/cmd/kindlab/app/render"
	"github.com/kindlab/kindlab/cmd/kindlab/app/reset"
	"github.com/kindlab/kindlab/cmd/kindlab/app/status"
	"github.com/kindlab/kindlab/cmd/kindlab/app/up"
	"github.com/kindlab/kindlab/cmd/kindlab/app/validate"
	"github.com/kindlab/kindlab/cmd/kindlab/app/version"
	"github.com/kindlab/kindlab/provision/engine"
)

// Version is set at build time with -ldflags "-X github.com/kindlab/kindlab/cmd/kindlab/app.Version=…".
var Version = "dev"

// NewRootCommand returns the kindlab command with every verb.
func NewRootCommand(s *cli.Streams) *cobra.Command {
	root := &cobra.Command{
		Use:   "kindlab",
		Short: "Kubernetes 1.31 feature labs on kind: cluster, registry, artifacts, workloads and checks from one file",
		Long: "kindlab turns a declarative lab file into a running local multi-node Kubernetes 1.31 cluster (kind)\n" +
			"with the 1.31 feature gates on, a local OCI registry wired to the nodes, OCI artifacts pushed into\n" +
			"it, an example workload for each feature, and checks that prove each feature works.\n\n" +
			"Start with: kindlab labs; kindlab render all-features; kindlab up all-features",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.ErrOut)
	root.AddCommand(
		labs.NewCommand(s),
		validate.NewCommand(s),
		render.NewCommand(s),
		up.NewCommand(s),
		down.NewCommand(s),
		status.NewCommand(s),
		check.NewCommand(s),
		instructions.NewCommand(s),
		conformance.NewCommand(s),
		reset.NewCommand(s),
		console.NewCommand(s),
		artifact.NewCommand(s),
		registry.NewCommand(s),
		migrate.NewCommand(s),
		doctor.NewCommand(s),
		bundle.NewCommand(s, Version),
		kit.NewCommand(s),
		crishimcmd.NewCommand(s),
		version.NewCommand(s, Version),
	)
	// --provider (kind's KIND_EXPERIMENTAL_PROVIDER as a flag, which wins
	// over the variable) chooses the engine for the whole command. A bad
	// flag value is refused by every verb; a bad variable by every verb
	// that reaches a container engine, before it does anything (the
	// file-only verbs do not need one; doctor reports it as a finding).
	var provider string
	root.PersistentFlags().StringVar(&provider, "provider", "",
		"node provider and container engine: docker or podman (default: $"+engine.ProviderEnv+", else docker)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if cmd.Flags().Changed("provider") {
			if provider == "" {
				return cli.Usagef("%s: empty (valid: %s)", engine.ProviderFlag, strings.Join(engine.Providers, ", "))
			}
			if _, err := engine.ChooseProvider(provider); err != nil {
				return cli.WithCode(cli.ExitUsage, err)
			}
			cli.SetProvider(cmd.Context(), provider)
		}
		for c := cmd; c != nil; c = c.Parent() {
			switch c.Name() {
			case "labs", "validate", "render", "migrate", "doctor", "help", "completion", "version":
				return nil
			}
		}
		if _, err := engine.ChooseProvider(provider); err != nil {
			return cli.WithCode(cli.ExitUsage, err)
		}
		return nil
	}
	// Flag and argument errors are usage errors: exit 2, as kubectl does.
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return cli.Usagef("%s: %v (see '%s --help')", c.CommandPath(), err, c.CommandPath())
	})
	wrapArgs(root)
	return root
}

func wrapArgs(c *cobra.Command) {
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return cli.Usagef("%s: %v (usage: %s)", cmd.CommandPath(), err, cmd.UseLine())
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
}

// Run executes the command line and returns the exit code; errors are one
// line on stderr, never a stack trace.
func Run(ctx context.Context, s *cli.Streams, args []string) int {
	return cli.Execute(ctx, NewRootCommand(s), s, args)
}

// Main runs kindlab with the process's streams. The first Ctrl-C (SIGINT)
// or SIGTERM cancels the context so waits stop and cleanup runs; it also
// restores the default handling, so that a second one kills a process
// stuck where no context reaches (a blocking open or read), as a second
// Ctrl-C does to kubectl and kind.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	return Run(ctx, cli.StdStreams(), args)
}
