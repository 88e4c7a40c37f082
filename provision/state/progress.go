package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Limits of a cluster's progress file, for the writer (the holder) and
// for a reader that does not trust it (the console).
const (
	// MaxProgressBytes is how much a holder writes into its progress file
	// at most: a runaway operation cannot fill the disk through it.
	MaxProgressBytes = 4 << 20
	// ProgressReadChunk is how much ReadProgress reads per call at most.
	ProgressReadChunk = 64 << 10
	// ProgressLineRunes is the longest line ReadProgress returns; a
	// longer one is cut, with "…".
	ProgressLineRunes = 300
	// ProgressLinesPerRead is how many lines one ReadProgress returns at
	// most: the last ones, after a line saying how many were left out.
	ProgressLinesPerRead = 100
)

// ProgressFile is where the holder of a cluster's lock writes its progress
// lines as it prints them, <root>/locks/<cluster>.progress, beside
// LockFile. Taking the lock starts it afresh; it keeps the last holder's
// lines after that one ends. Only the holder writes it.
func (s Store) ProgressFile(cluster string) string {
	return filepath.Join(s.Root, "locks", cluster+".progress")
}

// progressFile is the holder's side of its progress file. Every write is
// best effort: after the first error (a full disk, the file deleted) or
// MaxProgressBytes, it writes nothing more, and never reports it.
type progressFile struct {
	mu      sync.Mutex
	f       *os.File
	written int64
}

// openProgress starts a cluster's progress file afresh for its new holder:
// whatever is at the path goes (a symbolic link or anything else someone
// left there is removed, not followed), and a new regular file is created
// in its place. A progress file that cannot be made is no progress file,
// never an error: nothing depends on it.
func openProgress(file string) *progressFile {
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return &progressFile{}
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
	if err != nil {
		return &progressFile{}
	}
	return &progressFile{f: f}
}

func (p *progressFile) write(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		return
	}
	if p.written+int64(len(b)) > MaxProgressBytes {
		p.stop()
		return
	}
	n, err := p.f.Write(b)
	p.written += int64(n)
	if err != nil {
		p.stop()
	}
}

func (p *progressFile) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stop()
}

func (p *progressFile) stop() {
	if p.f != nil {
		_ = p.f.Close()
		p.f = nil
	}
}

// Tee returns a writer that writes to w (nil: nowhere) and, as it goes,
// into the cluster's progress file (ProgressFile), where `kindlab console`
// follows it. The file's side never fails and never blocks for long (one
// write(2) per Write, nothing after an error): what Write returns is w's.
// Tee of a writer the lock already tees is that writer; after Unlock the
// file's side writes nothing.
func (l *Lock) Tee(w io.Writer) io.Writer {
	if l == nil || l.progress == nil {
		if w == nil {
			return io.Discard
		}
		return w
	}
	if t, ok := w.(*teeWriter); ok && t.p == l.progress {
		return w
	}
	return &teeWriter{w: w, p: l.progress}
}

type teeWriter struct {
	w io.Writer
	p *progressFile
}

func (t *teeWriter) Write(b []byte) (int, error) {
	t.p.write(b)
	if t.w == nil {
		return len(b), nil
	}
	return t.w.Write(b)
}

// ReadProgress reads a progress file from byte offset from on, for a
// reader that does not trust it: it opens only a regular file (not a
// symbolic link, FIFO or device, which could block or be endless), reads at
// most ProgressReadChunk bytes, and returns the complete lines read (a
// last line without its newline waits for the next call, unless it alone
// fills the chunk), each made printable text (escape sequences and other
// control characters dropped, invalid UTF-8 replaced) and cut to
// ProgressLineRunes, at most ProgressLinesPerRead of them, with the offset
// to read from next. The rest of a line cut at a chunk's end is skipped,
// not returned as lines of its own. A file shorter than from was started
// afresh (a new holder): it is read from its start. A missing file is no
// lines and from.
func ReadProgress(file string, from int64) (lines []string, next int64, err error) {
	fi, err := os.Lstat(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, from, nil
	}
	if err != nil {
		return nil, from, err
	}
	if !fi.Mode().IsRegular() {
		return nil, from, fmt.Errorf("progress file %s: not a regular file (%s)", file, fi.Mode().Type())
	}
	f, err := os.OpenFile(file, os.O_RDONLY|openNoBlock, 0)
	if err != nil {
		return nil, from, err
	}
	defer f.Close()
	// The file opened must be the one looked at: not swapped meanwhile
	// for something that is not a regular file.
	if fi2, err := f.Stat(); err != nil || !os.SameFile(fi, fi2) || !fi2.Mode().IsRegular() {
		return nil, from, fmt.Errorf("progress file %s: changed while opened", file)
	}
	if size := fi.Size(); size < from {
		from = 0
	}
	// The byte before from tells whether from is in the middle of a line
	// (one cut at the last chunk's end), whose rest is skipped.
	at := max(from-1, 0)
	buf := make([]byte, ProgressReadChunk+1)
	n, err := f.ReadAt(buf, at)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, from, err
	}
	buf = buf[:n]
	if from == 0 {
		buf = buf[:min(n, ProgressReadChunk)]
	} else {
		if n == 0 {
			return nil, from, nil
		}
		midLine := buf[0] != '\n'
		buf = buf[1:]
		if midLine {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				// Still the same line: skipped, as far as read.
				if len(buf) == ProgressReadChunk {
					return nil, from + int64(len(buf)), nil
				}
				return nil, from, nil
			}
			from += int64(i + 1)
			buf = buf[i+1:]
		}
	}
	end := bytes.LastIndexByte(buf, '\n')
	switch {
	case end >= 0:
		buf = buf[:end+1]
	case len(buf) == ProgressReadChunk:
		// One line longer than a chunk: taken as it is, cut below.
	default:
		return nil, from, nil
	}
	next = from + int64(len(buf))
	skipped := 0
	for raw := range bytes.SplitSeq(bytes.TrimSuffix(buf, []byte("\n")), []byte("\n")) {
		line := CleanLine(string(raw))
		if line == "" {
			continue
		}
		if len(lines) == ProgressLinesPerRead {
			lines = lines[1:]
			skipped++
		}
		lines = append(lines, line)
	}
	if skipped > 0 {
		lines = append([]string{fmt.Sprintf("(%d more lines not shown)", skipped)}, lines...)
	}
	return lines, next, nil
}

// CleanLine makes one line of a terminal's output plain text: ANSI escape
// sequences (colours, cursor moves) and other control characters go,
// invalid UTF-8 becomes U+FFFD, trailing space goes, and a line longer than
// ProgressLineRunes is cut with "…".
func CleanLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	runes := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == 0x1b {
			i += escapeLen(s[i:])
			continue
		}
		i += size
		if r == '\t' {
			r = ' '
		}
		if unicode.IsControl(r) || r == utf8.RuneError && size == 1 {
			continue
		}
		if runes == ProgressLineRunes {
			return strings.TrimRight(b.String(), " ") + "…"
		}
		b.WriteRune(r)
		runes++
	}
	return strings.TrimRight(b.String(), " ")
}

// escapeLen is the length of the escape sequence s starts with (ESC [ …
// final byte, ESC ] … BEL or ESC \, or ESC and one byte).
func escapeLen(s string) int {
	if len(s) < 2 {
		return len(s)
	}
	switch s[1] {
	case '[':
		for i := 2; i < len(s); i++ {
			if s[i] >= 0x40 && s[i] <= 0x7e {
				return i + 1
			}
		}
		return len(s)
	case ']':
		for i := 2; i < len(s); i++ {
			if s[i] == 0x07 {
				return i + 1
			}
			if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
		}
		return len(s)
	}
	return 2
}
