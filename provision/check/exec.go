package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
)

// errNoExec: the check's Env has no rest.Config to open an exec stream with.
var errNoExec = errors.New("no REST config to exec with")

// podExec runs cmd in a pod's container through the apiserver, as `kubectl
// exec` does (k8s.io/kubectl v0.31 pkg/cmd/exec: WebSocket, falling back to
// SPDY where a proxy or an older apiserver refuses the upgrade), and returns
// what it wrote to stdout. A command that exits non-zero is an error with
// its stderr.
func podExec(ctx context.Context, c *run, ns, pod, container string, cmd ...string) (string, error) {
	cfg := c.env.Config
	if cfg == nil {
		return "", errNoExec
	}
	req := c.client().CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		return "", fmt.Errorf("exec in %s/%s: %w", ns, pod, err)
	}
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		return "", fmt.Errorf("exec in %s/%s: %w", ns, pod, err)
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return "", fmt.Errorf("exec in %s/%s: %w", ns, pod, err)
	}
	var stdout, stderr bytes.Buffer
	if err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr}); err != nil {
		return stdout.String(), fmt.Errorf("exec in %s/%s container %s: %w: %s", ns, pod, container, err, firstLine(strings.TrimSpace(stderr.String())))
	}
	return stdout.String(), nil
}
