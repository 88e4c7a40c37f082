// Package kindlab carries the built-in labs and their fixtures inside the
// binary, so `kindlab up all-features` works from any directory.
package kindlab

import "embed"

// Files holds the lab files and what they refer to: each feature's
// manifests (fixtures/*/manifests) and the files it packs or mounts
// (fixtures/*/files). Lab files refer to them as ../fixtures/….
// Test tooling elsewhere under fixtures/ stays out of the binary.
//
//go:embed labs fixtures/*/manifests fixtures/*/files
var Files embed.FS

// LabsDir is where the built-in lab files are inside Files.
const LabsDir = "labs"
