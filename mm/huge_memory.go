package mm

import (
	"errors"
	"fmt"
	"sync/atomic"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// Transparent huge pages on 1 MiB sections (Linux's mm/huge_memory.c).
//
// A huge page is an order-8 compound page mapped by one section entry:
// the software section PTE (pgtable.Table.Section) holds Present, Young,
// Dirty, Write, User, Exec, NoAccess and Special exactly as a small PTE
// does, and the hardware section is derived from it the same way, so the
// dirty and young emulation works on sections unchanged. 32-bit Linux
// cannot do this without LPAE: a short-descriptor section has no room for
// the software bits (arch/arm/include/asm/pgtable-2level.h), and yolk keeps
// them in a shadow L1 table beside the hardware one.
//
// Map counts follow Linux's folios. A section mapping counts in the
// compound page's entire map count; a small mapping of one of its frames
// counts in that frame's own map count; phys.LargeCounts also keeps how
// many frames are mapped small, plus EntirelyMapped while any section
// maps it, which is what AnonPages counts. Every mapping, huge or small,
// holds one reference on the compound page.
//
// A section is split into 256 small PTEs (split_huge_pmd) when part of it
// is unmapped, protected or advised, when a shared one is written, and by
// reclaim; the table page it needs was deposited when it was mapped, so a
// split never allocates. The compound page itself is split into 256
// independent frames (split_huge_page) only when needed: a partly
// unmapped one waits on the deferred-split queue, and reclaim, or
// DeferredSplitScan, splits it and frees the frames no one maps.

// THPMode is /sys/kernel/mm/transparent_hugepage/enabled.
type THPMode int32

const (
	// THPAlways: any anonymous area may take huge pages, unless
	// MADV_NOHUGEPAGE. The zero value, Linux's Kconfig default.
	THPAlways THPMode = iota
	// THPMadvise: only areas advised with MADV_HUGEPAGE.
	THPMadvise
	// THPNever: no huge faults.
	THPNever
)

var thpModeNames = [...]string{"always", "madvise", "never"}

func (t THPMode) String() string {
	if t < 0 || int(t) >= len(thpModeNames) {
		return fmt.Sprintf("THPMode(%d)", int32(t))
	}
	return thpModeNames[t]
}

// ParseTHPMode reads a mode as written to the sysfs file.
func ParseTHPMode(s string) (THPMode, error) {
	for i, n := range thpModeNames {
		if s == n {
			return THPMode(i), nil
		}
	}
	return 0, fmt.Errorf("mm: transparent_hugepage/enabled: %q is not always, madvise or never", s)
}

// SetTHPEnabled changes the global policy; faults from then on follow it.
func (m *Manager) SetTHPEnabled(t THPMode) error {
	if t < THPAlways || t > THPNever {
		return errorf("transparent_hugepage/enabled: no mode %d", int32(t))
	}
	m.thpMode.Store(int32(t))
	return nil
}

// THPEnabled is the global policy.
func (m *Manager) THPEnabled() THPMode { return THPMode(m.thpMode.Load()) }

// THPEnabledFile is what reading the sysfs file shows: every mode, the
// current one in brackets ("always [madvise] never").
func (m *Manager) THPEnabledFile() string {
	cur := m.THPEnabled()
	s := ""
	for i, n := range thpModeNames {
		if i > 0 {
			s += " "
		}
		if THPMode(i) == cur {
			n = "[" + n + "]"
		}
		s += n
	}
	return s
}

const (
	hugeNr   = pgtable.PTEsPerTable // frames in a huge page
	hugeMask = pgtable.SectionSize - 1
)

// thpStats are the THP and lazy-free events of /proc/vmstat.
type thpStats struct {
	faultAlloc, faultFallback            atomic.Uint64
	splitPMD, splitPage, splitPageFailed atomic.Uint64
	zeroPageAlloc, zeroPageAllocFailed   atomic.Uint64
	deferredSplitPage                    atomic.Uint64
	lazyfree, lazyfreed                  atomic.Uint64
	nrAnonTHPs                           atomic.Int64 // NR_ANON_THPS: compound pages mapped whole
}

// thpAllowed is __thp_vma_allowable_orders for an anonymous area: the
// area's advice and the global policy.
func (m *Manager) thpAllowed(flags VMFlags) bool {
	if flags&VMNoHugepage != 0 {
		return false
	}
	switch m.THPEnabled() {
	case THPAlways:
		return true
	case THPMadvise:
		return flags&VMHugepage != 0
	}
	return false
}

// thpSuitable is thp_vma_suitable_order: the aligned section around addr
// lies inside v, and v's page offsets are aligned the same way, so one
// compound page's Index is linear in it. Region mappings take no huge
// pages: their page cache is of small pages.
func (v *VMA) thpSuitable(addr uint32) bool {
	haddr := addr &^ hugeMask
	return v.file == nil && haddr >= v.start && uint64(haddr)+pgtable.SectionSize <= uint64(v.end) &&
		(v.start>>pgtable.PageShift-v.pgoff)%hugeNr == 0
}

// thpEligible is smaps' THPeligible: could a fault in v take a huge page
// somewhere (the highest section that fits is checked, as Linux does)?
func (m *Manager) thpEligible(v *VMA) bool {
	if !m.thpAllowed(v.flags) || v.end-v.start < pgtable.SectionSize {
		return false
	}
	return v.thpSuitable(v.end - pgtable.SectionSize)
}

// hugeFaultCtx is how a huge fault allocates: a movable zeroed compound
// page, taken only if one is free without reclaim (Linux's
// GFP_TRANSHUGE_LIGHT, the default defrag setting for a fault in an area
// not advised MADV_HUGEPAGE); otherwise the fault falls back to small
// pages.
const hugeFaultCtx = phys.MovableAlloc | phys.Zeroed | phys.Compound

// hugeZeroPage returns the huge zero page's physical address, making it
// on first use (mm_get_huge_zero_folio). It may allocate: no page-table
// lock is held.
func (m *Manager) hugeZeroPage() (uint32, error) {
	m.hugeZeroMu.Lock()
	defer m.hugeZeroMu.Unlock()
	if pa := m.hugeZeroPA.Load(); pa != 0 {
		return pa, nil
	}
	pfn, err := m.pool.Alloc(phys.HugeOrder, phys.Zeroed|phys.Compound)
	if err != nil {
		m.thp.zeroPageAllocFailed.Add(1)
		return 0, err
	}
	m.pool.Page(pfn).Set(phys.PGReserved)
	m.hugeZeroPFN = pfn
	m.hugeZeroPA.Store(uint32(pfn.Addr()))
	m.thp.zeroPageAlloc.Add(1)
	return uint32(pfn.Addr()), nil
}

// HugeZeroPage is the huge zero page's first frame, if it has been made.
func (m *Manager) HugeZeroPage() (phys.PFN, bool) {
	if m.hugeZeroPA.Load() == 0 {
		return 0, false
	}
	return phys.PFN(m.hugeZeroPA.Load() >> pgtable.PageShift), true
}

// isHugeZero reports whether a section entry maps the huge zero page.
func isHugeZero(sec pgtable.PTE) bool { return sec.Has(pgtable.Special) }

// doHugeAnonymousPage is do_huge_pmd_anonymous_page: a fault in an empty
// section that v covers whole. It reports false, having changed nothing,
// when the fault should be served with small pages instead. The
// page-table lock is held, and dropped around allocations.
func (as *AddressSpace) doHugeAnonymousPage(v *VMA, va uint32, acc pgtable.Access) (bool, error) {
	m := as.mgr
	haddr := va &^ hugeMask
	if acc != pgtable.AccessWrite {
		as.ptl.Unlock()
		zpa, err := m.hugeZeroPage()
		as.ptl.Lock()
		if err != nil {
			return false, nil // small zero pages instead
		}
		if err := as.deposit(haddr); err != nil {
			return true, nil // mapped meanwhile, or no table page: retry
		}
		if !as.hugeFaultStillWanted(haddr) {
			as.pt.Withdraw(haddr)
			return true, nil
		}
		as.setSection(haddr, pgtable.MkPTE(zpa, v.ptePerms()|pgtable.Young|pgtable.Special))
		as.hugeZeroMapped++
		return true, nil
	}
	as.ptl.Unlock()
	pfn, err := m.pool.Alloc(phys.HugeOrder, hugeFaultCtx)
	as.ptl.Lock()
	if err != nil {
		m.thp.faultFallback.Add(1)
		return false, nil
	}
	if m.cfg.VerifyZeroed {
		if err := m.verifyZeroedBlock(pfn, phys.HugeOrder); err != nil {
			return true, err
		}
	}
	if err := as.deposit(haddr); err != nil {
		return true, m.pool.Put(pfn)
	}
	if !as.hugeFaultStillWanted(haddr) {
		as.pt.Withdraw(haddr)
		return true, m.pool.Put(pfn)
	}
	as.mapNewHugePage(v, haddr, pfn)
	return true, nil
}

// mapNewHugePage maps a new, zeroed compound page at haddr, writable and
// dirty, exclusively this mapping's (the end of
// __do_huge_pmd_anonymous_page), with the page-table lock held.
func (as *AddressSpace) mapNewHugePage(v *VMA, haddr uint32, pfn phys.PFN) {
	m := as.mgr
	as.anonVMAPrepare(v)
	pg := m.pool.Page(pfn)
	pg.Mapping = v.anonVMA
	pg.Index = v.linearIndex(haddr)
	pg.Set(phys.PGSwapBacked | phys.PGUptodate)
	m.addRmapPMD(pfn)
	m.lruAdd(pfn)
	as.rss += hugeNr
	as.setSection(haddr, pgtable.MkPTE(uint32(pfn.Addr()), v.ptePerms()|pgtable.Young|pgtable.Dirty|pgtable.Write))
	m.thp.faultAlloc.Add(1)
}

// deposit puts a table page aside for haddr's section (the lock dance is
// Table.Deposit's).
func (as *AddressSpace) deposit(haddr uint32) error { return as.pt.Deposit(haddr, &as.ptl) }

// hugeFaultStillWanted: after the lock was dropped, the section is still
// empty and no small page has appeared in it.
func (as *AddressSpace) hugeFaultStillWanted(haddr uint32) bool {
	return as.pt.Section(haddr) == 0 && as.pt.SmallPages(haddr) == 0
}

// setSection writes a section entry; the address is always a valid
// section of the window here.
func (as *AddressSpace) setSection(haddr uint32, p pgtable.PTE) {
	if err := as.pt.SetSection(haddr, p); err != nil {
		panic(fmt.Sprintf("mm: %v", err)) // mm's own bookkeeping is broken
	}
}

// hugePMDFault handles a fault on a mapped section: the young and dirty
// emulation, or a write to a write-protected one (do_huge_pmd_wp_page).
func (as *AddressSpace) hugePMDFault(v *VMA, va uint32, sec pgtable.PTE, acc pgtable.Access) error {
	haddr := va &^ hugeMask
	if acc == pgtable.AccessWrite && !sec.Has(pgtable.Write) {
		return as.doHugeWPPage(v, haddr, sec)
	}
	want := sec | pgtable.Young
	if acc == pgtable.AccessWrite {
		want |= pgtable.Dirty
	}
	if want != sec {
		as.setSection(haddr, want)
	}
	return nil
}

// doHugeWPPage: a write to a write-protected section. The huge zero page
// is replaced by a new huge page if one is free, else split into small
// zero pages for the small-page fault to copy. A compound page this
// mapping alone holds is made writable in place; a shared one has its
// mapping split, and the retried access copies the one small page
// written (Linux since 5.8).
func (as *AddressSpace) doHugeWPPage(v *VMA, haddr uint32, sec pgtable.PTE) error {
	m := as.mgr
	if isHugeZero(sec) {
		as.ptl.Unlock()
		pfn, err := m.pool.Alloc(phys.HugeOrder, hugeFaultCtx)
		as.ptl.Lock()
		if err != nil {
			m.thp.faultFallback.Add(1)
			if as.pt.Section(haddr) == sec {
				as.splitHugePMD(haddr)
			}
			return nil
		}
		if m.cfg.VerifyZeroed {
			if err := m.verifyZeroedBlock(pfn, phys.HugeOrder); err != nil {
				return err
			}
		}
		if as.pt.Section(haddr) != sec {
			return m.pool.Put(pfn)
		}
		as.hugeZeroMapped--
		as.mapNewHugePage(v, haddr, pfn)
		return nil
	}
	pfn := phys.PFN(sec.PA() >> pgtable.PageShift)
	pg := m.pool.Page(pfn)
	lc, _ := m.pool.LargeCounts(pfn)
	exclusive := func() bool {
		return pg.RefCount() == 1 && lc.Entire() == 1 && lc.PagesMapped() == phys.EntirelyMapped
	}
	if exclusive() && !pg.TestAndSet(phys.PGLocked) {
		reuse := exclusive()
		if reuse {
			pg.Mapping = v.anonVMA
		}
		pg.Clear(phys.PGLocked)
		if reuse {
			as.setSection(haddr, sec|pgtable.Write|pgtable.Dirty|pgtable.Young)
			return nil
		}
	}
	as.splitHugePMD(haddr)
	return nil
}

// splitHugePMD replaces the section mapping at haddr with 256 small PTEs
// in its deposited table (__split_huge_pmd_locked), with the page-table
// lock held. Each PTE has the section's permissions, Write as the section,
// and Young and Dirty only if the section had them: a clean subpage of a
// writable section still takes a fault on its first write, so a page
// freed lazily stays freeable page by page (seed 003).
func (as *AddressSpace) splitHugePMD(haddr uint32) {
	m := as.mgr
	sec := as.pt.Section(haddr)
	if !sec.Present() {
		return
	}
	keep := sec.Flags() & (pgtable.Young | pgtable.Dirty | pgtable.Write | pgtable.User | pgtable.Exec | pgtable.NoAccess)
	var err error
	if isHugeZero(sec) {
		err = as.pt.SplitSection(haddr, func(uint32) pgtable.PTE {
			return pgtable.MkPTE(m.zeroPA, keep&^(pgtable.Write|pgtable.Dirty)|pgtable.Young|pgtable.Special)
		})
		if err == nil {
			as.hugeZeroMapped--
			as.zeroMapped += hugeNr
		}
	} else {
		head := phys.PFN(sec.PA() >> pgtable.PageShift)
		// The section's reference becomes the first PTE's; the other 255
		// take one each.
		if err = m.pool.GetRefs(head, hugeNr-1); err == nil {
			for i := phys.PFN(0); i < hugeNr; i++ {
				m.addRmapPTE(head + i)
			}
			err = as.pt.SplitSection(haddr, func(i uint32) pgtable.PTE {
				return pgtable.MkPTE(sec.PA()+i<<pgtable.PageShift, keep)
			})
			m.removeRmapPMD(head)
		}
	}
	if err != nil {
		panic(fmt.Sprintf("mm: split of %#08x in pid %d: %v", haddr, as.pid, err)) // the deposit is gone: bookkeeping broken
	}
	m.thp.splitPMD.Add(1)
}

// splitHugePMDAt splits the section that straddles addr, the new edge of
// an area (vma_adjust_trans_huge). The page-table lock is not held.
func (as *AddressSpace) splitHugePMDAt(addr uint32) {
	if addr&hugeMask == 0 {
		return
	}
	as.ptl.Lock()
	if as.pt.Section(addr).Present() {
		as.splitHugePMD(addr &^ hugeMask)
	}
	as.ptl.Unlock()
}

// zapHugePMD unmaps a whole section (zap_huge_pmd), with the page-table
// lock held, and withdraws its deposit.
func (as *AddressSpace) zapHugePMD(haddr uint32, sec pgtable.PTE) error {
	m := as.mgr
	as.setSection(haddr, 0)
	as.pt.Withdraw(haddr)
	if isHugeZero(sec) {
		as.hugeZeroMapped--
		return nil
	}
	head := phys.PFN(sec.PA() >> pgtable.PageShift)
	m.removeRmapPMD(head)
	as.rss -= hugeNr
	return m.pool.Put(head)
}

// Large-folio rmap accounting (folio_add_rmap_pmd and friends). A frame
// counts in AnonPages while some PTE maps it or some section maps its
// compound page whole; PagesMapped's EntirelyMapped bit tells the two
// apart without a lock, as Linux's _nr_pages_mapped does.

// addRmapPMD accounts a new section mapping of the compound page at head.
func (m *Manager) addRmapPMD(head phys.PFN) {
	lc, _ := m.pool.LargeCounts(head)
	if lc.AddEntire(1) != 1 {
		return
	}
	nr := lc.AddPagesMapped(phys.EntirelyMapped)
	if nr < 2*phys.EntirelyMapped {
		m.nrAnonPages.Add(int64(hugeNr - nr&(phys.EntirelyMapped-1)))
	}
	m.thp.nrAnonTHPs.Add(1)
}

// removeRmapPMD drops a section mapping of the compound page at head; if
// it was the last and some frames stay mapped small, the page is now
// partly mapped and goes on the deferred split queue.
func (m *Manager) removeRmapPMD(head phys.PFN) {
	lc, _ := m.pool.LargeCounts(head)
	if lc.AddEntire(-1) != 0 {
		return
	}
	nr := lc.AddPagesMapped(-phys.EntirelyMapped)
	if nr < phys.EntirelyMapped {
		m.nrAnonPages.Add(-int64(hugeNr - nr))
	}
	m.thp.nrAnonTHPs.Add(-1)
	if nr > 0 && nr < hugeNr {
		m.deferredSplit(head)
	}
}

// addRmapPTE accounts one more PTE mapping the frame pfn, which already
// has an anon_vma (fork, a split).
func (m *Manager) addRmapPTE(pfn phys.PFN) {
	if m.pool.Page(pfn).IncMapCount() != 1 {
		return
	}
	head := m.pool.CompoundHead(pfn)
	if lc, large := m.pool.LargeCounts(head); large {
		if lc.AddPagesMapped(1) >= phys.EntirelyMapped {
			return
		}
	}
	m.nrAnonPages.Add(1)
}

// removeRmapPTE drops one PTE mapping of the frame pfn. A compound page
// left mapped in part (by small PTEs only) goes on the deferred split
// queue; one left unmapped leaves it.
func (m *Manager) removeRmapPTE(pfn phys.PFN) {
	if m.pool.Page(pfn).DecMapCount() != 0 {
		return
	}
	head := m.pool.CompoundHead(pfn)
	lc, large := m.pool.LargeCounts(head)
	if !large {
		m.nrAnonPages.Add(-1)
		return
	}
	nr := lc.AddPagesMapped(-1)
	switch {
	case nr >= phys.EntirelyMapped:
		// Mapped whole elsewhere: still counted, and not partly
		// mapped (Linux queues nothing here either).
	case nr == 0:
		m.nrAnonPages.Add(-1)
		m.undeferSplit(head)
	default:
		m.nrAnonPages.Add(-1)
		m.deferredSplit(head)
	}
}

// folioMapCount is folio_mapcount: every mapping of the page's compound
// page (or of the page itself).
func (m *Manager) folioMapCount(head phys.PFN) int32 {
	lc, large := m.pool.LargeCounts(head)
	if !large {
		return m.pool.Page(head).MapCount()
	}
	n := lc.Entire()
	for i := phys.PFN(0); i < hugeNr; i++ {
		n += m.pool.Page(head + i).MapCount()
	}
	return n
}

// The deferred split queue (deferred_split_folio): compound pages mapped
// only in part, whose unmapped frames a split would free. A page is
// queued while it is partly mapped and leaves when its last mapping goes,
// under deferredMu, before the reference that mapping held is dropped:
// so a queued page always has a reference, and the scan may take one.

func (m *Manager) deferredSplit(head phys.PFN) {
	m.deferredMu.Lock()
	if _, ok := m.deferred[head]; !ok {
		m.deferred[head] = struct{}{}
		m.thp.deferredSplitPage.Add(1)
	}
	m.deferredMu.Unlock()
}

func (m *Manager) undeferSplit(head phys.PFN) {
	m.deferredMu.Lock()
	delete(m.deferred, head)
	m.deferredMu.Unlock()
}

// DeferredSplitScan splits up to n compound pages of the deferred split
// queue (deferred_split_scan, the shrinker reclaim runs) and returns how
// many it split; each split frees the frames no one maps. Pages that are
// locked or held by someone else stay queued.
func (m *Manager) DeferredSplitScan(n int) int {
	var picked []phys.PFN
	m.deferredMu.Lock()
	for head := range m.deferred {
		if len(picked) == n {
			break
		}
		if m.pool.Get(head) == nil {
			picked = append(picked, head)
		}
	}
	m.deferredMu.Unlock()
	split := 0
	for _, head := range picked {
		pg := m.pool.Page(head)
		if !pg.TestAndSet(phys.PGLocked) {
			switch {
			case !m.partlyMapped(head):
				m.undeferSplit(head) // mapped whole again, or gone
			case m.SplitHugePage(head) == nil:
				split++
			}
			pg.Clear(phys.PGLocked)
		}
		m.pool.Put(head)
	}
	return split
}

// partlyMapped: still a compound page, mapped by no section, and with
// some frames mapped by none (folio_test_partially_mapped).
func (m *Manager) partlyMapped(head phys.PFN) bool {
	lc, large := m.pool.LargeCounts(head)
	if !large || lc.Entire() != 0 {
		return false
	}
	n := lc.PagesMapped()
	return n > 0 && n < hugeNr
}

// SplitHugePage splits the compound page holding the frame pfn into
// independent frames (split_huge_page): every section mapping of it is
// split first, then the page itself, which fails if anyone but its
// mappings and the caller holds a reference. The caller holds the page
// lock on the head and one reference, taken through pfn, and no
// page-table lock; afterwards the lock and the reference are on pfn's own
// frame, and every frame no one maps is freed. A page that is not
// compound is left alone.
//
// Linux freezes the reference count of a page it splits, after unmapping
// it everywhere. Here the mappings stay, so the split holds the
// page-table lock of every space that may map the page instead: no
// mapping can come or go, and no reference can be taken through one (a
// fault, fork, zap, follow_page and an rmap walk all take it), so the
// count the split checks cannot move while it rewrites the frames. The
// locks are only tried, in no particular order, and the split fails
// (busy) if one is taken: waiting for them could deadlock.
func (m *Manager) SplitHugePage(pfn phys.PFN) error {
	_, err := m.splitHugePage(pfn, nil)
	return err
}

// splitHugePage is SplitHugePage. With a list, the caller is reclaim and
// has the page isolated: the frames that survive, but for pfn's, are
// appended to the list, each with a reference and still counted as
// isolated (split_folio_to_list), instead of going on the LRU; it
// returns how many.
func (m *Manager) splitHugePage(pfn phys.PFN, list *[]phys.PFN) (int, error) {
	head := m.pool.CompoundHead(pfn)
	if _, large := m.pool.LargeCounts(head); !large {
		return 0, nil
	}
	if !m.pool.Page(head).Test(phys.PGLocked) {
		return 0, errorf("split_huge_page: %v must be locked by the caller", head)
	}
	var stack [16]rmapCand
	for _, c := range m.rmapCandidates(head, hugeNr, stack[:0]) {
		as := c.as
		as.ptl.Lock()
		if !as.exited && c.from == c.base && c.to-c.from == pgtable.SectionSize {
			if sec := as.pt.Section(c.base); sec.Present() && sec.PA() == uint32(head.Addr()) {
				as.splitHugePMD(c.base)
			}
		}
		as.ptl.Unlock()
	}
	unlock, ok := m.lockMappers(head)
	if !ok {
		m.thp.splitPageFailed.Add(1)
		return 0, fmt.Errorf("mm: split_huge_page: %v: a page-table lock is taken: %w", head, ErrBusy)
	}
	// Which frames survive is decided now: with every mapper's lock
	// held no mapping of them can come or go, and the split frees the
	// others at once, to be reused by any space (whose lock we do not
	// hold) before the loop below runs.
	var mapped [hugeNr]bool
	maps := int32(0)
	for k := range mapped {
		n := m.pool.Page(head + phys.PFN(k)).MapCount()
		mapped[k], maps = n > 0, maps+n
	}
	// The page comes off its list for the split, and every frame that
	// survives it goes on one (lru_add_split_folio), the caller's frame
	// only if the page was on one: reclaim splits a page it isolated.
	// A page on no list with more references than its mappings and the
	// caller's may be isolated by someone else, who would put it back
	// whole, uncounted by the split, between this look and phys's count
	// of the references: Linux's split freezes the count before it looks
	// at the LRU; here the split is refused as busy, as phys would
	// refuse it for the extra reference.
	m.lru.mu.Lock()
	hp := m.pool.Page(head)
	onLRU := hp.Test(phys.PGLRU)
	switch {
	case onLRU:
		m.lruUnlink(head, hp)
		hp.Clear(phys.PGLRU)
	case hp.RefCount() != maps+1:
		m.lru.mu.Unlock()
		unlock()
		m.thp.splitPageFailed.Add(1)
		return 0, fmt.Errorf("mm: split_huge_page: %v is off the LRU with %d references for %d mappings and the caller's: %w",
			head, hp.RefCount(), maps, ErrBusy)
	}
	m.lru.mu.Unlock()
	m.deferredMu.Lock()
	err := m.pool.SplitCompound(pfn, 1)
	if err == nil {
		delete(m.deferred, head)
	}
	m.deferredMu.Unlock()
	appended := 0
	m.lru.mu.Lock()
	switch {
	case err != nil && onLRU:
		m.lruLink(head, hp, false)
	case err == nil:
		for f := head; f < head+hugeNr; f++ {
			pg := m.pool.Page(f)
			switch {
			case f == pfn && onLRU:
				m.lruLink(f, pg, false)
			case f == pfn || !mapped[f-head]:
			case list != nil:
				m.pool.Get(f) // mapped, so it has references
				*list = append(*list, f)
				appended++
			default:
				m.lruLink(f, pg, false)
			}
		}
	}
	m.lru.mu.Unlock()
	unlock()
	if err != nil {
		m.thp.splitPageFailed.Add(1)
		if errors.Is(err, phys.ErrExtraRefs) {
			err = fmt.Errorf("mm: split_huge_page: %w (%w)", ErrBusy, err)
		}
		return 0, err
	}
	m.thp.splitPage.Add(1)
	return appended, nil
}

// lockMappers try-locks the page-table lock of every space that may map
// the compound page at head, and checks, with them held, that the list
// did not grow meanwhile (a fork copies mappings only under the parent's
// lock, which is then held). It returns the unlock, or false with nothing
// held.
func (m *Manager) lockMappers(head phys.PFN) (func(), bool) {
	var locked []*AddressSpace
	unlock := func() {
		for _, as := range locked {
			as.ptl.Unlock()
		}
	}
	has := func(as *AddressSpace) bool {
		for _, l := range locked {
			if l == as {
				return true
			}
		}
		return false
	}
	var stack [16]rmapCand
	for _, c := range m.rmapCandidates(head, hugeNr, stack[:0]) {
		if has(c.as) {
			continue
		}
		if !c.as.ptl.TryLock() {
			unlock()
			return nil, false
		}
		locked = append(locked, c.as)
	}
	for _, c := range m.rmapCandidates(head, hugeNr, stack[:0]) {
		if !has(c.as) {
			unlock()
			return nil, false
		}
	}
	return unlock, true
}

func (m *Manager) verifyZeroedBlock(pfn phys.PFN, order int) error {
	b, err := m.pool.Block(pfn, order)
	if err != nil {
		return err
	}
	for i, c := range b {
		if c != 0 {
			m.pool.Put(pfn)
			return errorf("new page %v (order %d) has byte %#02x at offset %d: not zeroed", pfn, order, c, i)
		}
	}
	return nil
}
