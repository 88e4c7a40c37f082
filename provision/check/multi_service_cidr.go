package check

import (
	"context"
	"fmt"
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
		// It adds, then deletes, a ServiceCIDR, which Services created
		// meanwhile may draw their ClusterIPs from. No other check creates
		// a Service; two runs of this one collide.
		changes: []Resource{ServiceRange},
		run:     checkMultiServiceCIDR,
	})
}

const (
	cidrNamespace = "kindlab-multi-service-cidr"
	// cidrProbe names the check's Service.
	cidrProbe = "kindlab-second-range-probe"
	// mismatchedNetwork is how kube-apiserver 1.31 refuses a ClusterIP
	// that no ServiceCIDR holds (pkg/registry/core/service/ipallocator
	// ErrMismatchedNetwork, in storage/alloc.go's "failed to allocate IP").
	mismatchedNetwork = "does not match the current range"
)

// secondCandidates are tried in order; the first that overlaps no existing
// ServiceCIDR becomes the second range, named by secondName. Small ranges:
// nothing but the check's own Services lands there before it is deleted.
// There are three so that a run right after another need not wait for the
// earlier run's range, which lingers for 10 s (cleanupServiceCIDR).
var secondCandidates = []string{"10.97.0.0/28", "172.31.254.0/28", "192.168.254.0/28"}

// secondName names the ServiceCIDR of secondCandidates[i].
func secondName(i int) string { return fmt.Sprintf("kindlab-second-range-%d", i+1) }

// checkMultiServiceCIDR proves what upstream's [Feature:ServiceCIDRs] e2e
// test does (k8s.io/kubernetes v1.31 test/e2e/network/service_cidrs.go: a
// Service given a ClusterIP from a ServiceCIDR added at run time): a
// Service asking for an address of a second range is refused while no
// ServiceCIDR holds it, and gets it once one does, with the IPAddress
// object that records it. Upstream then reaches the Service from a pod;
// `kindlab conformance` runs that test. Everything the check creates is
// deleted afterwards, the ServiceCIDR last. It used to fill the primary
// range first (the lab's instructions still do, by hand): some fifty
// Service creations and deletions that kept a 2-core lab's apiserver busy
// for seconds.
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
	for _, sc := range list.Items {
		for _, s := range sc.Spec.CIDRs {
			if p, perr := netip.ParsePrefix(s); perr == nil && sc.Name == "kubernetes" && p.Addr().Is4() {
				primary = p
			}
		}
	}
	if !primary.IsValid() {
		return fmt.Errorf("no default ServiceCIDR \"kubernetes\" with an IPv4 range: the apiserver's MultiCIDRServiceAllocator gate is off")
	}
	c.detail("primary range %s (ServiceCIDR kubernetes)", primary)
	secondCIDRName, second, err := pickSecond(ctx, c)
	if err != nil {
		return err
	}
	// An address inside the second range, as upstream's test asks for
	// 10.196.196.77 of 10.196.196.0/24.
	ip := second.Addr()
	for range 10 {
		ip = ip.Next()
	}

	defer func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		joinCleanup(&err, cleanupServiceCIDR(cctx, c, secondCIDRName))
	}()
	svcs := cs.CoreV1().Services(cidrNamespace)
	newService := func(ctx context.Context) (*corev1.Service, error) {
		return svcs.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: cidrProbe, Labels: map[string]string{probeLabel: "multi-service-cidr"}},
			Spec: corev1.ServiceSpec{
				ClusterIP: ip.String(),
				Ports:     []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}, metav1.CreateOptions{})
	}
	// A run killed before its cleanup left its Service.
	if err := svcs.Delete(ctx, cidrProbe, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete Service %s/%s left by an earlier run: %w", cidrNamespace, cidrProbe, err)
	}
	err = poll(ctx, 500*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		svc, err := newService(ctx)
		switch {
		case err == nil:
			return false, "", fmt.Errorf("Service %s got ClusterIP %s with no ServiceCIDR holding it: the apiserver does not keep Services to their ServiceCIDRs", svc.Name, svc.Spec.ClusterIP)
		case apierrors.IsAlreadyExists(err):
			// The earlier run's Service is still going.
			return false, fmt.Sprintf("Service %s/%s of an earlier run is still being deleted", cidrNamespace, cidrProbe), nil
		case apierrors.IsInvalid(err) && strings.Contains(err.Error(), mismatchedNetwork):
			c.detail("before a ServiceCIDR holds %s, a Service asking for %s is refused: %s", second, ip, err)
			return true, "", nil
		}
		return false, "", fmt.Errorf("a Service asking for ClusterIP %s, outside every ServiceCIDR, was refused for another reason than %q: %w", ip, mismatchedNetwork, err)
	})
	if err != nil {
		return err
	}

	if _, err := cidrs.Create(ctx, &networkingv1beta1.ServiceCIDR{
		ObjectMeta: metav1.ObjectMeta{Name: secondCIDRName, Labels: map[string]string{probeLabel: "multi-service-cidr"}},
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
	err = poll(ctx, 500*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		svc, err := newService(ctx)
		if err != nil {
			return false, fmt.Sprintf("a Service asking for %s after adding %s is still refused: %v", ip, secondCIDRName, err), nil
		}
		if svc.Spec.ClusterIP != ip.String() {
			return false, "", fmt.Errorf("Service %s asked for ClusterIP %s and got %q", svc.Name, ip, svc.Spec.ClusterIP)
		}
		return true, "", nil
	})
	if err != nil {
		return err
	}
	addr, err := cs.NetworkingV1beta1().IPAddresses().Get(ctx, ip.String(), metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the Service got %s but its IPAddress object: %w", ip, err)
	}
	if ref := addr.Spec.ParentRef; ref == nil || ref.Resource != "services" || ref.Namespace != cidrNamespace || ref.Name != cidrProbe {
		return fmt.Errorf("IPAddress %s names %+v as its parent, want services %s/%s", ip, addr.Spec.ParentRef, cidrNamespace, cidrProbe)
	}
	c.detail("Service %s got ClusterIP %s from %s; IPAddress %s names it", cidrProbe, ip, secondCIDRName, ip)
	return nil
}

// cleanupServiceCIDR deletes the check's Service, if there is one, then its
// ServiceCIDR (name). It does not wait for the ServiceCIDR to go: kube-controller-
// manager's servicecidrs controller keeps its finalizer for
// deletionGracePeriod (10 s, pkg/controller/servicecidrs/
// servicecidrs_controller.go) after its last address is released, so that
// every apiserver's allocator has seen the deletion; waiting made this the
// longest check by those 10 seconds. The next run picks another candidate
// range meanwhile (pickSecond).
func cleanupServiceCIDR(ctx context.Context, c *run, name string) error {
	cs := c.client()
	if err := cs.CoreV1().Services(cidrNamespace).Delete(ctx, cidrProbe, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete Service %s: %w", cidrProbe, err)
	}
	err := cs.NetworkingV1beta1().ServiceCIDRs().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete ServiceCIDR %s: %w", name, err)
	}
	return nil
}

// pickSecond returns the name and range of the second ServiceCIDR: the
// first of secondCandidates that overlaps no ServiceCIDR, the check's own
// earlier ones included. One of the check's own that is not being deleted
// was left by a run that was killed, and is deleted; while every candidate
// is held only by the check's own being deleted (three runs within 10 s),
// it waits for one to go. A candidate held by any other ServiceCIDR is out
// for good, and with all of them out it fails at once.
func pickSecond(ctx context.Context, c *run) (string, netip.Prefix, error) {
	cidrs := c.client().NetworkingV1beta1().ServiceCIDRs()
	start := time.Now()
	var name string
	var second netip.Prefix
	waited := false
	err := poll(ctx, 500*time.Millisecond, 50*time.Second, func(ctx context.Context) (bool, string, error) {
		list, err := cidrs.List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, "", fmt.Errorf("list ServiceCIDRs: %w", err)
		}
		var ours, others []netip.Prefix
		for _, sc := range list.Items {
			own := sc.Labels[probeLabel] == "multi-service-cidr"
			if own && sc.DeletionTimestamp == nil {
				if err := cidrs.Delete(ctx, sc.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					return false, "", fmt.Errorf("delete ServiceCIDR %s left by an earlier run: %w", sc.Name, err)
				}
				c.detail("deleted ServiceCIDR %s, left by an earlier run", sc.Name)
			}
			for _, s := range sc.Spec.CIDRs {
				p, perr := netip.ParsePrefix(s)
				if perr != nil {
					continue
				}
				if own {
					ours = append(ours, p)
				} else {
					others = append(others, p)
				}
			}
		}
		free := 0
		for i, s := range secondCandidates {
			p := netip.MustParsePrefix(s)
			if overlapsAny(p, others) {
				continue
			}
			free++
			if !overlapsAny(p, ours) {
				name, second = secondName(i), p
				return true, "", nil
			}
		}
		if free == 0 {
			return false, "", fmt.Errorf("every candidate second range (%v) overlaps an existing ServiceCIDR", secondCandidates)
		}
		waited = true
		return false, fmt.Sprintf("every candidate second range (%v) is held by a ServiceCIDR of an earlier run still being deleted (kube-controller-manager keeps one 10 s after its last address is released)", secondCandidates), nil
	})
	if err != nil {
		return "", netip.Prefix{}, err
	}
	if waited {
		c.detail("waited %s for a ServiceCIDR of an earlier run to go", time.Since(start).Round(100*time.Millisecond))
	}
	return name, second, nil
}

func overlapsAny(p netip.Prefix, others []netip.Prefix) bool {
	for _, o := range others {
		if p.Overlaps(o) {
			return true
		}
	}
	return false
}
