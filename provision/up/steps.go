package up

import (
	"context"
	"fmt"

	"k8s.io/client-go/kubernetes"

	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/engine"
	"github.com/kindlab/kindlab/provision/progress"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/workload"
)

func init() {
	steps = []step{criShimStep, registryStep, artifactsStep, workloadsStep}
}

// registryStep starts or reuses the shared registry and wires every node
// and the cluster (KEP-1755) to it.
func registryStep(ctx context.Context, h *cluster.Handle, plan *render.Plan, st *progress.Status, opts Options) error {
	if plan.Registry == nil {
		return nil
	}
	st.Start("Wiring local registry 127.0.0.1:%d to the nodes 🗄", plan.Registry.HostPort)
	ns, err := h.KindNodes()
	if err != nil {
		st.Fail()
		return err
	}
	cs, err := kubernetes.NewForConfig(h.RESTConfig)
	if err != nil {
		st.Fail()
		return err
	}
	var refs []string
	for _, im := range plan.Images {
		refs = append(refs, im.Reference)
	}
	ro := registry.Options{HostPort: plan.Registry.HostPort, Image: opts.RegistryImage, Docker: h.Engine().Client()}
	if _, err := registry.Up(ctx, ro, ns, cs, registry.MirrorHosts(refs)); err != nil {
		st.Fail()
		return err
	}
	st.End(true)
	return nil
}

// artifactsStep builds each artifact and pushes what the registry lacks.
func artifactsStep(ctx context.Context, h *cluster.Handle, plan *render.Plan, st *progress.Status, opts Options) error {
	if len(plan.Resolved.Artifacts) == 0 {
		return nil
	}
	st.Start("Pushing %d artifact(s) 📦", len(plan.Resolved.Artifacts))
	res, err := pushArtifacts(ctx, h.Engine(), plan, opts)
	if err != nil {
		st.Fail()
		return err
	}
	for _, r := range res {
		st.Label += fmt.Sprintf("; %s %s (%d of %d layers sent)", r.Reference, r.Digest[:19], r.LayersPushed, r.Layers)
	}
	st.End(true)
	return nil
}

// workloadsStep applies every workload with server-side apply and waits
// until it is ready.
func workloadsStep(ctx context.Context, h *cluster.Handle, plan *render.Plan, st *progress.Status, _ Options) error {
	if len(plan.Resolved.Workloads) == 0 {
		return nil
	}
	st.Start("Applying workloads 🚀")
	err := workload.ApplyLab(ctx, h.RESTConfig, plan.Resolved, workload.Options{Progress: func(msg string) {
		if st.W != nil {
			fmt.Fprintf(st.W, "   %s\n", msg)
		}
	}})
	if err != nil {
		st.Fail()
		return err
	}
	st.End(true)
	return nil
}

// pushArtifacts pushes over HTTP to the registry's port on this machine,
// or, when the engine is remote (its published ports are on its own
// loopback), writes them into the registry through the Engine API.
func pushArtifacts(ctx context.Context, e *engine.Engine, plan *render.Plan, opts Options) ([]artifact.LabResult, error) {
	if !e.Endpoint().Remote() {
		return artifact.PushLab(ctx, plan.Resolved.Artifacts, plan.Registry.HostPort, nil)
	}
	c := e.Client()
	return artifact.ImportLab(ctx, plan.Resolved.Artifacts,
		registry.Options{HostPort: plan.Registry.HostPort, Image: opts.RegistryImage, Docker: c}, c)
}
