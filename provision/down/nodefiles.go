package down

import (
	"context"

	"github.com/kindlab/kindlab/provision/nodefiles"
)

// removeNodeFiles removes the cluster's node-files volumes (package
// nodefiles), once its nodes are gone.
func removeNodeFiles(ctx context.Context, cluster string) ([]string, error) {
	c, err := nodefiles.Client()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return nodefiles.Remove(ctx, c, cluster)
}
