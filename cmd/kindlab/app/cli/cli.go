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
	"strings"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab"
	"github.com/kindlab/kindlab/provision/lab"
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
	if errors.As(err, &le) || errors.As(err, &nf) {
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
	err := cmd.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintf(s.ErrOut, "ERROR: %v\n", err)
	}
	return CodeOf(err)
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
}

// AddFlags registers --file.
func (f *LabFlags) AddFlags(cmd *cobra.Command) {
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
	return c, arg, nil
}

func isPath(arg string) bool {
	for _, suffix := range []string{".yaml", ".yml"} {
		if len(arg) > len(suffix) && strings.HasSuffix(arg, suffix) {
			return true
		}
	}
	return strings.ContainsRune(arg, '/')
}
