package check

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func init() {
	register(definition{
		name: "traffic-distribution", feature: "Service trafficDistribution PreferClose (beta)", position: 80,
		// It changes nothing; it needs ready endpoints in two zones, so the
		// Service's pods scheduled in each (a pending pod would stay off a
		// tainted node, and a zone may have one node).
		needs: []Resource{NodeTaints},
		run:   checkTrafficDistribution,
	})
}

const (
	tdNamespace = "kindlab-traffic-distribution"
	tdService   = "echo"
)

// checkTrafficDistribution proves the apiserver keeps trafficDistribution
// and that the EndpointSlice controller hints every endpoint to its own zone.
func checkTrafficDistribution(ctx context.Context, c *run) error {
	cs := c.client()
	svc, err := cs.CoreV1().Services(tdNamespace).Get(ctx, tdService, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("Service %s/%s not found (apply the traffic-distribution workload first)", tdNamespace, tdService)
	}
	if err != nil {
		return fmt.Errorf("get Service %s/%s: %w", tdNamespace, tdService, err)
	}
	if svc.Spec.TrafficDistribution == nil || *svc.Spec.TrafficDistribution != corev1.ServiceTrafficDistributionPreferClose {
		return fmt.Errorf("Service %s/%s has no trafficDistribution: PreferClose: the apiserver dropped the field (ServiceTrafficDistribution gate off)", tdNamespace, tdService)
	}
	c.detail("apiserver kept spec.trafficDistribution: PreferClose")
	if err := c.needNodes("endpoints exist once pods run on nodes in each zone"); err != nil {
		return err
	}
	var summary []string
	err = poll(ctx, 2*time.Second, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		slices, err := cs.DiscoveryV1().EndpointSlices(tdNamespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + tdService})
		if err != nil {
			return false, "", fmt.Errorf("list EndpointSlices: %w", err)
		}
		zones := map[string][]string{}
		summary = nil
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready == nil || !*e.Conditions.Ready || len(e.Addresses) == 0 {
					continue
				}
				if e.Zone == nil {
					return false, fmt.Sprintf("endpoint %s has no zone", e.Addresses[0]), nil
				}
				var hints []string
				if e.Hints != nil {
					for _, z := range e.Hints.ForZones {
						hints = append(hints, z.Name)
					}
				}
				if len(hints) != 1 || hints[0] != *e.Zone {
					return false, fmt.Sprintf("endpoint %s in zone %s has hints for zones %v, want [%s]", e.Addresses[0], *e.Zone, hints, *e.Zone), nil
				}
				zones[*e.Zone] = append(zones[*e.Zone], e.Addresses[0])
			}
		}
		if len(zones) < 2 {
			return false, fmt.Sprintf("ready endpoints in %d zone(s), want at least 2", len(zones)), nil
		}
		for z, addrs := range zones {
			summary = append(summary, fmt.Sprintf("%s: %s", z, strings.Join(addrs, ",")))
		}
		sort.Strings(summary)
		return true, "", nil
	})
	if err != nil {
		return err
	}
	c.detail("every ready endpoint is hinted to its own zone (%s)", strings.Join(summary, "; "))
	return nil
}
