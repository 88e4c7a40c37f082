package up

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"

	"github.com/kindlab/kindlab/provision/nodefiles"
	"github.com/kindlab/kindlab/provision/progress"
	"github.com/kindlab/kindlab/provision/render"
)

// deliverNodeFiles copies the plan's node files (and the CRI shim binary)
// into the cluster's node-files volume on the engine and returns the kind
// config to create from: plan.Config with every mount of a path under
// plan.NodeFilesDir pointing at the same path inside the volume's
// directory on the engine's host. plan.Config itself is left as rendered.
// Nothing to deliver: plan.Config, untouched.
//
// The same route for local and remote engines: a host path of this
// machine exists on a remote engine's host only by accident (Docker would
// make it an empty directory).
func deliverNodeFiles(ctx context.Context, api nodefiles.API, plan *render.Plan, st *progress.Status) (*v1alpha4.Cluster, error) {
	files, err := nodeFiles(plan)
	if err != nil || len(files) == 0 {
		return plan.Config, err
	}
	if len(plan.Config.Nodes) == 0 {
		return nil, fmt.Errorf("node files of %s: the kind config has no nodes", plan.ClusterName)
	}
	st.Start("Copying %d node file(s) into volume %s 📁", len(files), nodefiles.VolumeName(plan.ClusterName))
	// The node image fills the volume: the engine has it (kind needs it
	// next), so nothing is pulled.
	vol, err := nodefiles.Deliver(ctx, api, plan.ClusterName, plan.Config.Nodes[0].Image, files)
	if err != nil {
		st.Fail()
		return nil, err
	}
	st.End(true)
	cfg := plan.Config.DeepCopy()
	for i := range cfg.Nodes {
		for j := range cfg.Nodes[i].ExtraMounts {
			m := &cfg.Nodes[i].ExtraMounts[j]
			if rel, ok := under(plan.NodeFilesDir, m.HostPath); ok {
				m.HostPath = path.Join(vol.Mountpoint, rel)
			}
		}
	}
	return cfg, nil
}

// nodeFiles lists what goes into the volume, named by their paths
// relative to plan.NodeFilesDir (so the mounts keep their layout).
func nodeFiles(plan *render.Plan) ([]nodefiles.File, error) {
	var files []nodefiles.File
	for _, f := range plan.Files {
		rel, ok := under(plan.NodeFilesDir, f.HostPath)
		if !ok {
			return nil, fmt.Errorf("node file %s (from %s) is not under the cluster's directory %q", f.HostPath, f.Source, plan.NodeFilesDir)
		}
		files = append(files, nodefiles.File{Name: rel, Mode: 0o644, Content: []byte(f.Content)})
	}
	if c := plan.CRIShim; c != nil {
		rel, ok := under(plan.NodeFilesDir, c.HostBinary)
		if !ok {
			return nil, fmt.Errorf("CRI shim binary %s is not under the cluster's directory %q", c.HostBinary, plan.NodeFilesDir)
		}
		// A copy, so rebuilding or removing the kindlab that ran `up`
		// does not change what runs in the nodes.
		files = append(files, nodefiles.File{Name: rel, Mode: 0o755, Source: c.Binary})
	}
	return files, nil
}

// under returns p relative to dir, slash-separated, when p is dir or
// inside it.
func under(dir, p string) (string, bool) {
	if dir == "" {
		return "", false
	}
	rel, err := filepath.Rel(dir, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", false
	}
	return filepath.ToSlash(rel), true
}
