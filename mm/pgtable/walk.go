package pgtable

import "fmt"

// The software MMU: a translation table walk done the way an ARMv7-A MMU
// with the short-descriptor format does it (B3.5, B3.7, B3.12), reading only
// the hardware descriptors, following the physical addresses they hold.
// The shadow tables play no part: if software and hardware entries ever
// disagree, accesses behave as the hardware would, which is what makes it
// safe to install the same tables in the live MMU later.

// Access is the kind of memory access being translated.
type Access uint8

const (
	AccessRead Access = iota
	AccessWrite
	AccessExec
)

var accessNames = [...]string{"read", "write", "exec"}

func (a Access) String() string { return accessNames[a] }

// FaultStatus is the short-descriptor fault status code a data or prefetch
// abort would report in DFSR/IFSR FS[4:0] (table B3-23); 0 is success.
type FaultStatus uint8

const (
	FSTranslationSection FaultStatus = 0b00101
	FSTranslationPage    FaultStatus = 0b00111
	FSDomainSection      FaultStatus = 0b01001
	FSDomainPage         FaultStatus = 0b01011
	FSPermissionSection  FaultStatus = 0b01101
	FSPermissionPage     FaultStatus = 0b01111
	// FSExternalAbortL2: the second-level descriptor could not be read
	// (synchronous external abort on translation table walk, 2nd level).
	FSExternalAbortL2 FaultStatus = 0b01110
)

func (fs FaultStatus) String() string {
	switch fs {
	case 0:
		return "ok"
	case FSTranslationSection:
		return "translation fault (section)"
	case FSTranslationPage:
		return "translation fault (page)"
	case FSDomainSection:
		return "domain fault (section)"
	case FSDomainPage:
		return "domain fault (page)"
	case FSPermissionSection:
		return "permission fault (section)"
	case FSPermissionPage:
		return "permission fault (page)"
	case FSExternalAbortL2:
		return "external abort on translation table walk (2nd level)"
	}
	return fmt.Sprintf("fault status %#05b", uint8(fs))
}

// Translation reports whether the fault is a translation fault: nothing
// mapped at that level (as opposed to a mapping that forbids the access).
func (fs FaultStatus) Translation() bool {
	return fs == FSTranslationSection || fs == FSTranslationPage
}

// Permission reports whether the fault is a permission fault.
func (fs FaultStatus) Permission() bool {
	return fs == FSPermissionSection || fs == FSPermissionPage
}

// Translate walks the table for an access at va by PL0 (user) or PL1, with
// TamaGo's DACR, and returns the physical address or the fault status the
// MMU would raise. Addresses outside the window fault: the task table
// only has the window's L1 entries.
func (t *Table) Translate(va uint32, acc Access, user bool) (pa uint32, fs FaultStatus) {
	return t.translate(va, acc, user, DACR)
}

func (t *Table) translate(va uint32, acc Access, user bool, dacr uint32) (uint32, FaultStatus) {
	if !InWindow(va) {
		return 0, FSTranslationSection
	}
	l1 := t.L1(va)
	var (
		pa     uint32
		a      Attrs
		domain uint8
		fsDom  = FSDomainSection
		fsPerm = FSPermissionSection
	)
	switch l1.Kind() {
	case KindFault:
		return 0, FSTranslationSection
	case KindSection:
		pa, a = l1.Section()
		pa |= va & (SectionSize - 1)
		domain = a.Domain
	case KindSupersection:
		pa, a = l1.Section()
		pa |= va & (1<<24 - 1)
	case KindTable:
		var base uint32
		base, domain = l1.Table()
		l2, ok := t.readPhys32(base + (va>>PageShift&(PTEsPerTable-1))*4)
		if !ok {
			// The table points outside the pool: an external abort on the
			// second-level fetch, which the software treats as a fault.
			return 0, FSExternalAbortL2
		}
		d := L2(l2)
		fsDom, fsPerm = FSDomainPage, FSPermissionPage
		switch d.Kind() {
		case KindFault:
			return 0, FSTranslationPage
		case KindLarge:
			pa, a = d.Page()
			pa |= va & (1<<16 - 1)
		default:
			pa, a = d.Page()
			pa |= va & (PageSize - 1)
		}
		a.PXN = a.PXN || l1&l1PXNTable != 0
	}
	// Domain check (B3.12.3): no access and reserved fault, manager skips
	// the permission check, client checks.
	switch dacr >> (2 * domain) & 0b11 {
	case 0b00, 0b10:
		return 0, fsDom
	case 0b11:
		return pa, 0
	}
	ok := a.AP != apReserved && a.AP.Permits(acc == AccessWrite, user)
	if acc == AccessExec {
		ok = ok && !a.XN && (user || !a.PXN)
	}
	if !ok {
		return 0, fsPerm
	}
	return pa, 0
}

// readPhys32 reads a word of physical memory in the pool, as the table
// walk unit does.
func (t *Table) readPhys32(pa uint32) (uint32, bool) {
	pfn, err := t.pool.PFNOf(uint64(pa))
	if err != nil {
		return 0, false
	}
	b, err := t.pool.Frame(pfn)
	if err != nil {
		return 0, false
	}
	return get32(b, pa&(PageSize-1)/4), true
}
