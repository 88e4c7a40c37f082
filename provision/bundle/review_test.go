package bundle

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/provision/workload"
)

// Replay's confirmation lists what a lab really runs, read from its
// manifests: all-features' device plugin reaches the node through a
// hostPath, and the artifacts, images and gates are named.
func TestReviewListsWhatALabRuns(t *testing.T) {
	c := builtinCatalog(t)
	plan := planFor(t, c, "all-features", t.TempDir())
	r, err := ReviewPlan(plan)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(r.Lines(), "\n")
	t.Log(text)
	for _, want := range []string{
		fmt.Sprintf("lab all-features: %d kind node(s) from %s", len(plan.Resolved.Nodes), plan.NodeImage),
		"images its workloads run:",
		"agnhost",
		"artifacts pushed to the local registry:",
		"hostPath /var/lib/kubelet/device-plugins",
		"feature gates:",
		"ImageVolume=true",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("review lacks %q", want)
		}
	}
}

// Every way a pod spec reaches past its sandbox is listed, in any object
// that carries a pod template.
func TestReviewFindsPrivilegeInAnyPodTemplate(t *testing.T) {
	objs, err := workload.Decode([]byte(`apiVersion: batch/v1
kind: CronJob
metadata: {name: miner, namespace: x}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          hostPID: true
          hostNetwork: true
          volumes: [{name: root, hostPath: {path: /}}]
          initContainers: [{name: init, image: a, securityContext: {capabilities: {add: [SYS_ADMIN]}}}]
          containers: [{name: main, image: b, securityContext: {privileged: true}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	r := &Review{}
	reviewObject(r, objs[0])
	got := strings.Join(append(r.HostAccess, r.Privileged...), "\n")
	for _, want := range []string{
		"CronJob/x/miner: hostNetwork, hostPID, hostPath /",
		"CronJob/x/miner container init: adds [SYS_ADMIN]",
		"CronJob/x/miner container main: privileged",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("review lacks %q; got:\n%s", want, got)
		}
	}
}

// Found by the hostile review: a volume that is the node's root and a
// binding that opens the API to anyone were not in the review a user
// approves (only pod specs were read).
func TestReviewFindsHostVolumesAndBindings(t *testing.T) {
	objs, err := workload.Decode([]byte(`apiVersion: v1
kind: PersistentVolume
metadata: {name: hx-root}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: open}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:unauthenticated"}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := &Review{}
	for _, o := range objs {
		reviewObject(r, o)
	}
	got := strings.Join(r.Lines(), "\n")
	for _, want := range []string{
		"PersistentVolume//hx-root: hostPath / (any pod that claims it mounts it)",
		"ClusterRoleBinding//open: ClusterRole cluster-admin to Group system:unauthenticated",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("review lacks %q; got:\n%s", want, got)
		}
	}
}

// Found by the hostile review: names from the bundle reached the terminal
// raw, so escape sequences could redraw the lines the user approves.
func TestReviewEscapesControlCharacters(t *testing.T) {
	r := &Review{Lab: "x", Privileged: []string{"Pod/ns/\x1b[2K\x1b[1Aharmless container a: privileged"}}
	for _, l := range r.Lines() {
		if strings.ContainsAny(l, "\x1b\r") {
			t.Fatalf("a control character reaches the terminal: %q", l)
		}
	}
	if got := Printable("ok name"); got != "ok name" {
		t.Errorf("Printable changed a plain string: %q", got)
	}
}

// Found by the hostile review (session 12): a Job in kube-system running as
// the cluster's own job-controller account may create any pod at run time,
// and the review showed only its image. Pods running as an account the
// bundle does not define, objects in kube-system and admission webhooks are
// listed; an account the bundle defines, or default, is not.
func TestReviewFindsBorrowedAccountsSystemObjectsAndWebhooks(t *testing.T) {
	objs, err := workload.Decode([]byte(`apiVersion: batch/v1
kind: Job
metadata: {name: innocent, namespace: kube-system}
spec:
  template:
    spec:
      serviceAccountName: job-controller
      restartPolicy: Never
      containers: [{name: c, image: kubectl}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: mine}
---
apiVersion: v1
kind: Pod
metadata: {name: own}
spec:
  serviceAccountName: mine
  containers: [{name: c, image: a}]
---
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: x}
spec:
  serviceAccount: builder
  containers: [{name: c, image: a}]
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: x}
spec:
  serviceAccountName: default
  containers: [{name: c, image: a}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: everything}
webhooks: []
`))
	if err != nil {
		t.Fatal(err)
	}
	r := &Review{}
	for _, o := range objs {
		reviewObject(r, o)
	}
	r.finish()
	got := strings.Join(r.Lines(), "\n")
	for _, want := range []string{
		"pods running as a service account the bundle does not define (its rights are the cluster's):\n  Job/kube-system/innocent: kube-system/job-controller\n  Pod/x/old: x/builder\n",
		"objects in kube-system, the cluster's own namespace:\n  Job/kube-system/innocent\n",
		"admission webhooks and policies (they see or change every object admitted after them):\n  MutatingWebhookConfiguration//everything",
	} {
		if !strings.Contains(got+"\n", want) {
			t.Errorf("review lacks %q; got:\n%s", want, got)
		}
	}
	if strings.Contains(got, "mine") || strings.Contains(got, "x/default") {
		t.Errorf("review lists an account the bundle defines or default:\n%s", got)
	}
}
