package pgtable

import "fmt"

// Hardware descriptors of the ARMv7-A short-descriptor translation table
// format (ARM Architecture Reference Manual ARMv7-A/R, B3.5.1, figures B3-4
// and B3-5). Only what the task window uses is built here: first-level
// page-table and section descriptors, second-level small-page descriptors.
// Decoding accepts every format, so that a walker reading a table written
// by someone else (a later live-MMU step, a bug) sees what the hardware
// would.

// L1 is a first-level descriptor: one per 1 MiB of virtual address space.
type L1 uint32

// L2 is a second-level descriptor: one per 4 KiB page.
type L2 uint32

// L1 descriptor types, bits[1:0] (and bit 18 for sections).
const (
	l1TypeMask    = 0b11
	l1TypeFault   = 0b00
	l1TypeTable   = 0b01
	l1TypeSection = 0b10 // 0b11 is a section with PXN on implementations with the PXN extension

	l1PXNTable   = 1 << 2  // page table: PXN
	l1NSTable    = 1 << 3  // page table: NS
	l1DomainShft = 5       // bits[8:5], both formats
	l1SecB       = 1 << 2  // section: B
	l1SecC       = 1 << 3  // section: C
	l1SecXN      = 1 << 4  // section: XN
	l1SecAP01    = 10      // section: AP[1:0] at bits[11:10]
	l1SecTEX     = 12      // section: TEX[2:0] at bits[14:12]
	l1SecAP2     = 1 << 15 // section: AP[2]
	l1SecS       = 1 << 16
	l1SecNG      = 1 << 17
	l1SecSuper   = 1 << 18 // supersection (16 MiB)
	l1SecNS      = 1 << 19
	l1SecPXN     = 1 << 0
	l1TableBase  = 0xfffffc00 // bits[31:10]
	l1SectBase   = 0xfff00000 // bits[31:20]
	l1SuperBase  = 0xff000000 // bits[31:24]
)

// L2 descriptor types, bits[1:0].
const (
	l2TypeFault = 0b00
	l2TypeLarge = 0b01 // 64 KiB large page
	// Bit 1 set is a small page; bit 0 is then its XN.

	l2SmallXN  = 1 << 0
	l2Small    = 1 << 1
	l2B        = 1 << 2
	l2C        = 1 << 3
	l2AP01     = 4       // AP[1:0] at bits[5:4], both page sizes
	l2SmallTEX = 6       // small page: TEX[2:0] at bits[8:6]
	l2AP2      = 1 << 9  // AP[2]
	l2S        = 1 << 10 // shareable
	l2NG       = 1 << 11 // not global
	l2LargeTEX = 12      // large page: TEX[2:0] at bits[14:12]
	l2LargeXN  = 1 << 15 // large page: XN
	l2SmallPA  = 0xfffff000
	l2LargePA  = 0xffff0000
)

// AP is the three access permission bits AP[2:0], AP[2] as bit 2. With
// SCTLR.AFE = 0 (TamaGo leaves it clear) they mean, table B3-8:
//
//	AP[2:0]  PL1         PL0
//	000      no access   no access
//	001      read/write  no access
//	010      read/write  read-only
//	011      read/write  read/write
//	100      reserved
//	101      read-only   no access
//	110      read-only   read-only   (deprecated encoding)
//	111      read-only   read-only
type AP uint8

// The encodings Linux/ARM and yolk write.
const (
	APNone     AP = 0b000
	APPrivRW   AP = 0b001 // kernel read/write, user none
	APUserRO   AP = 0b010 // kernel read/write, user read-only
	APRW       AP = 0b011 // read/write for both
	APPrivRO   AP = 0b101 // kernel read-only, user none
	APRO       AP = 0b111 // read-only for both
	apReserved AP = 0b100
)

// Permits reports whether the permissions allow an access of the given
// kind at PL0 (user) or PL1 (privileged). Execute permission is not an AP
// matter: XN and PXN decide it, with read permission required as well.
func (ap AP) Permits(write, user bool) bool {
	var r, w bool // at the requested level
	switch ap & 0b111 {
	case 0b001:
		r, w = !user, !user
	case 0b010:
		r, w = true, !user
	case 0b011:
		r, w = true, true
	case 0b101:
		r = !user
	case 0b110, 0b111:
		r = true
	}
	if write {
		return w
	}
	return r
}

// MemType is a memory region's TEX[2:0], C and B bits with TEX remap off
// (SCTLR.TRE = 0, as TamaGo runs), table B3-10.
type MemType struct {
	TEX  uint8
	C, B bool
}

// Memory types used here. NormalWBWA is what TamaGo maps DDR as (its
// MemoryRegion: C and B with TEX 000 is write-back, no write-allocate);
// task pages use TEX 001 C B, outer and inner write-back write-allocate,
// which is what Linux/ARM's MT_MEMORY_RW resolves to on ARMv7.
var (
	StronglyOrdered = MemType{}
	Device          = MemType{B: true}
	NormalWBWA      = MemType{TEX: 0b001, C: true, B: true}
)

// Attrs are the attributes of a page or section mapping.
type Attrs struct {
	AP     AP
	XN     bool // execute-never, at every level
	PXN    bool // privileged execute-never (sections and tables only)
	Mem    MemType
	S      bool  // shareable
	NG     bool  // not global: tagged with the ASID (every task mapping)
	Domain uint8 // sections only; pages take their table's domain
	NS     bool  // non-secure (sections)
}

// Kind of a descriptor, as the walker sees it.
type Kind uint8

const (
	KindFault Kind = iota
	KindTable
	KindSection
	KindSupersection
	KindSmall
	KindLarge
)

var kindNames = [...]string{"fault", "table", "section", "supersection", "small", "large"}

func (k Kind) String() string { return kindNames[k] }

// TableDesc returns the first-level descriptor of a second-level table at
// physical address pa (1 KiB aligned) in the given domain.
func TableDesc(pa uint32, domain uint8) L1 {
	if pa&^l1TableBase != 0 {
		panic(fmt.Sprintf("pgtable: L2 table at %#x is not 1 KiB aligned", pa))
	}
	return L1(pa | uint32(domain&0xf)<<l1DomainShft | l1TypeTable)
}

// SectionDesc returns the first-level descriptor mapping the 1 MiB section
// at pa (1 MiB aligned) with attributes a.
func SectionDesc(pa uint32, a Attrs) L1 {
	if pa&^l1SectBase != 0 {
		panic(fmt.Sprintf("pgtable: section at %#x is not 1 MiB aligned", pa))
	}
	d := pa | uint32(a.Domain&0xf)<<l1DomainShft | l1TypeSection |
		uint32(a.AP&0b11)<<l1SecAP01 | uint32(a.Mem.TEX&0b111)<<l1SecTEX
	d |= bit(a.AP&0b100 != 0, l1SecAP2) | bit(a.Mem.C, l1SecC) | bit(a.Mem.B, l1SecB) |
		bit(a.XN, l1SecXN) | bit(a.PXN, l1SecPXN) | bit(a.S, l1SecS) | bit(a.NG, l1SecNG) |
		bit(a.NS, l1SecNS)
	return L1(d)
}

// SmallDesc returns the second-level descriptor mapping the 4 KiB page at
// pa with attributes a (Domain, PXN and NS do not exist at this level).
func SmallDesc(pa uint32, a Attrs) L2 {
	if pa&^l2SmallPA != 0 {
		panic(fmt.Sprintf("pgtable: page at %#x is not 4 KiB aligned", pa))
	}
	d := pa | l2Small | uint32(a.AP&0b11)<<l2AP01 | uint32(a.Mem.TEX&0b111)<<l2SmallTEX
	d |= bit(a.AP&0b100 != 0, l2AP2) | bit(a.Mem.C, l2C) | bit(a.Mem.B, l2B) |
		bit(a.XN, l2SmallXN) | bit(a.S, l2S) | bit(a.NG, l2NG)
	return L2(d)
}

func bit(on bool, b uint32) uint32 {
	if on {
		return b
	}
	return 0
}

// Kind decodes the descriptor type.
func (d L1) Kind() Kind {
	switch d & l1TypeMask {
	case l1TypeTable:
		return KindTable
	case l1TypeSection, l1TypeSection | 1:
		if d&l1SecSuper != 0 {
			return KindSupersection
		}
		return KindSection
	}
	// 0b00 is a fault; 0b11 without PXN support is reserved and faults too,
	// but Cortex-A7 implements PXN, so 0b1x is always a section.
	return KindFault
}

// Table decodes a page-table descriptor: the L2 table's physical address
// and the domain.
func (d L1) Table() (pa uint32, domain uint8) {
	return uint32(d) & l1TableBase, uint8(d>>l1DomainShft) & 0xf
}

// Section decodes a section or supersection descriptor: the output base
// address and attributes. A supersection's domain is 0 by definition and
// its extended base address bits are not modelled (the board has < 4 GiB).
func (d L1) Section() (pa uint32, a Attrs) {
	a = Attrs{
		AP:  AP(d>>l1SecAP01&0b11) | AP(b2u(d&l1SecAP2 != 0)<<2),
		XN:  d&l1SecXN != 0,
		PXN: d&l1SecPXN != 0,
		Mem: MemType{TEX: uint8(d>>l1SecTEX) & 0b111, C: d&l1SecC != 0, B: d&l1SecB != 0},
		S:   d&l1SecS != 0,
		NG:  d&l1SecNG != 0,
		NS:  d&l1SecNS != 0,
	}
	if d&l1SecSuper != 0 {
		return uint32(d) & l1SuperBase, a
	}
	a.Domain = uint8(d>>l1DomainShft) & 0xf
	return uint32(d) & l1SectBase, a
}

// Kind decodes the descriptor type.
func (d L2) Kind() Kind {
	switch {
	case d&l2Small != 0:
		return KindSmall
	case d&0b11 == l2TypeLarge:
		return KindLarge
	}
	return KindFault
}

// Page decodes a small or large page descriptor: the output base address
// and attributes.
func (d L2) Page() (pa uint32, a Attrs) {
	a = Attrs{
		AP: AP(d>>l2AP01&0b11) | AP(b2u(d&l2AP2 != 0)<<2),
		S:  d&l2S != 0,
		NG: d&l2NG != 0,
	}
	a.Mem.C, a.Mem.B = d&l2C != 0, d&l2B != 0
	if d.Kind() == KindLarge {
		a.XN = d&l2LargeXN != 0
		a.Mem.TEX = uint8(d>>l2LargeTEX) & 0b111
		return uint32(d) & l2LargePA, a
	}
	a.XN = d&l2SmallXN != 0
	a.Mem.TEX = uint8(d>>l2SmallTEX) & 0b111
	return uint32(d) & l2SmallPA, a
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func (d L1) String() string {
	switch d.Kind() {
	case KindTable:
		pa, dom := d.Table()
		return fmt.Sprintf("table %#08x domain %d", pa, dom)
	case KindSection, KindSupersection:
		pa, a := d.Section()
		return fmt.Sprintf("%v %#08x %v", d.Kind(), pa, a)
	}
	return fmt.Sprintf("fault %#08x", uint32(d))
}

func (d L2) String() string {
	if d.Kind() == KindFault {
		return fmt.Sprintf("fault %#08x", uint32(d))
	}
	pa, a := d.Page()
	return fmt.Sprintf("%v %#08x %v", d.Kind(), pa, a)
}

func (a Attrs) String() string {
	s := fmt.Sprintf("ap=%03b tex=%03b c=%d b=%d", a.AP, a.Mem.TEX, b2u(a.Mem.C), b2u(a.Mem.B))
	for _, f := range []struct {
		on   bool
		name string
	}{{a.XN, "xn"}, {a.PXN, "pxn"}, {a.S, "s"}, {a.NG, "ng"}, {a.NS, "ns"}} {
		if f.on {
			s += " " + f.name
		}
	}
	return s
}
