package check

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
)

func init() {
	register(definition{
		name: "pv-reclaim-policy", feature: "Honor PV reclaim policy (HonorPVReclaimPolicy, beta)", position: 50,
		// It creates and deletes a cluster-scoped PersistentVolume (its own
		// storage class, a claim pre-bound to it, a random name) and makes
		// kube-controller-manager's hostPath deleter remove a directory on
		// the control-plane node. It schedules no pod.
		changes: []Resource{PersistentVolumes},
		run:     checkPVReclaimPolicy,
	})
}

const (
	reclaimNamespace = "kindlab-pv-reclaim-policy"
	// reclaimDir is where the probe volume's backing directory lives. The
	// in-tree hostPath deleter runs inside kube-controller-manager and only
	// deletes paths matching "/tmp/.+" (unanchored); kubeadm mounts the
	// flexvolume directory read-write from the control-plane node into
	// kube-controller-manager, so a directory under it is the one place the
	// deleter and a node shell both see.
	reclaimDir = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/kindlab/tmp"
	// inTreeFinalizer is what HonorPVReclaimPolicy adds to in-tree volumes
	// with the Delete policy.
	inTreeFinalizer = "kubernetes.io/pv-controller"
	// reclaimNudgeAfter is how long the check lets the PV controller
	// reclaim the volume by itself before each annotation update that has
	// it try again: without a conflict the reclaim takes well under a
	// second, even while a lab comes up.
	reclaimNudgeAfter = 3 * time.Second
	// reclaimNudgeAnnotation counts those updates on the probe volume.
	reclaimNudgeAnnotation = "kindlab.dev/reclaim-retry"
)

// checkPVReclaimPolicy deletes a bound Delete-policy volume before its claim
// and proves the reclaim still runs: the pv-controller finalizer holds the
// volume until the deleter has removed its storage.
func checkPVReclaimPolicy(ctx context.Context, c *run) (err error) {
	cs := c.client()
	name := "kindlab-reclaim-" + rand.String(5)
	dir := path.Join(reclaimDir, name)
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: map[string]string{probeLabel: "pv-reclaim-policy"},
			// The finalizer is only added to dynamically provisioned volumes;
			// this marks the probe as one the in-tree hostPath plugin made.
			Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": "kubernetes.io/host-path"},
		},
		Spec: corev1.PersistentVolumeSpec{
			StorageClassName:              "kindlab-reclaim",
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}},
		},
	}
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: reclaimNamespace},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &pv.Spec.StorageClassName,
			VolumeName:       name,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")}},
		},
	}
	var node string
	if c.env.Nodes != nil {
		if node, err = controlPlaneNode(ctx, c); err != nil {
			return err
		}
		if _, err := c.exec(ctx, node, "sh", "-c", fmt.Sprintf("mkdir -p %s && echo kindlab > %s/data", dir, dir)); err != nil {
			return fmt.Errorf("create the backing directory: %w", err)
		}
		c.detail("backing directory %s:%s created", node, dir)
	}
	defer func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if derr := cs.CoreV1().PersistentVolumeClaims(reclaimNamespace).Delete(cctx, name, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
			joinCleanup(&err, derr)
		}
		if derr := cs.CoreV1().PersistentVolumes().Delete(cctx, name, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
			joinCleanup(&err, derr)
		}
	}()
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create PersistentVolume %s: %w", name, err)
	}
	// The PV controller adds the finalizer in its first sync of the new
	// volume (syncVolume → updateVolumeMigrationAnnotationsAndFinalizers,
	// pkg/controller/volume/persistentvolume, v1.31), then marks it
	// Available. The claim is created only after both: created at once, its
	// binding's update of the volume races those two, and the loser's
	// conflict waits for the controller's periodic resync
	// (--pvclaimbinder-sync-period, 15 s), which made this check take 2 to
	// 16 s.
	var finalizers []string
	err = poll(ctx, 200*time.Millisecond, 20*time.Second, func(ctx context.Context) (bool, string, error) {
		cur, err := cs.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("get PersistentVolume %s: %w", name, err)
		}
		finalizers = cur.Finalizers
		if !slices.Contains(cur.Finalizers, inTreeFinalizer) {
			return false, fmt.Sprintf("PersistentVolume %s (Delete policy, provisioned by an in-tree plugin) has no %s finalizer (finalizers %v): HonorPVReclaimPolicy is off",
				name, inTreeFinalizer, cur.Finalizers), nil
		}
		return cur.Status.Phase == corev1.VolumeAvailable,
			fmt.Sprintf("PersistentVolume %s is %q, not Available (the PV controller in kube-controller-manager marks it)", name, cur.Status.Phase), nil
	})
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims(reclaimNamespace).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create PersistentVolumeClaim %s/%s: %w", reclaimNamespace, name, err)
	}
	err = poll(ctx, 200*time.Millisecond, 60*time.Second, func(ctx context.Context) (bool, string, error) {
		cur, err := cs.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("get PersistentVolume %s: %w", name, err)
		}
		finalizers = cur.Finalizers
		return cur.Status.Phase == corev1.VolumeBound && slices.Contains(cur.Finalizers, inTreeFinalizer),
			fmt.Sprintf("PersistentVolume %s is %s with finalizers %v, not Bound with %s (the PV controller in kube-controller-manager binds it)",
				name, cur.Status.Phase, cur.Finalizers, inTreeFinalizer), nil
	})
	if err != nil {
		return err
	}
	c.detail("PersistentVolume %s Bound with finalizers %v", name, finalizers)

	if err := cs.CoreV1().PersistentVolumes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete PersistentVolume %s: %w", name, err)
	}
	cur, err := cs.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("PersistentVolume %s vanished while its claim was bound: %w", name, err)
	}
	c.detail("deleted the PersistentVolume first: it stays (deletionTimestamp %s) while the claim is bound", cur.DeletionTimestamp.UTC().Format(time.RFC3339))
	if err := cs.CoreV1().PersistentVolumeClaims(reclaimNamespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete PersistentVolumeClaim %s/%s: %w", reclaimNamespace, name, err)
	}
	// The reclaim's last write (removing inTreeFinalizer, then marking
	// the volume Failed when that fails) races pv-protection's removal of
	// its own finalizer, which the Released phase sets off: the loser's
	// conflict fails the delete operation, and the PV controller only
	// retries it on the volume's next update event or its periodic resync
	// (--pvclaimbinder-sync-period, 15 s; seen as "Operation for
	// delete-… failed … the object has been modified" in
	// kube-controller-manager's log, and as 10 to 20 s checks while a lab
	// comes up). An annotation written after reclaimNudgeAfter is such an
	// update: it makes the controller retry what its resync would, and
	// proves nothing by itself, since only the controller removes the
	// finalizer that holds the volume.
	deleted := time.Now()
	var nudges int
	var lastNudge time.Time
	err = poll(ctx, 500*time.Millisecond, 90*time.Second, func(ctx context.Context) (bool, string, error) {
		cur, err := cs.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, "", err
		}
		if time.Since(deleted) >= reclaimNudgeAfter && time.Since(lastNudge) >= reclaimNudgeAfter {
			lastNudge = time.Now()
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"%d"}}}`, reclaimNudgeAnnotation, nudges+1)
			_, perr := cs.CoreV1().PersistentVolumes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "kindlab"})
			switch {
			case perr == nil:
				nudges++
			case apierrors.IsNotFound(perr):
				return true, "", nil
			default:
				return false, "", fmt.Errorf("annotate PersistentVolume %s so that its PV controller retries the reclaim: %w", name, perr)
			}
		}
		return false, fmt.Sprintf("PersistentVolume %s still exists (phase %s, finalizers %v)%s", name, cur.Status.Phase, cur.Finalizers, volumeEvents(ctx, c, name)), nil
	})
	if err != nil {
		return err
	}
	if nudges == 0 {
		c.detail("after the claim was deleted the Delete reclaim ran and the finalizer let the volume go")
	} else {
		c.detail("after the claim was deleted the Delete reclaim ran and the finalizer let the volume go (after %d annotation update(s) of the volume, which make the PV controller retry a reclaim it lost to a conflict without waiting for its 15 s resync)", nudges)
	}
	if err := c.needNodes("the backing directory is on the control-plane node"); err != nil {
		return err
	}
	out, err := c.exec(ctx, node, "sh", "-c", fmt.Sprintf("if test -e %s; then echo present; else echo gone; fi", dir))
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "gone" {
		return fmt.Errorf("the volume is deleted but its backing directory %s:%s is still there: the reclaim did not delete the storage", node, dir)
	}
	c.detail("backing directory %s:%s deleted by the reclaim", node, dir)
	return nil
}

// volumeEvents summarises the PV controller's warnings about a volume
// (VolumeFailedDelete says why a reclaim is stuck).
func volumeEvents(ctx context.Context, c *run, name string) string {
	evs, err := c.client().CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
	})
	if err != nil || len(evs.Items) == 0 {
		return ""
	}
	var parts []string
	for _, e := range evs.Items {
		parts = append(parts, e.Reason+": "+e.Message)
	}
	return "; events: " + strings.Join(parts, "; ")
}
