//go:build yolk_drop_tlbi

package mmu

import "yolk/mm/pgtable"

// dropInvalidation, in this deliberately broken build, skips the TLB
// invalidation when a writable page is write-protected in place: fork
// write-protecting the parent, MADV_FREE and writeback cleaning Dirty,
// mprotect taking write away. The TLB keeps the old writable entry, so a
// later store bypasses copy-on-write, dirty tracking and the protection.
// The live MMU's tests must fail in this build.
func dropInvalidation(old, new pgtable.L2) bool {
	if old.Kind() == pgtable.KindFault || new.Kind() == pgtable.KindFault {
		return false
	}
	_, o := old.Page()
	_, n := new.Page()
	return o.AP.Permits(true, false) && !n.AP.Permits(true, false)
}

// DroppingInvalidation reports whether this build drops an invalidation.
const DroppingInvalidation = true
