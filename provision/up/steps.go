package up

import (
	"context"
	"fmt"

	"k8s.io/client-go/kubernetes"

	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/render"
	"github.com/kindlab/kindlab/provision/workload"
)

func init() {
	steps = []step{registryStep, artifactsStep, workloadsStep}
}

// registryStep starts or reuses the shared registry and wires every node
// and the cluster (KEP-1755) to it.
func registryStep(ctx context.Context, h *cluster.Handle, plan *render.Plan, st *status, opts Options) error {
	if plan.Registry == nil {
		return nil
	}
	st.start("Wiring local registry 127.0.0.1:%d to the nodes 🗄", plan.Registry.HostPort)
	ns, err := h.KindNodes()
	if err != nil {
		st.fail()
		return err
	}
	cs, err := kubernetes.NewForConfig(h.RESTConfig)
	if err != nil {
		st.fail()
		return err
	}
	if _, err := registry.Up(ctx, registry.Options{HostPort: plan.Registry.HostPort, Image: opts.RegistryImage}, ns, cs); err != nil {
		st.fail()
		return err
	}
	st.end(true)
	return nil
}

// artifactsStep builds each artifact and pushes what the registry lacks.
func artifactsStep(ctx context.Context, _ *cluster.Handle, plan *render.Plan, st *status, _ Options) error {
	if len(plan.Resolved.Artifacts) == 0 {
		return nil
	}
	st.start("Pushing %d artifact(s) 📦", len(plan.Resolved.Artifacts))
	res, err := artifact.PushLab(ctx, plan.Resolved.Artifacts, plan.Registry.HostPort, nil)
	if err != nil {
		st.fail()
		return err
	}
	for _, r := range res {
		st.label += fmt.Sprintf("; %s %s (%d of %d layers sent)", r.Reference, r.Digest[:19], r.LayersPushed, r.Layers)
	}
	st.end(true)
	return nil
}

// workloadsStep applies every workload with server-side apply and waits
// until it is ready.
func workloadsStep(ctx context.Context, h *cluster.Handle, plan *render.Plan, st *status, _ Options) error {
	if len(plan.Resolved.Workloads) == 0 {
		return nil
	}
	st.start("Applying workloads 🚀")
	err := workload.ApplyLab(ctx, h.RESTConfig, plan.Resolved, workload.Options{Progress: func(msg string) {
		if st.w != nil {
			fmt.Fprintf(st.w, "   %s\n", msg)
		}
	}})
	if err != nil {
		st.fail()
		return err
	}
	st.end(true)
	return nil
}
