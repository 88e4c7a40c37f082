// Package cli holds what every kindlab command shares: its streams, the
// --output flag, loading the lab catalog, and the exit codes.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kindlab/kindlab/provision/regular"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/bundle"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/state"
)

// Streams are a command's standard streams; tests hand in buffers.
type Streams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// StdStreams returns the process's streams.
func StdStreams() *Streams { return &Streams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr} }

// Exit codes, so scripts can tell a failed check from a usage error.
const (
	ExitOK          = 0
	ExitError       = 1 // the operation failed
	ExitUsage       = 2 // bad flags, arguments or lab file
	ExitCheckFailed = 3 // the lab is up but a feature check failed
	ExitNoDocker    = 4 // no container engine reachable
)

// ExitError carries an exit code through cobra's error return.
type ExitCodeError struct {
	Code int
	Err  error
}

func (e *ExitCodeError) Error() string { return e.Err.Error() }
func (e *ExitCodeError) Unwrap() error { return e.Err }

// WithCode attaches an exit code to an error.
func WithCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &ExitCodeError{Code: code, Err: err}
}

// Usagef is a usage error: exit code 2.
func Usagef(format string, args ...any) error {
	return WithCode(ExitUsage, fmt.Errorf(format, args...))
}

// CodeOf returns the exit code an error should end the process with.
func CodeOf(err error) int {
	if err == nil {
		return ExitOK
	}
	var ce *ExitCodeError
	if errors.As(err, &ce) {
		return ce.Code
	}
	var le *lab.Error
	var nf *lab.NotFound
	var ope *state.OtherProviderError
	if errors.As(err, &le) || errors.As(err, &nf) || errors.Is(err, state.ErrBadStateDir) || errors.Is(err, state.ErrBadStateFile) || errors.As(err, &ope) {
		return ExitUsage
	}
	return ExitError
}

// Execute runs cmd with args and returns the exit code; an error is one
// "ERROR: …" line on ErrOut, never a usage dump or a stack trace.
func Execute(ctx context.Context, cmd *cobra.Command, s *Streams, args []string) int {
	cmd.SetArgs(args)
	cmd.SetIn(s.In)
	cmd.SetOut(s.Out)
	cmd.SetErr(s.ErrOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	ctx, closeEngine := withEngineScope(ctx)
	err := cmd.ExecuteContext(ctx)
	closeEngine()
	// cobra reports a mistyped verb as a plain error; it is a usage error.
	if err != nil && strings.HasPrefix(err.Error(), "unknown command ") {
		err = WithCode(ExitUsage, err)
	}
	if err != nil {
		fmt.Fprintf(s.ErrOut, "ERROR: %s\n", TerminalSafe(err.Error()))
	}
	return CodeOf(err)
}

// TerminalSafe escapes what a terminal would act on in text for it (ESC,
// BEL, a carriage return, invisible format runes: names, paths and prose in
// it may come from a stranger's lab, kit or bundle) and keeps its newlines
// and tabs, which kindlab's and cobra's own messages use ("Did you mean
// this?\n\tstatus").
func TerminalSafe(msg string) string {
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		cells := strings.Split(l, "\t")
		for j, c := range cells {
			cells[j] = bundle.Printable(c)
		}
		lines[i] = strings.Join(cells, "\t")
	}
	return strings.Join(lines, "\n")
}

// Output is the --output flag shared by commands that print for scripts.
type Output struct {
	Format string
}

// AddFlag registers -o/--output with the formats a command supports; the
// first is the default.
func (o *Output) AddFlag(cmd *cobra.Command, formats ...string) {
	o.Format = formats[0]
	cmd.Flags().StringVarP(&o.Format, "output", "o", formats[0], fmt.Sprintf("output format: one of %v", formats))
	cmd.PreRunE = chain(cmd.PreRunE, func(*cobra.Command, []string) error {
		for _, f := range formats {
			if o.Format == f {
				return nil
			}
		}
		return Usagef("--output: %q is not a format (valid: %v)", o.Format, formats)
	})
}

// AddWaitLockFlag registers --wait-lock on a command that holds a
// cluster's lock (up, down, reset, bundle replay): how long to wait while
// another kindlab works on the same cluster. The default, 0, fails at once
// naming the other process, as kind and kubectl fail rather than queue.
func AddWaitLockFlag(cmd *cobra.Command, wait *time.Duration) {
	cmd.Flags().DurationVar(wait, "wait-lock", 0,
		"if another kindlab is working on the cluster (up, down, reset, bundle replay), wait up to this long for it, e.g. 10m (default: fail at once)")
	cmd.PreRunE = chain(cmd.PreRunE, func(*cobra.Command, []string) error {
		if *wait < 0 {
			return Usagef("--wait-lock: %s is not a time to wait (valid: 0 to fail at once, or a duration such as 30s or 10m)", *wait)
		}
		return nil
	})
}

// CheckOutputFile refuses, as a usage error, an output file (flag's value)
// that cannot be written where it is asked for: a directory, something that
// exists and is not a regular file (a symlink, a device such as /dev/null, a
// FIFO, a socket: the file is written beside it and renamed over it, which
// would replace the node itself), or a file in a directory that does not
// exist or that this process cannot write (access(2) W_OK|X_OK). Checked
// before any work is done; example is a file name to suggest, e.g. "kit.tar".
func CheckOutputFile(flag, file, example string) error {
	if st, err := os.Lstat(file); err == nil {
		switch m := st.Mode(); {
		case m.IsDir():
			return Usagef("%s %s: is a directory (valid: a file name, e.g. %s)", flag, file, filepath.Join(file, example))
		case !m.IsRegular():
			return Usagef("%s %s: is a %s, not a regular file (valid: a new file or a regular file to replace, e.g. %s)",
				flag, file, regular.Kind(m), filepath.Join(filepath.Dir(file), example))
		}
	}
	dir := filepath.Dir(file)
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return Usagef("%s %s: directory %s does not exist (valid: a file in an existing directory)", flag, file, dir)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return Usagef("%s %s: directory %s is not writable: %v (valid: a file in a directory you can write)", flag, file, dir, err)
	}
	return nil
}

// CheckPort refuses a port flag outside 1–65535 as a usage error.
func CheckPort(flag string, port int) error {
	if port < 1 || port > 65535 {
		return Usagef("%s %d: not a TCP port (valid: 1 to 65535)", flag, port)
	}
	return nil
}

// JSON reports whether the user asked for JSON.
func (o *Output) JSON() bool { return o.Format == "json" }

// PrintJSON writes v as indented JSON with a trailing newline.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func chain(a, b func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	if a == nil {
		return b
	}
	return func(c *cobra.Command, args []string) error {
		if err := a(c, args); err != nil {
			return err
		}
		return b(c, args)
	}
}

// LabFlags are how commands find labs: built-in ones, ./labs/*.yaml, and
// files named with --file.
type LabFlags struct {
	Files []string
	// cmd is the command the flags belong to: LabArg notes a shadowed
	// built-in lab on its standard error, once (noted).
	cmd   *cobra.Command
	noted bool
}

// AddFlags registers --file.
func (f *LabFlags) AddFlags(cmd *cobra.Command) {
	f.cmd = cmd
	cmd.Flags().StringArrayVarP(&f.Files, "file", "f", nil, "a lab file to add to the known labs (repeatable)")
}

// Catalog loads every lab this invocation knows.
func (f *LabFlags) Catalog() (*lab.Catalog, error) {
	c := lab.NewCatalog()
	// Disk labs first: they shadow built-in labs of the same name.
	for _, file := range f.Files {
		if _, err := c.AddFile(file); err != nil {
			return nil, err
		}
	}
	if err := c.AddDir("labs"); err != nil {
		return nil, err
	}
	if err := c.AddBuiltin(kindlab.Files, kindlab.LabsDir); err != nil {
		return nil, err
	}
	return c, nil
}

// LabArg resolves the lab a command names: an argument that is a file path
// (contains a slash or ends in .yaml) is added to the catalog first.
func (f *LabFlags) LabArg(arg string) (*lab.Catalog, string, error) {
	c, err := f.Catalog()
	if err != nil {
		return nil, "", err
	}
	if isPath(arg) {
		l, err := c.AddFile(arg)
		if err != nil {
			return nil, "", err
		}
		return c, l.Metadata.Name, nil
	}
	// A lab named by its name that a ./labs file shadows is said once, on
	// standard error: someone who meant the built-in lab (a workshop's
	// instructions) sees which file runs instead.
	if b, ok := c.Shadows(arg); ok && f.cmd != nil && !f.noted {
		if l, ok := c.Get(arg); ok {
			// The file's name is shown, not obeyed: a name with a terminal's
			// escape sequences must not hide or rewrite this line.
			fmt.Fprintf(f.cmd.ErrOrStderr(), "Lab %s is %s, which shadows the built-in lab of that name (%s)\n", bundle.Printable(arg), bundle.Printable(l.Origin.Display), b)
			f.noted = true
		}
	}
	return c, arg, nil
}

// LabArgs is LabArg for a command whose LAB argument is optional (it acts
// on a running cluster named by --name): with no argument, the catalog and
// "" (the lab is the one the cluster's record names, see running.Open).
func (f *LabFlags) LabArgs(args []string) (*lab.Catalog, string, error) {
	if len(args) == 1 {
		return f.LabArg(args[0])
	}
	c, err := f.Catalog()
	return c, "", err
}

func isPath(arg string) bool {
	for _, suffix := range []string{".yaml", ".yml"} {
		if len(arg) > len(suffix) && strings.HasSuffix(arg, suffix) {
			return true
		}
	}
	return strings.ContainsRune(arg, '/')
}
