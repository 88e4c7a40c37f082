package artifact_test

import (
	"math/rand/v2"
	"os/exec"
)

func osexec(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// randomBytes is incompressible, seeded, so runs push the same content.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{'k', 'i', 'n', 'd', 'l', 'a', 'b'})
	_, _ = r.Read(b)
	return b
}
