package pgtable

import (
	"encoding/binary"
	"fmt"
	"sync"

	"yolk/mm/phys"
)

// The task window and the table geometry.
const (
	WindowStart uint32 = 0x40000000
	WindowEnd   uint32 = 0x80000000 // exclusive
	WindowSize         = WindowEnd - WindowStart

	PageShift    = phys.PageShift
	PageSize     = 1 << PageShift
	SectionShift = 20
	SectionSize  = 1 << SectionShift

	// PTEsPerTable is the number of entries in one hardware L2 table: it
	// maps one section (1 MiB).
	PTEsPerTable = SectionSize / PageSize
	// WindowSections is the number of L1 entries covering the window.
	WindowSections = WindowSize / SectionSize

	// UserDomain is the domain task mappings are tagged with. TamaGo's
	// set_ttbr0 (arm/mmu.s) writes DACR = 1: domain 0 is a client, every
	// other domain has no access, so a task table must use domain 0.
	UserDomain = 0
	// DACR is the Domain Access Control Register value the walker checks
	// domains against: TamaGo's.
	DACR uint32 = 0x1
)

// Layout of a table page. Like Linux/ARM, one 4 KiB frame serves a pair of
// adjacent L1 entries (2 MiB): the two shadow tables of 256 software PTEs
// first, the two hardware tables of 256 descriptors after them. The L1
// entries of the pair point at +2048 and +3072, which are 1 KiB aligned as
// the architecture requires.
//
//	+0     shadow PTEs for the even section
//	+1024  shadow PTEs for the odd section
//	+2048  hardware L2 table for the even section
//	+3072  hardware L2 table for the odd section
const (
	tableHalf    = PTEsPerTable * 4
	hwOffset     = 2 * tableHalf
	pairsInTable = WindowSections / 2
)

// Table is the translation table of one address space's task window: the
// window's 1024 L1 descriptors in one frame (the slice of a full 16 KiB L1
// table that covers 0x40000000-0x7fffffff, ready to be copied into the live
// table), the matching 1024 software section entries in the frame after it,
// and one table page per pair of sections that has small pages.
//
// A Table is not safe for concurrent use: its owner serialises every call
// with its page-table lock, and Populate drops that lock around the one
// allocation it makes.
type Table struct {
	pool *phys.Pool
	ctx  phys.Context

	root phys.PFN // order-1 block: hardware L1 window, then shadow L1
	l1   []byte   // hardware first-level descriptors of the window
	sl1  []byte   // software section PTEs (0 where there is no section)

	// pairs[i] is the table page of sections 2i and 2i+1, or nil. The
	// hardware L1 descriptors point at the same frames; the walker follows
	// those, this is the software's way in.
	pairs [pairsInTable]*[PageSize]byte
	pfns  [pairsInTable]phys.PFN

	// deposited marks the sections that have a table page put aside for
	// their split (Linux's pgtable_trans_huge_deposit): the pair's table
	// page, kept allocated while either of its sections has a mark.
	deposited [WindowSections / 64]uint64

	pages int // frames in use: the root block and table pages

	// tlb hears of every hardware descriptor that changes (tlb.go).
	tlb TLB
}

// New allocates an empty table from pool with context ctx (which should
// include phys.Zeroed's guarantee: New clears the frames itself).
func New(pool *phys.Pool, ctx phys.Context) (*Table, error) {
	root, err := pool.Alloc(1, ctx|phys.Zeroed)
	if err != nil {
		return nil, fmt.Errorf("pgtable: L1 window: %w", err)
	}
	b, err := pool.Block(root, 1)
	if err != nil {
		return nil, err
	}
	return &Table{pool: pool, ctx: ctx | phys.Zeroed, root: root, l1: b[:PageSize:PageSize], sl1: b[PageSize:], pages: 2}, nil
}

// RootPA is the physical address of the window's L1 descriptors.
func (t *Table) RootPA() uint32 { return uint32(t.root.Addr()) }

// Pages is the number of frames the table uses (Linux's PageTables).
func (t *Table) Pages() int { return t.pages }

// InWindow reports whether va is in the task window.
func InWindow(va uint32) bool { return va >= WindowStart && va < WindowEnd }

func l1Index(va uint32) uint32 { return (va - WindowStart) >> SectionShift }

func get32(b []byte, i uint32) uint32    { return binary.LittleEndian.Uint32(b[i*4:]) }
func put32(b []byte, i uint32, v uint32) { binary.LittleEndian.PutUint32(b[i*4:], v) }

// L1 returns the hardware first-level descriptor for va.
func (t *Table) L1(va uint32) L1 { return L1(get32(t.l1, l1Index(va))) }

// slot locates va's PTE: its table page and the entry's index among the
// page's 512 shadow entries (the hardware entry is 512 further on).
func (t *Table) slot(va uint32) (*[PageSize]byte, uint32) {
	i := l1Index(va)
	return t.pairs[i>>1], (i&1)*PTEsPerTable + va>>PageShift&(PTEsPerTable-1)
}

// PTE returns the software entry for va: 0 if nothing is mapped there.
// A section is not a PTE; see Section.
func (t *Table) PTE(va uint32) PTE {
	pg, e := t.slot(va)
	if pg == nil {
		return 0
	}
	return PTE(get32(pg[:], e))
}

// HardwarePTE returns the hardware descriptor beside va's PTE.
func (t *Table) HardwarePTE(va uint32) L2 {
	pg, e := t.slot(va)
	if pg == nil {
		return 0
	}
	return L2(get32(pg[:], e+2*PTEsPerTable))
}

// SmallPages is the number of small entries in use in va's section: 0
// means no table covers the section, for the purposes of a huge fault,
// even if the other section of the pair has one.
func (t *Table) SmallPages(va uint32) int {
	i := l1Index(va)
	if t.pairs[i>>1] == nil {
		return 0
	}
	return int(halfCount(*t.used(i >> 1), i&1))
}

// Populated reports whether va has a second-level table.
func (t *Table) Populated(va uint32) bool {
	pg, _ := t.slot(va)
	return pg != nil
}

// Populate makes sure va has a second-level table. mu is the lock the
// owner serialises the table with: held on entry and on return, it is
// dropped around the allocation, which may enter reclaim (and reclaim
// walks page tables). va must not lie in a section.
func (t *Table) Populate(va uint32, mu sync.Locker) error {
	if !InWindow(va) {
		return fmt.Errorf("pgtable: %#08x is outside the task window", va)
	}
	if t.Section(va) != 0 {
		return fmt.Errorf("pgtable: %#08x is mapped by a section", va)
	}
	if t.Populated(va) {
		return nil
	}
	mu.Unlock()
	f, err := t.pool.AllocPage(t.ctx)
	mu.Lock()
	if err != nil {
		return fmt.Errorf("pgtable: L2 table for %#08x: %w", va, err)
	}
	if t.Section(va) != 0 || t.Populated(va) { // someone else got there
		if perr := t.pool.Put(f); perr != nil {
			return perr
		}
		if t.Section(va) != 0 {
			return fmt.Errorf("pgtable: %#08x was mapped by a section meanwhile", va)
		}
		return nil
	}
	t.install(l1Index(va)>>1, f)
	return nil
}

// userTable is the L1 descriptor of a task's second-level table: the
// user domain, and PXN, which Linux/ARM sets on user page tables wherever
// the CPU implements it (user_pmd_table, arch/arm/mm/mmu.c) so that the
// kernel never executes task memory. Cortex-A7 implements it.
func userTable(pa uint32) L1 { return TableDesc(pa, UserDomain) | l1PXNTable }

func (t *Table) install(pair uint32, f phys.PFN) {
	b, err := t.pool.Frame(f)
	if err != nil {
		panic(err) // the pool just gave us this frame
	}
	t.pairs[pair], t.pfns[pair] = (*[PageSize]byte)(b), f
	t.pool.Page(f).Private = 0 // entries in use, per half: see used
	pa := uint32(f.Addr())
	for half := uint32(0); half < 2; half++ {
		if i := pair*2 + half; get32(t.sl1, i) == 0 {
			t.setL1(i, userTable(pa+hwOffset+half*tableHalf))
		}
	}
	t.pages++
}

// used counts the non-empty PTEs of each half of a table page, in the
// page descriptor's owner field (as Linux keeps page-table state in the
// table's struct page).
func (t *Table) used(pair uint32) *uint64 { return &t.pool.Page(t.pfns[pair]).Private }

func halfCount(u uint64, half uint32) uint64 { return u >> (half * 32) & 0xffffffff }

// Set writes va's PTE and the hardware entry derived from it. va's table
// must be populated. Setting the last PTE of a table page to none frees
// the page and clears its L1 descriptors.
func (t *Table) Set(va uint32, p PTE) {
	pg, e := t.slot(va)
	if pg == nil || get32(t.sl1, l1Index(va)) != 0 {
		panic(fmt.Sprintf("pgtable: set %#08x: no L2 table (Populate first), or a section there", va))
	}
	old := PTE(get32(pg[:], e))
	put32(pg[:], e, uint32(p))
	t.setL2(va, pg, e, p.HardwarePTE())
	if old.None() == p.None() {
		return
	}
	pair, half := l1Index(va)>>1, e/PTEsPerTable
	u := t.used(pair)
	if p.None() {
		*u -= 1 << (half * 32)
		if *u == 0 && !t.pairDeposited(pair) {
			t.release(pair)
		}
	} else {
		*u += 1 << (half * 32)
	}
}

// release frees an empty table page.
func (t *Table) release(pair uint32) {
	for half := uint32(0); half < 2; half++ {
		if i := pair*2 + half; L1(get32(t.l1, i)).Kind() == KindTable {
			t.setL1(i, 0)
		}
	}
	f := t.pfns[pair]
	t.pairs[pair], t.pfns[pair] = nil, 0
	t.pages--
	if err := t.pool.Put(f); err != nil {
		panic(fmt.Sprintf("pgtable: freeing table page: %v", err))
	}
}

// Section returns the software entry of va's section, 0 if none.
func (t *Table) Section(va uint32) PTE { return PTE(get32(t.sl1, l1Index(va))) }

// SetSection maps va's whole section with a huge PTE (p's address is the
// 1 MiB frame), or unmaps it when p is none. The section's half of any
// table page must be empty.
func (t *Table) SetSection(va uint32, p PTE) error {
	if !InWindow(va) {
		return fmt.Errorf("pgtable: %#08x is outside the task window", va)
	}
	i := l1Index(va)
	if pg := t.pairs[i>>1]; pg != nil && halfCount(*t.used(i >> 1), i&1) != 0 {
		return fmt.Errorf("pgtable: section at %#08x still has small pages", va&^(SectionSize-1))
	}
	if p.Present() && p.PA()&(SectionSize-1) != 0 {
		return fmt.Errorf("pgtable: huge PTE %v is not 1 MiB aligned", p)
	}
	put32(t.sl1, i, uint32(p))
	switch {
	case p.Present():
		t.setL1(i, p.HardwareSection(UserDomain))
	case p.None() && t.pairs[i>>1] != nil:
		t.setL1(i, userTable(uint32(t.pfns[i>>1].Addr())+hwOffset+(i&1)*tableHalf))
	default: // none, or a swapped-out huge page: a section fault
		t.setL1(i, 0)
	}
	return nil
}

// Range calls fn for every non-empty PTE in [start, end), in address
// order, skipping sections and unpopulated tables. fn may Set the PTE it
// is given (to none as well); it returns false to stop.
func (t *Table) Range(start, end uint32, fn func(va uint32, p PTE) bool) {
	start, end = max(start, WindowStart), min(end, WindowEnd)
	for va := start; va < end && va >= start; {
		pair := l1Index(va) >> 1
		next := WindowStart + (pair+1)<<(SectionShift+1)
		if next > end || next == 0 {
			next = end
		}
		for ; va < next; va += PageSize {
			pg := t.pairs[pair]
			if pg == nil {
				break
			}
			if va&(SectionSize-1) == 0 || va == start {
				// A half with no entry in use (a section's deposit, or
				// the empty side of a pair) is skipped whole.
				if halfCount(*t.used(pair), l1Index(va)&1) == 0 {
					va = (va | (SectionSize - 1)) - PageSize + 1
					continue
				}
			}
			e := (l1Index(va)&1)*PTEsPerTable + va>>PageShift&(PTEsPerTable-1)
			if p := PTE(get32(pg[:], e)); p != 0 && !fn(va, p) {
				return
			}
		}
		va = next
	}
}

// Destroy frees every frame of the table. The owner has already dropped
// whatever the entries referred to.
func (t *Table) Destroy() error {
	for pair := range t.pairs {
		if t.pairs[pair] != nil {
			t.release(uint32(pair))
		}
	}
	if t.tlb != nil {
		t.tlb.Destroyed(t)
	}
	err := t.pool.Put(t.root)
	t.l1, t.sl1, t.pages = nil, nil, 0
	t.deposited = [len(t.deposited)]uint64{}
	return err
}

// Check verifies the table's invariants: every hardware entry is the one
// derived from its software entry, every L1 descriptor points where the
// software thinks, and the per-page counts of entries in use are right.
func (t *Table) Check() error {
	for i := uint32(0); i < WindowSections; i++ {
		pair, half := i>>1, i&1
		va := WindowStart + i<<SectionShift
		sec := PTE(get32(t.sl1, i))
		var want L1
		switch {
		case sec != 0:
			want = sec.HardwareSection(UserDomain)
		case t.pairs[pair] != nil:
			want = userTable(uint32(t.pfns[pair].Addr()) + hwOffset + half*tableHalf)
		}
		if got := L1(get32(t.l1, i)); got != want {
			return fmt.Errorf("pgtable: L1 entry for %#08x is %v, want %v", va, got, want)
		}
		pg := t.pairs[pair]
		if t.Deposited(va) && pg == nil {
			return fmt.Errorf("pgtable: section at %#08x has a deposit but no table page", va)
		}
		if pg == nil {
			continue
		}
		var n uint64
		for e := half * PTEsPerTable; e < (half+1)*PTEsPerTable; e++ {
			p := PTE(get32(pg[:], e))
			hw := L2(get32(pg[:], e+2*PTEsPerTable))
			if hw != p.HardwarePTE() {
				return fmt.Errorf("pgtable: %#08x: hardware entry %v does not match %v", va+(e%PTEsPerTable)<<PageShift, hw, p)
			}
			if p != 0 {
				n++
			}
		}
		if sec != 0 && n != 0 {
			return fmt.Errorf("pgtable: section at %#08x also has %d small pages", va, n)
		}
		if got := halfCount(*t.used(pair), half); got != n {
			return fmt.Errorf("pgtable: table for %#08x counts %d entries, has %d", va, got, n)
		}
		if half == 1 && *t.used(pair) == 0 && !t.pairDeposited(pair) {
			return fmt.Errorf("pgtable: empty table page for %#08x was not freed", va)
		}
	}
	return nil
}

// Trim frees va's table page if no entry in it is in use and no section
// of the pair has it deposited: for a caller that populated a table and
// then could not fill it.
func (t *Table) Trim(va uint32) {
	if pair := l1Index(va) >> 1; t.pairs[pair] != nil && *t.used(pair) == 0 && !t.pairDeposited(pair) {
		t.release(pair)
	}
}

// Huge mappings and their deposited tables.
//
// A section that maps a huge page must be splittable into 256 small pages
// at any time, and splitting happens where nothing may allocate (inside
// reclaim, under the page-table lock). So, as Linux deposits a page table
// with every huge PMD (pgtable_trans_huge_deposit), the fault that maps a
// huge page first deposits its section: the pair's table page is made to
// exist and is kept while the mark stays. SplitSection consumes the
// deposit; Withdraw gives it back when the huge mapping goes away whole.
// At rest, the owner keeps a mark on exactly the sections it maps huge.

func (t *Table) depositBit(i uint32) (*uint64, uint64) { return &t.deposited[i/64], 1 << (i % 64) }

// Deposited reports whether va's section has a table page deposited.
func (t *Table) Deposited(va uint32) bool {
	w, b := t.depositBit(l1Index(va))
	return *w&b != 0
}

func (t *Table) pairDeposited(pair uint32) bool {
	w, b := t.depositBit(pair * 2)
	return *w&(b|b<<1) != 0
}

// Deposit sets a table page aside for splitting va's section later. mu is
// the owner's lock, dropped around the allocation as in Populate. The
// section must be empty, and is still empty on success; if a section was
// mapped there meanwhile, Deposit fails and changes nothing.
func (t *Table) Deposit(va uint32, mu sync.Locker) error {
	if !InWindow(va) {
		return fmt.Errorf("pgtable: %#08x is outside the task window", va)
	}
	if t.Section(va) != 0 {
		return fmt.Errorf("pgtable: deposit at %#08x: already a section", va)
	}
	if err := t.Populate(va, mu); err != nil {
		return err
	}
	w, b := t.depositBit(l1Index(va))
	*w |= b
	return nil
}

// Withdraw takes the deposit of va's section back, freeing the table page
// if nothing else keeps it (zap_huge_pmd's pte_free of the withdrawn
// table).
func (t *Table) Withdraw(va uint32) {
	w, b := t.depositBit(l1Index(va))
	*w &^= b
	t.Trim(va)
}

// SplitSection replaces va's huge mapping by 256 small ones in the table
// page deposited for it (__split_huge_pmd_locked): pte(i) is the entry of
// the section's i-th page, each present. It allocates nothing.
func (t *Table) SplitSection(va uint32, pte func(i uint32) PTE) error {
	i := l1Index(va)
	pg, pair, half := t.pairs[i>>1], i>>1, i&1
	switch {
	case !InWindow(va) || !t.Section(va).Present():
		return fmt.Errorf("pgtable: split at %#08x: no huge mapping", va)
	case !t.Deposited(va) || pg == nil:
		return fmt.Errorf("pgtable: split at %#08x: no table deposited", va)
	case halfCount(*t.used(pair), half) != 0:
		return fmt.Errorf("pgtable: split at %#08x: small pages beside the section", va)
	}
	var ptes [PTEsPerTable]PTE
	for k := range ptes {
		if ptes[k] = pte(uint32(k)); !ptes[k].Present() {
			return fmt.Errorf("pgtable: split at %#08x: entry %d is %v, not present", va, k, ptes[k])
		}
	}
	base := half * PTEsPerTable
	sva := va &^ (SectionSize - 1)
	for k, p := range ptes {
		put32(pg[:], base+uint32(k), uint32(p))
		t.setL2(sva+uint32(k)<<PageShift, pg, base+uint32(k), p.HardwarePTE())
	}
	*t.used(pair) += PTEsPerTable << (half * 32)
	w, b := t.depositBit(i)
	*w &^= b
	put32(t.sl1, i, 0)
	t.setL1(i, userTable(uint32(t.pfns[pair].Addr())+hwOffset+half*tableHalf))
	return nil
}

// RangeSections calls fn for every non-empty section entry in [start,
// end), with the section's base address, in address order. fn may change
// the entry it is given; it returns false to stop.
func (t *Table) RangeSections(start, end uint32, fn func(va uint32, p PTE) bool) {
	start, end = max(start, WindowStart), min(end, WindowEnd)
	if start >= end {
		return
	}
	for i := l1Index(start); i <= l1Index(end-1); i++ {
		if p := PTE(get32(t.sl1, i)); p != 0 && !fn(WindowStart+i<<SectionShift, p) {
			return
		}
	}
}
