package pgtable

import "fmt"

// PTE is the software ("Linux") view of a page table entry: the frame's
// physical address in bits[31:12] and the state the hardware descriptor
// cannot hold in the low bits. It lives in the shadow table beside the
// hardware one, as Linux/ARM keeps its "Linux PTEs" beside the hardware
// PTEs (arch/arm/include/asm/pgtable-2level.h), and the hardware entry is
// always derived from it by HardwarePTE, never written on its own.
//
// The layout follows Linux/ARM's L_PTE_* bits where Linux has one. Write
// is positive here (Linux stores its inverse, L_PTE_RDONLY), and Special
// marks a mapping with no page descriptor behind it (the zero page).
type PTE uint32

const (
	Present  PTE = 1 << 0  // maps a frame (L_PTE_PRESENT)
	Young    PTE = 1 << 1  // accessed since last cleared (L_PTE_YOUNG)
	Special  PTE = 1 << 2  // no page descriptor: the shared zero page (pte_special)
	Dirty    PTE = 1 << 6  // written since last cleared (L_PTE_DIRTY)
	Write    PTE = 1 << 7  // writable: the VMA allows it and it is not COW-shared
	User     PTE = 1 << 8  // unprivileged access (L_PTE_USER)
	Exec     PTE = 1 << 9  // executable (Linux's !L_PTE_XN)
	NoAccess PTE = 1 << 11 // PROT_NONE: keeps the frame but allows nothing (L_PTE_NONE)

	pteFlagMask = 0xfff
	ptePAMask   = 0xfffff000
)

// MkPTE returns a present PTE for the frame at pa with flags f.
func MkPTE(pa uint32, f PTE) PTE {
	return PTE(pa&ptePAMask) | f&pteFlagMask | Present
}

// None reports an empty entry: nothing mapped, no swap entry.
func (p PTE) None() bool { return p == 0 }

// Present reports whether the entry maps a frame.
func (p PTE) Present() bool { return p&Present != 0 }

// Has reports whether every flag in f is set.
func (p PTE) Has(f PTE) bool { return p&f == f }

// PA is the physical address of the mapped frame.
func (p PTE) PA() uint32 { return uint32(p) & ptePAMask }

// Flags are the low bits.
func (p PTE) Flags() PTE { return p & pteFlagMask }

// With sets flags; Without clears them.
func (p PTE) With(f PTE) PTE    { return p | f }
func (p PTE) Without(f PTE) PTE { return p &^ f }

// Swap entries. A non-present, non-zero PTE names a slot on a swap device:
// type in bits[6:2], offset in bits[31:7], as Linux/ARM's __SWP_TYPE_SHIFT
// and __SWP_OFFSET_SHIFT lay them out. The hardware entry is a fault.
const (
	swpTypeShift   = 2
	swpTypeBits    = 5
	swpOffsetShift = swpTypeShift + swpTypeBits
	// MaxSwapOffset is the largest slot number a swap PTE can hold.
	MaxSwapOffset = 1<<(32-swpOffsetShift) - 1
	// MaxSwapType is the largest swap device number.
	MaxSwapType = 1<<swpTypeBits - 1
)

// SwapEntry names a slot on a swap device.
type SwapEntry struct {
	Type   uint8
	Offset uint32
}

func (e SwapEntry) String() string { return fmt.Sprintf("swap %d:%#x", e.Type, e.Offset) }

// MkSwapPTE returns the PTE of a swapped-out page. Slot 0 of device 0
// would encode as the empty PTE, so (as on Linux, where slot 0 holds the
// swap header) it is refused.
func MkSwapPTE(e SwapEntry) (PTE, error) {
	if e.Type > MaxSwapType || e.Offset > MaxSwapOffset || e == (SwapEntry{}) {
		return 0, fmt.Errorf("pgtable: %v cannot be encoded in a PTE", e)
	}
	return PTE(uint32(e.Type)<<swpTypeShift | e.Offset<<swpOffsetShift), nil
}

// IsSwap reports whether the entry holds a swap entry.
func (p PTE) IsSwap() bool { return p != 0 && p&Present == 0 }

// Swap decodes a swap PTE.
func (p PTE) Swap() SwapEntry {
	return SwapEntry{Type: uint8(p>>swpTypeShift) & MaxSwapType, Offset: uint32(p) >> swpOffsetShift}
}

// Accessible reports whether the hardware entry maps the frame at all:
// present, young and not PROT_NONE.
func (p PTE) Accessible() bool { return p&(Present|Young|NoAccess) == Present|Young }

// HardwareWritable reports whether the hardware entry grants write: the
// PTE is writable and already dirty, so the first write to a clean page
// takes a permission fault that sets Dirty (Linux/ARM's dirty tracking).
func (p PTE) HardwareWritable() bool { return p.Accessible() && p&(Write|Dirty) == Write|Dirty }

// Attrs are the hardware attributes of a task mapping with this PTE's
// permissions: normal write-back write-allocate memory, not global (so the
// TLB tags it with the address space's ASID), not shareable (one core).
// AP follows Linux/ARM's cpu_v7_set_pte_ext: AP[0] always, AP[1] for user
// mappings, AP[2] (read-only) unless writable and dirty.
func (p PTE) Attrs() Attrs {
	a := Attrs{AP: 0b001, Mem: NormalWBWA, NG: true, XN: p&Exec == 0, PXN: true}
	if p&User != 0 {
		a.AP |= 0b010
	}
	if !p.HardwareWritable() {
		a.AP |= 0b100
	}
	return a
}

// HardwarePTE derives the hardware descriptor: a fault unless the PTE is
// accessible, so that the first access to an old page takes a translation
// fault that sets Young.
func (p PTE) HardwarePTE() L2 {
	if !p.Accessible() {
		return 0
	}
	return SmallDesc(p.PA(), p.Attrs())
}

// HardwareSection derives the section descriptor for a huge PTE (the same
// software bits, describing a 1 MiB frame) in the given domain.
func (p PTE) HardwareSection(domain uint8) L1 {
	if !p.Accessible() {
		return 0
	}
	a := p.Attrs()
	a.Domain = domain
	return SectionDesc(p.PA()&l1SectBase, a)
}

var pteNames = []struct {
	f    PTE
	name string
}{
	{Young, "young"}, {Special, "special"}, {Dirty, "dirty"}, {Write, "write"},
	{User, "user"}, {Exec, "exec"}, {NoAccess, "none"},
}

func (p PTE) String() string {
	switch {
	case p.None():
		return "none"
	case p.IsSwap():
		return p.Swap().String()
	}
	s := fmt.Sprintf("%#08x present", p.PA())
	for _, n := range pteNames {
		if p&n.f != 0 {
			s += "|" + n.name
		}
	}
	return s
}
