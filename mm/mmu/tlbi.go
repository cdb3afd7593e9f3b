//go:build !yolk_drop_tlbi

package mmu

import "yolk/mm/pgtable"

// dropInvalidation is false: every change of a valid second-level
// descriptor is invalidated. The yolk_drop_tlbi build tag makes it drop
// one kind (tlbi_drop.go), to show that the tests notice.
func dropInvalidation(old, new pgtable.L2) bool { return false }

// DroppingInvalidation reports whether this build drops an invalidation.
const DroppingInvalidation = false
