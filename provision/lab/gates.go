package lab

//go:generate go run ./internal/gengates

// gateSpec is what Kubernetes 1.31 says of one feature gate.
type gateSpec struct {
	Stage   string // Alpha, Beta, GA or Deprecated
	Default bool
	// Locked gates cannot be set away from their default: the components refuse to start.
	Locked bool
}

// KubernetesMinor is the minor version every lab targets; gates are checked against it.
const KubernetesMinor = "1.31"
