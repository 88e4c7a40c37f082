package artifact

import (
	"context"
	"fmt"

	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/registry"
)

// LabResult is one lab artifact pushed.
type LabResult struct {
	Name string `json:"name"`
	// Reference is what the lab names (and pods pull); PushedTo is where it
	// went from the host, which differs when the registry port was moved.
	Reference string `json:"reference"`
	Result
	PushedTo string `json:"pushedTo"`
}

// PushLab builds and pushes a lab's artifacts to the shared registry on
// 127.0.0.1:hostPort (0 means the default), in order. Each comes from its
// directory inside the lab's file system, so built-in labs embedded in the
// binary work the same as labs on disk. progress, if set, is called per
// artifact with the reference being pushed.
func PushLab(ctx context.Context, arts []lab.ResolvedArtifact, hostPort int, progress func(ref string, p Progress)) ([]LabResult, error) {
	var out []LabResult
	for _, a := range arts {
		fsys, err := a.Dir.Sub()
		if dir, ok := a.Dir.DiskPath(); ok {
			// On disk, symlinks must be checked against the real file system.
			fsys, err = OpenDir(dir)
		}
		if err != nil {
			return out, fmt.Errorf("artifact %s: source %s: %w", a.Name, a.Dir.Display, err)
		}
		img, err := Build(fsys, BuildOptions{ArtifactType: a.ArtifactType, Annotations: a.Annotations})
		if err != nil {
			return out, fmt.Errorf("artifact %s: source %s: %w", a.Name, a.Dir.Display, err)
		}
		to := registry.PushReference(a.Reference, hostPort)
		var opts PushOptions
		if progress != nil {
			opts.Progress = func(p Progress) { progress(to, p) }
		}
		res, err := Push(ctx, img, to, opts)
		if err != nil {
			return out, fmt.Errorf("artifact %s: %w", a.Name, err)
		}
		out = append(out, LabResult{Name: a.Name, Reference: a.Reference, Result: *res, PushedTo: to})
	}
	return out, nil
}
