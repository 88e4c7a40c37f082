package crishim_test

import (
	"context"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkForward measures what one hop through the shim adds to a CRI
// call, against a real containerd (Debian's 1.6) on the same machine:
// Version (the smallest call) and ListContainers and ListPodSandbox (what
// the kubelet's PLEG asks every second), each straight to containerd and
// through the shim.
//
//	go test -run '^$' -bench Forward ./provision/crishim
func BenchmarkForward(b *testing.B) {
	tc := startContainerd(b)
	endpoint, _ := startShim(b, tc.Endpoint)
	clients := map[string]runtimeapi.RuntimeServiceClient{
		"direct": criClient(b, tc.Endpoint),
		"shim":   criClient(b, endpoint),
	}
	ctx := context.Background()
	calls := map[string]func(c runtimeapi.RuntimeServiceClient) error{
		"Version": func(c runtimeapi.RuntimeServiceClient) error {
			_, err := c.Version(ctx, &runtimeapi.VersionRequest{})
			return err
		},
		"ListContainers": func(c runtimeapi.RuntimeServiceClient) error {
			_, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
			return err
		},
		"ListPodSandbox": func(c runtimeapi.RuntimeServiceClient) error {
			_, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
			return err
		},
	}
	for _, call := range []string{"Version", "ListContainers", "ListPodSandbox"} {
		for _, via := range []string{"direct", "shim"} {
			b.Run(call+"/"+via, func(b *testing.B) {
				c := clients[via]
				for i := 0; i < b.N; i++ {
					if err := calls[call](c); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
