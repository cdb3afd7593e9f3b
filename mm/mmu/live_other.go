//go:build !(tamago && arm)

package mmu

import "errors"

// Live returns the image's live MMU; there is none off the image, where
// the software MMU is the only one.
func Live() (*CPU, error) {
	return nil, errors.New("mmu: no live MMU here: the task window is in the MMU only on the image")
}
