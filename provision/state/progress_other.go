//go:build !unix

package state

// openNoBlock: no such flags off Unix.
const openNoBlock = 0
