package check

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func init() {
	register(definition{
		name: "pv-last-transition-time", feature: "PersistentVolume lastPhaseTransitionTime (GA)", position: 30,
		// Nothing shared: it reads the workload's own volume and claim, which
		// are pre-bound to each other (spec.volumeName) in their own storage
		// class, so the PV controller cannot bind them to another check's
		// probe volume (pv-reclaim-policy's has its own class and claim).
		run: checkPVLastTransitionTime,
	})
}

const (
	lttVolume    = "kindlab-pv-last-transition-time"
	lttNamespace = "kindlab-pv-last-transition-time"
	lttClaim     = "data"
)

// checkPVLastTransitionTime reads the workload volume's phase transition
// timestamp and reports how long it took from creation (phase Pending) to
// Bound.
func checkPVLastTransitionTime(ctx context.Context, c *run) error {
	cs := c.client()
	var pv *corev1.PersistentVolume
	// The PV controller binds the volume first and the claim right after.
	err := poll(ctx, 500*time.Millisecond, 60*time.Second, func(ctx context.Context) (bool, string, error) {
		var err error
		pv, err = cs.CoreV1().PersistentVolumes().Get(ctx, lttVolume, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "", fmt.Errorf("PersistentVolume %s not found (apply the pv-last-transition-time workload first)", lttVolume)
		}
		if err != nil {
			return false, "", fmt.Errorf("get PersistentVolume %s: %w", lttVolume, err)
		}
		if pv.Status.Phase != corev1.VolumeBound {
			return false, fmt.Sprintf("PersistentVolume %s is %s, not Bound (the PV controller in kube-controller-manager binds it)", lttVolume, pv.Status.Phase), nil
		}
		claim, err := cs.CoreV1().PersistentVolumeClaims(lttNamespace).Get(ctx, lttClaim, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("get PersistentVolumeClaim %s/%s: %w", lttNamespace, lttClaim, err)
		}
		return claim.Status.Phase == corev1.ClaimBound && claim.Spec.VolumeName == pv.Name,
			fmt.Sprintf("claim %s/%s is %s on volume %q, want Bound on %s", lttNamespace, lttClaim, claim.Status.Phase, claim.Spec.VolumeName, pv.Name), nil
	})
	if err != nil {
		return err
	}
	ltt := pv.Status.LastPhaseTransitionTime
	if ltt == nil {
		return fmt.Errorf("PersistentVolume %s is Bound but has no status.lastPhaseTransitionTime", pv.Name)
	}
	if ltt.Before(&pv.CreationTimestamp) {
		return fmt.Errorf("status.lastPhaseTransitionTime %s is before the volume's creation %s", ltt.UTC().Format(time.RFC3339), pv.CreationTimestamp.UTC().Format(time.RFC3339))
	}
	c.detail("PersistentVolume %s Bound to %s/%s", pv.Name, lttNamespace, lttClaim)
	c.detail("Pending→Bound took %s (created %s, lastPhaseTransitionTime %s; timestamps have 1s resolution)",
		ltt.Sub(pv.CreationTimestamp.Time), pv.CreationTimestamp.UTC().Format(time.RFC3339), ltt.UTC().Format(time.RFC3339))
	return nil
}
