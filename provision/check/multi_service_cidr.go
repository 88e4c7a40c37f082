package check

import (
	"context"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1beta1 "k8s.io/api/networking/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func init() {
	register(definition{
		name: "multi-service-cidr", feature: "Multiple Service CIDRs (MultiCIDRServiceAllocator, beta)", position: 70,
		// It fills the primary Service range (every other Service creation
		// fails meanwhile) and adds, then deletes, a second ServiceCIDR. No
		// other check creates a Service; two runs of this one collide.
		changes: []Resource{ServiceRange},
		run:     checkMultiServiceCIDR,
	})
}

const (
	cidrNamespace  = "kindlab-multi-service-cidr"
	secondCIDRName = "kindlab-second-range"
	// maxFill bounds how many Services the check creates to exhaust the
	// primary range; a larger range needs networking.serviceSubnet.
	maxFill = 1024
)

// secondCandidates are tried in order; the first that overlaps no existing
// ServiceCIDR becomes the second range. Small ranges: nothing but the
// check's own Services lands there before it is deleted.
var secondCandidates = []string{"10.97.0.0/28", "172.31.254.0/28", "192.168.254.0/28"}

// checkMultiServiceCIDR fills the first Service range until the apiserver
// refuses a Service, adds a second ServiceCIDR and proves the next Service
// gets an IP from it; everything it creates is deleted afterwards, the
// ServiceCIDR last.
func checkMultiServiceCIDR(ctx context.Context, c *run) (err error) {
	cs := c.client()
	cidrs := cs.NetworkingV1beta1().ServiceCIDRs()
	list, err := cidrs.List(ctx, metav1.ListOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("the apiserver does not serve networking.k8s.io/v1beta1 ServiceCIDRs: turn on the MultiCIDRServiceAllocator gate and runtime config networking.k8s.io/v1beta1")
		}
		return fmt.Errorf("list ServiceCIDRs: %w", err)
	}
	var primary netip.Prefix
	var existing []netip.Prefix
	for _, sc := range list.Items {
		for _, s := range sc.Spec.CIDRs {
			p, perr := netip.ParsePrefix(s)
			if perr != nil {
				continue
			}
			existing = append(existing, p)
			if sc.Name == "kubernetes" && p.Addr().Is4() {
				primary = p
			}
		}
	}
	if !primary.IsValid() {
		return fmt.Errorf("no default ServiceCIDR \"kubernetes\" with an IPv4 range: the apiserver's MultiCIDRServiceAllocator gate is off")
	}
	capacity := usable(primary)
	if capacity > maxFill {
		return fmt.Errorf("the primary Service range %s has %d addresses, too many to exhaust in a check: give the lab a small networking.serviceSubnet (the multi-service-cidr lab uses a /27)", primary, capacity)
	}
	var second netip.Prefix
	for _, s := range secondCandidates {
		p := netip.MustParsePrefix(s)
		if !overlapsAny(p, existing) {
			second = p
			break
		}
	}
	if !second.IsValid() {
		return fmt.Errorf("every candidate second range (%v) overlaps an existing ServiceCIDR", secondCandidates)
	}
	c.detail("primary range %s (%d usable addresses)", primary, capacity)
	// The second range of an earlier run is still being deleted (its
	// clean-up does not wait), or was left by a run that was killed.
	if err := awaitGone(ctx, c); err != nil {
		return err
	}

	var created []string
	defer func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		joinCleanup(&err, cleanupServiceCIDR(cctx, c, created))
	}()
	// 1.31 allocates from a random range that has room, so the first range
	// is filled before the second exists: then "range is full" proves the
	// exhaustion, and the next Service can only be served by the second.
	svcs := cs.CoreV1().Services(cidrNamespace)
	newService := func(i int) (*corev1.Service, error) {
		return svcs.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("kindlab-fill-%04d", i), Labels: map[string]string{"kindlab.dev/probe": "multi-service-cidr"}},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}, metav1.CreateOptions{})
	}
	var full error
	for i := 0; i <= capacity; i++ {
		svc, err := newService(i)
		if err != nil {
			full = err
			break
		}
		created = append(created, svc.Name)
		if ip, perr := netip.ParseAddr(svc.Spec.ClusterIP); perr != nil || !primary.Contains(ip) {
			return fmt.Errorf("Service %s got ClusterIP %q outside the only range %s", svc.Name, svc.Spec.ClusterIP, primary)
		}
	}
	if full == nil {
		return fmt.Errorf("created %d Services and %s never filled up", len(created), primary)
	}
	if !strings.Contains(full.Error(), "range is full") {
		return fmt.Errorf("filling %s: Service %d refused for another reason than a full range: %w", primary, len(created)+1, full)
	}
	c.detail("%d Services filled %s; the next was refused: %v", len(created), primary, full)

	if _, err := cidrs.Create(ctx, &networkingv1beta1.ServiceCIDR{
		ObjectMeta: metav1.ObjectMeta{Name: secondCIDRName, Labels: map[string]string{"kindlab.dev/probe": "multi-service-cidr"}},
		Spec:       networkingv1beta1.ServiceCIDRSpec{CIDRs: []string{second.String()}},
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ServiceCIDR %s: %w", secondCIDRName, err)
	}
	err = poll(ctx, 500*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		sc, err := cidrs.Get(ctx, secondCIDRName, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("get ServiceCIDR %s: %w", secondCIDRName, err)
		}
		for _, cond := range sc.Status.Conditions {
			if cond.Type == networkingv1beta1.ServiceCIDRConditionReady && cond.Status == metav1.ConditionTrue {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("ServiceCIDR %s is not Ready (the servicecidrs controller in kube-controller-manager sets it)", secondCIDRName), nil
	})
	if err != nil {
		return err
	}
	c.detail("added ServiceCIDR %s (%s): Ready", secondCIDRName, second)

	// The apiserver's allocator learns about the new range from its
	// informer a moment after the controller marks it Ready.
	var got netip.Addr
	err = poll(ctx, 500*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		svc, err := newService(len(created))
		if err != nil {
			return false, fmt.Sprintf("a Service after adding %s is still refused: %v", secondCIDRName, err), nil
		}
		created = append(created, svc.Name)
		got, err = netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil || !second.Contains(got) {
			return false, "", fmt.Errorf("Service %s got ClusterIP %q, not from the second range %s", svc.Name, svc.Spec.ClusterIP, second)
		}
		return true, "", nil
	})
	if err != nil {
		return err
	}
	c.detail("the next Service, %s, got %s from %s", created[len(created)-1], got, secondCIDRName)
	return nil
}

// cleanupServiceCIDR deletes the check's Services, then its ServiceCIDR.
// It does not wait for the ServiceCIDR to go: kube-controller-manager's
// servicecidrs controller keeps its finalizer for deletionGracePeriod (10 s,
// pkg/controller/servicecidrs/servicecidrs_controller.go) after its last
// address is released, so that every apiserver's allocator has seen the
// deletion; waiting made this the longest check by those 10 seconds. The
// next run waits for it instead (awaitGone).
func cleanupServiceCIDR(ctx context.Context, c *run, services []string) error {
	cs := c.client()
	for _, n := range services {
		if err := cs.CoreV1().Services(cidrNamespace).Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete Service %s: %w", n, err)
		}
	}
	err := cs.NetworkingV1beta1().ServiceCIDRs().Delete(ctx, secondCIDRName, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete ServiceCIDR %s: %w", secondCIDRName, err)
	}
	return nil
}

// awaitGone waits until no ServiceCIDR of the check's name exists, deleting
// one that is not being deleted already.
func awaitGone(ctx context.Context, c *run) error {
	cidrs := c.client().NetworkingV1beta1().ServiceCIDRs()
	sc, err := cidrs.Get(ctx, secondCIDRName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("get ServiceCIDR %s: %w", secondCIDRName, err)
	case sc.DeletionTimestamp == nil:
		if err := cidrs.Delete(ctx, secondCIDRName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete ServiceCIDR %s left by an earlier run: %w", secondCIDRName, err)
		}
	}
	start := time.Now()
	err = poll(ctx, 500*time.Millisecond, 50*time.Second, func(ctx context.Context) (bool, string, error) {
		_, err := cidrs.Get(ctx, secondCIDRName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		return false, fmt.Sprintf("ServiceCIDR %s of an earlier run is still being deleted (kube-controller-manager keeps it 10 s after its last address is released)", secondCIDRName), nil
	})
	if err == nil {
		c.detail("waited %s for ServiceCIDR %s of an earlier run to go", time.Since(start).Round(100*time.Millisecond), secondCIDRName)
	}
	return err
}

// usable counts the addresses a Service can get: IPv4 ranges lose their
// network and broadcast addresses.
func usable(p netip.Prefix) int {
	bits := p.Addr().BitLen() - p.Bits()
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits))
	if p.Addr().Is4() && bits > 1 {
		n.Sub(n, big.NewInt(2))
	}
	if !n.IsInt64() || n.Int64() > 1<<30 {
		return 1 << 30
	}
	return int(n.Int64())
}

func overlapsAny(p netip.Prefix, others []netip.Prefix) bool {
	for _, o := range others {
		if p.Overlaps(o) {
			return true
		}
	}
	return false
}
