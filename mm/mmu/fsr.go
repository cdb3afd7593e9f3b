package mmu

import (
	"fmt"

	"yolk/mm/pgtable"
)

// Abort is a data abort as the CPU reports it: the Data Fault Status
// Register and the Data Fault Address Register (B4.1.52, B4.1.53 of the
// ARMv7-A Architecture Reference Manual), in the short-descriptor format
// TamaGo runs with (TTBCR.EAE clear).
type Abort struct {
	DFSR, DFAR uint32
}

// DFSR fields (table B4-8).
const (
	dfsrFSLow  = 0xf     // FS[3:0]
	dfsrFSHigh = 1 << 10 // FS[4]
	dfsrWnR    = 1 << 11 // the access was a write
	dfsrExT    = 1 << 12 // external abort type
)

// Status is the fault status code, FS[4:0] (table B3-23): the same codes
// the software MMU's walk returns.
func (a Abort) Status() pgtable.FaultStatus {
	fs := a.DFSR & dfsrFSLow
	if a.DFSR&dfsrFSHigh != 0 {
		fs |= 1 << 4
	}
	return pgtable.FaultStatus(fs)
}

// Access is the access that faulted. A data abort is a read or a write;
// cache maintenance by MVA also reports WnR set, and is a write here.
func (a Abort) Access() pgtable.Access {
	if a.DFSR&dfsrWnR != 0 {
		return pgtable.AccessWrite
	}
	return pgtable.AccessRead
}

// PageFault reports whether the status is one a page fault handler serves:
// a translation or permission fault, at either level. Anything else
// (alignment, domain, external and parity aborts, debug events) is a bug
// in the image or the hardware, never a task's page fault.
func (a Abort) PageFault() bool {
	fs := a.Status()
	return fs.Translation() || fs.Permission()
}

func (a Abort) String() string {
	return fmt.Sprintf("%v at %#08x (DFSR %#x): %v", a.Access(), a.DFAR, a.DFSR, a.Status())
}

// Kind names a page fault status the way the counters report it.
type Kind uint8

const (
	TranslationSection Kind = iota
	TranslationPage
	PermissionSection
	PermissionPage
	NumKinds
)

var kindNames = [NumKinds]string{"translation_section", "translation_page", "permission_section", "permission_page"}

func (k Kind) String() string { return kindNames[k] }

// KindOf is the kind of a page fault status; ok is false for any other.
func KindOf(fs pgtable.FaultStatus) (k Kind, ok bool) {
	switch fs {
	case pgtable.FSTranslationSection:
		return TranslationSection, true
	case pgtable.FSTranslationPage:
		return TranslationPage, true
	case pgtable.FSPermissionSection:
		return PermissionSection, true
	case pgtable.FSPermissionPage:
		return PermissionPage, true
	}
	return 0, false
}

// Status is the fault status code of the kind.
func (k Kind) Status() pgtable.FaultStatus {
	return [NumKinds]pgtable.FaultStatus{pgtable.FSTranslationSection, pgtable.FSTranslationPage,
		pgtable.FSPermissionSection, pgtable.FSPermissionPage}[k]
}
