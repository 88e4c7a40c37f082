package check

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func init() {
	register(definition{
		name: "apparmor", feature: "AppArmor profiles in securityContext (GA)", position: 10,
		// It changes nothing; it waits for the workload's pod to run, and a
		// pod still pending would stay off a tainted node.
		needs: []Resource{NodeTaints},
		run:   checkAppArmor,
	})
}

const (
	apparmorNamespace = "kindlab-apparmor"
	apparmorPod       = "apparmor-demo"
	apparmorReader    = "read-profile"
)

// checkAppArmor proves the apiserver keeps securityContext.appArmorProfile
// and that the kernel confines the container with the runtime's default
// profile, read from inside the container. A host without AppArmor is
// reported as unsupported with the kubelet's own rejection.
func checkAppArmor(ctx context.Context, c *run) error {
	cs := c.client()
	pod, err := getPod(ctx, c, apparmorNamespace, apparmorPod, "apparmor")
	if err != nil {
		return err
	}
	sc := pod.Spec.SecurityContext
	if sc == nil || sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeRuntimeDefault {
		return fmt.Errorf("pod %s/%s lost securityContext.appArmorProfile: the apiserver did not keep the field", apparmorNamespace, apparmorPod)
	}
	c.detail("apiserver kept securityContext.appArmorProfile.type: RuntimeDefault")
	if err := c.needNodes("AppArmor is enforced by the kubelet and the kernel"); err != nil {
		return err
	}
	var logs string
	err = poll(ctx, 500*time.Millisecond, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		p, err := cs.CoreV1().Pods(apparmorNamespace).Get(ctx, apparmorPod, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("get pod %s/%s: %w", apparmorNamespace, apparmorPod, err)
		}
		if p.Status.Phase == corev1.PodFailed && p.Status.Reason == "AppArmor" {
			return false, "", unsupported("host cannot enforce AppArmor: the kubelet rejected the pod: %s", p.Status.Message)
		}
		if p.Status.Phase == corev1.PodFailed {
			return false, "", fmt.Errorf("pod %s/%s failed: %s %s", apparmorNamespace, apparmorPod, p.Status.Reason, p.Status.Message)
		}
		done, why := initDone(p, apparmorReader)
		if !done {
			return false, why, nil
		}
		logs, err = podLogs(ctx, c, apparmorNamespace, apparmorPod, apparmorReader)
		return err == nil, "", err
	})
	if err != nil {
		return err
	}
	profile := mounttestContent(logs)
	if !strings.Contains(profile, "(enforce)") {
		return fmt.Errorf("the container is not confined by an enforcing AppArmor profile: /proc/self/attr/current is %q", profile)
	}
	c.detail("inside the container /proc/self/attr/current = %s", profile)
	return nil
}
