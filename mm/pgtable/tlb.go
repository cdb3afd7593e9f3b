package pgtable

// The table and the live MMU.
//
// A Table's hardware descriptors are the ones an ARMv7 MMU walks: the L1
// window slice is copied into the live first-level table when the space
// is switched in, and the L2 tables are walked where they lie, in the
// table pages. A live MMU therefore has to hear of every descriptor that
// changes: it mirrors an L1 change into the live table, cleans the line
// the table walk reads (the walk need not snoop the data cache), and
// invalidates any translation the TLB may hold for a descriptor that was
// valid. That is Linux's set_pte_at followed by flush_tlb_page, done in
// one place: every write of a hardware descriptor in this package goes
// through setL1 or setL2, which tell the table's TLB, so no caller in mm
// can change an entry and forget the flush.

// TLB is told of every hardware descriptor a Table changes. Its methods
// are called with the owner's page-table lock held, right after the
// write, and must neither block nor allocate: mm's data abort path sets
// Young and Dirty on g0, where nothing may wait (package mm/mmu).
type TLB interface {
	// L1 reports that the first-level descriptor of the section at va
	// went from old to new.
	L1(t *Table, va uint32, old, new L1)
	// L2 reports that the second-level descriptor of the page at va, at
	// physical address pa in a table page, went from old to new.
	L2(t *Table, va, pa uint32, old, new L2)
	// Destroyed reports that t is about to free its frames: a live MMU
	// must not walk it any more.
	Destroyed(t *Table)
}

// SetTLB attaches the TLB that hears of the table's changes (nil: none,
// for a table no MMU walks). It is set once, before the table is used.
func (t *Table) SetTLB(tlb TLB) { t.tlb = tlb }

// L1Window returns the window's 1024 hardware first-level descriptors in
// order, for a live MMU to copy into its table. The owner's page-table
// lock (or the knowledge that nothing changes the table) must be held.
func (t *Table) L1Window(out *[WindowSections]L1) {
	for i := range out {
		out[i] = L1(get32(t.l1, uint32(i)))
	}
}

func (t *Table) setL1(i uint32, d L1) {
	old := L1(get32(t.l1, i))
	put32(t.l1, i, uint32(d))
	if t.tlb != nil && old != d {
		t.tlb.L1(t, WindowStart+i<<SectionShift, old, d)
	}
}

// setL2 writes the hardware descriptor of va, entry e of table page pg
// (counting the page's shadow entries first).
func (t *Table) setL2(va uint32, pg *[PageSize]byte, e uint32, d L2) {
	hw := e + 2*PTEsPerTable
	old := L2(get32(pg[:], hw))
	put32(pg[:], hw, uint32(d))
	if t.tlb != nil && old != d {
		pair := l1Index(va) >> 1
		t.tlb.L2(t, va, uint32(t.pfns[pair].Addr())+hw*4, old, d)
	}
}
