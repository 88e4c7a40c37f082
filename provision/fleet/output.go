package fleet

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"

	"sigs.k8s.io/kind/pkg/log"
)

// lockedWriter interleaves the clusters' status lines whole: each line is
// written at once, prefixed with the cluster it is about.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	if l.w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}

func (l *lockedWriter) prefixed(name string) io.Writer {
	return &prefixWriter{parent: l, prefix: "[" + name + "]"}
}

type prefixWriter struct {
	parent *lockedWriter
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := strings.TrimRight(string(p.buf[:i]), " ")
		p.buf = p.buf[i+1:]
		if strings.TrimSpace(line) == "" {
			continue
		}
		if !strings.HasPrefix(line, " ") {
			line = " " + line
		}
		p.parent.printf("%s%s\n", p.prefix, line)
	}
}

// kindLogger sends kind's own progress lines ("Preparing nodes", …) to a
// cluster's prefixed status: kind's spinner would garble parallel output.
type kindLogger struct{ w io.Writer }

func newKindLogger(w io.Writer) log.Logger { return kindLogger{w: w} }

func (l kindLogger) Warn(m string)                    { fmt.Fprintf(l.w, "WARNING: %s\n", m) }
func (l kindLogger) Warnf(f string, a ...any)         { l.Warn(fmt.Sprintf(f, a...)) }
func (l kindLogger) Error(m string)                   { fmt.Fprintf(l.w, "ERROR: %s\n", m) }
func (l kindLogger) Errorf(f string, a ...any)        { l.Error(fmt.Sprintf(f, a...)) }
func (l kindLogger) V(level log.Level) log.InfoLogger { return kindInfo{w: l.w, on: level <= 0} }

type kindInfo struct {
	w  io.Writer
	on bool
}

func (i kindInfo) Info(m string) {
	if i.on {
		fmt.Fprintln(i.w, strings.TrimRight(m, "\n"))
	}
}
func (i kindInfo) Infof(f string, a ...any) { i.Info(fmt.Sprintf(f, a...)) }
func (i kindInfo) Enabled() bool            { return i.on }
