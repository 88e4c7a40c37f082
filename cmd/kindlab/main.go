// Command kindlab turns a lab file into a running Kubernetes 1.31 cluster
// with the 1.31 features switched on, their example workloads, and checks
// that prove each feature works.
package main

import (
	"os"

	"github.com/kindlab/kindlab/cmd/kindlab/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:]))
}
