// Package state records which clusters kindlab made and from what, so that
// status, check and down work without the lab file at hand, and the shared
// registry knows when its last user is gone.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/kindlab/kindlab/provision/internal/atomicfile"
	"github.com/kindlab/kindlab/provision/regular"
)

// Record is what kindlab remembers about one cluster.
type Record struct {
	Cluster   string `json:"cluster"`
	Lab       string `json:"lab"`
	LabSource string `json:"labSource"`
	NodeImage string `json:"nodeImage"`
	Context   string `json:"kubeconfigContext"`
	// Kubeconfig is the file the context was written to ("" = kind's default).
	Kubeconfig   string `json:"kubeconfig,omitempty"`
	Registry     bool   `json:"registry"`
	RegistryPort int    `json:"registryPort,omitempty"`
	// ImageOverrides are the --image-override pairs the lab came up with, so
	// `check` runs its pods from the same images.
	ImageOverrides map[string]string `json:"imageOverrides,omitempty"`
	Checks         []string          `json:"checks,omitempty"`
	CreatedAt      time.Time         `json:"createdAt"`
	// Fleet names the fleet (`kindlab up --count`) the cluster was made
	// in, so that status can group its clusters and `down --fleet` can find
	// them all without being told how many there were.
	Fleet string `json:"fleet,omitempty"`
	// Provider is the node provider the cluster runs on (engine.Provider:
	// "docker" or "podman"); "" in records written before kindlab drove
	// podman, which means docker.
	Provider string `json:"provider,omitempty"`
}

// OnProvider returns an *OtherProviderError when the record's cluster runs
// on another provider than using: a command driving the other engine would
// not find its nodes, and down would forget the lab and release the wrong
// engine's registry.
func (r Record) OnProvider(using string) error {
	rec := r.Provider
	if rec == "" {
		rec = "docker"
	}
	if using == "" {
		using = "docker"
	}
	if rec != using {
		return &OtherProviderError{Cluster: r.Cluster, Recorded: rec, Using: using}
	}
	return nil
}

// OtherProviderError is a command on a cluster whose record says it runs on
// another provider (Record.OnProvider). It is bad input: the command is
// right once given that provider.
type OtherProviderError struct{ Cluster, Recorded, Using string }

func (e *OtherProviderError) Error() string {
	return fmt.Sprintf("cluster %s runs on %s (kindlab up recorded it), not %s: run this with --provider %s (or KIND_EXPERIMENTAL_PROVIDER=%s); nothing was changed",
		e.Cluster, e.Recorded, e.Using, e.Recorded, e.Recorded)
}

// Store is the state directory.
type Store struct{ Root string }

// Default returns the store at $KINDLAB_STATE_DIR, $XDG_STATE_HOME/kindlab
// or ~/.local/state/kindlab.
func Default() (Store, error) {
	if d := os.Getenv("KINDLAB_STATE_DIR"); d != "" {
		return usable("KINDLAB_STATE_DIR="+d, d)
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return usable("XDG_STATE_HOME="+d, filepath.Join(d, "kindlab"))
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return Store{}, fmt.Errorf("find state directory: %w (set KINDLAB_STATE_DIR)", err)
	}
	return usable("the default", filepath.Join(home, ".local", "state", "kindlab"))
}

// ErrBadStateDir is wrapped by Default's refusal of a state directory that
// cannot be one, named by the setting it came from: bad input (exit 2).
var ErrBadStateDir = errors.New("not a usable state directory")

// usable refuses a state directory that exists as something else, or is a
// link to nothing: every verb would otherwise fail later on a path the
// user never sees. A directory that does not exist yet is fine (it is
// made when first written).
func usable(from, root string) (Store, error) {
	fi, err := os.Stat(root)
	switch {
	case err == nil && !fi.IsDir():
		return Store{}, fmt.Errorf("state directory (%s): %s is a file, %w: point it at a directory, or unset it", from, root, ErrBadStateDir)
	case errors.Is(err, fs.ErrNotExist):
		if target, lerr := os.Readlink(root); lerr == nil {
			return Store{}, fmt.Errorf("state directory (%s): %s is a link to %s, which does not exist, %w: point it at a directory", from, root, target, ErrBadStateDir)
		}
	case err != nil && !errors.Is(err, fs.ErrPermission):
		// e.g. a path through a file (ENOTDIR)
		return Store{}, fmt.Errorf("state directory (%s): %w, %w: point it at a directory", from, err, ErrBadStateDir)
	}
	return Store{Root: root}, nil
}

// ClusterDir is where a cluster's files live (mounted config files, the record).
func (s Store) ClusterDir(cluster string) string {
	return filepath.Join(s.Root, "clusters", cluster)
}

// LogDir is where kindlab keeps logs about a cluster that must outlive it,
// such as a node's CRI shim log when a failed up took the nodes away.
func (s Store) LogDir(cluster string) string {
	return filepath.Join(s.Root, "logs", cluster)
}

// Save writes a record atomically: concurrent readers (status, check, a
// bundle) see the previous record or this one, never a part, and
// concurrent savers do not collide (see atomicfile.WriteFile). Which save
// wins is the lock's business (Store.Lock), not Save's.
func (s Store) Save(r Record) error {
	dir := s.ClusterDir(r.Cluster)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save state of %s: %w", r.Cluster, err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("save state of %s: %w", r.Cluster, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, recordFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save state of %s: %w", r.Cluster, err)
	}
	return nil
}

const recordFile = "cluster.json"

// ErrNotFound is returned by Load for a cluster kindlab has no record of.
var ErrNotFound = errors.New("no kindlab record")

// ErrBadStateFile is wrapped by the error about a state file (a record,
// check results, a lock file, images.json) that is not what kindlab
// writes there: a symlink, FIFO, device or socket, a file over
// MaxStateFile, JSON that does not parse, a record of another cluster than
// its directory. It is bad input (exit 2); the error is a *BadFileError.
var ErrBadStateFile = errors.New("not a kindlab state file")

// MaxStateFile bounds every state file kindlab reads, in bytes. Records,
// check results and lock files are a few KiB.
const MaxStateFile = 1 << 20

// BadFileError is a state file that is not what kindlab writes there.
type BadFileError struct {
	// File is the state file.
	File string
	// Reason says what is wrong with it.
	Reason string
}

func (e *BadFileError) Error() string {
	return fmt.Sprintf("state file %s: %s (not as kindlab writes it: remove it)", e.File, e.Reason)
}

// Is makes errors.Is(err, ErrBadStateFile) true.
func (e *BadFileError) Is(target error) bool { return target == ErrBadStateFile }

// ReadFile reads a state file that kindlab wrote and anyone able to write
// the state directory may have replaced: not following a final symlink,
// not blocking on a FIFO, at most MaxStateFile bytes. A missing file is an
// error wrapping fs.ErrNotExist; anything but a regular file of at most
// MaxStateFile bytes is a *BadFileError.
func ReadFile(file string) ([]byte, error) {
	b, err := regular.ReadFile(file, MaxStateFile)
	var nr *regular.NotRegularError
	switch {
	case errors.As(err, &nr):
		return nil, &BadFileError{File: file, Reason: "is a " + nr.Kind + ", not a regular file"}
	case errors.Is(err, regular.ErrTooLarge):
		return nil, &BadFileError{File: file, Reason: fmt.Sprintf("larger than %d KiB", MaxStateFile>>10)}
	}
	return b, err
}

// Load reads a cluster's record: ErrNotFound if there is none, a
// *BadFileError if its file is not a record kindlab wrote (ReadFile's
// refusals, JSON that does not parse, or a record whose cluster is not its
// directory's name: acting on the cluster it names would let a planted
// record steer a verb to another cluster).
func (s Store) Load(cluster string) (Record, error) {
	var r Record
	file := filepath.Join(s.ClusterDir(cluster), recordFile)
	b, err := ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return r, fmt.Errorf("cluster %q: %w", cluster, ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("load state of %s: %w", cluster, err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("load state of %s: %w", cluster, &BadFileError{File: file, Reason: "not a kindlab record: " + err.Error()})
	}
	if r.Cluster != cluster {
		return Record{}, fmt.Errorf("load state of %s: %w", cluster, &BadFileError{File: file,
			Reason: fmt.Sprintf("records cluster %q, not %q (the name of its directory)", r.Cluster, cluster)})
	}
	return r, nil
}

// List returns every good record, sorted by cluster name, and the files
// of the records that are not: one bad record does not hide the others.
func (s Store) List() ([]Record, []*BadFileError, error) {
	entries, err := os.ReadDir(filepath.Join(s.Root, "clusters"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list state: %w", err)
	}
	var out []Record
	var bad []*BadFileError
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		r, err := s.Load(e.Name())
		var bf *BadFileError
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case errors.As(err, &bf):
			bad = append(bad, bf)
			continue
		case err != nil:
			return nil, nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out, bad, nil
}

// Remove forgets a cluster and deletes its files.
func (s Store) Remove(cluster string) error {
	if err := os.RemoveAll(s.ClusterDir(cluster)); err != nil {
		return fmt.Errorf("remove state of %s: %w", cluster, err)
	}
	return nil
}

// WriteFile writes a file under a cluster's directory (for mounted
// config), creating its directory, atomically as Save does.
func WriteFile(path, content string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, []byte(content), 0o644)
}

// Checks is a cluster's last check run, as `up` or `check` saved it. The
// results stay raw JSON so that this package does not depend on the checks
// that produce them.
type Checks struct {
	SavedAt time.Time       `json:"savedAt"`
	Results json.RawMessage `json:"results"`
}

const checksFile = "checks.json"

// SaveChecks records results (any JSON-encodable value) as the last check run
// of a cluster. Only clusters kindlab has a record of keep results: a
// foreign cluster must not get a state directory that down never removes.
func (s Store) SaveChecks(cluster string, results any) error {
	dir := s.ClusterDir(cluster)
	if _, err := os.Stat(filepath.Join(dir, recordFile)); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("save check results of %s: cluster %q: %w", cluster, cluster, ErrNotFound)
	}
	raw, err := json.Marshal(results)
	if err != nil {
		return fmt.Errorf("save check results of %s: %w", cluster, err)
	}
	b, err := json.MarshalIndent(Checks{SavedAt: time.Now().UTC(), Results: raw}, "", "  ")
	if err != nil {
		return fmt.Errorf("save check results of %s: %w", cluster, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, checksFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save check results of %s: %w", cluster, err)
	}
	return nil
}

// LoadChecks returns the last check run saved for a cluster; ErrNotFound
// when none was.
func (s Store) LoadChecks(cluster string) (Checks, error) {
	var c Checks
	file := filepath.Join(s.ClusterDir(cluster), checksFile)
	b, err := ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return c, fmt.Errorf("check results of cluster %q: %w", cluster, ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("load check results of %s: %w", cluster, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("load check results of %s: %w", cluster, &BadFileError{File: file, Reason: "not kindlab check results: " + err.Error()})
	}
	return c, nil
}
