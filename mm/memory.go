package mm

import (
	"errors"
	"sync"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// AddressSpace is one task's view of memory (Linux's mm_struct): its VMAs
// and its translation table for the task window. Memory is read and written
// through the software MMU (Read, Write), which faults and retries as a CPU
// would.
type AddressSpace struct {
	mgr *Manager
	pid int

	// mmapLock is mmap_lock: faults and reads/writes hold it for reading;
	// Mmap, Munmap, Mprotect, Fork and Exit for writing.
	mmapLock sync.RWMutex
	// ptl is the page-table lock (mm->page_table_lock): it covers the
	// table, the VMAs' anon_vma fields while a fault sets them, and exited.
	ptl sync.Mutex
	pt  *pgtable.Table

	vmas       itree[*VMA]
	head, tail *VMA
	nrVMAs     int

	// Under ptl, like exited: the counters Linux keeps in mm->rss_stat
	// and the task's fault counts.
	exited     bool
	zeroMapped int64 // PTEs mapping the zero page
	rss        int64 // anonymous pages mapped (MM_ANONPAGES)
	filerss    int64 // page cache pages mapped (MM_FILEPAGES)
	swapents   int64 // swap PTEs (MM_SWAPENTS)
	// hugeZeroMapped counts sections mapping the huge zero page.
	hugeZeroMapped int64
	minflt         int64 // faults resolved without I/O
	majflt         int64 // faults that read from swap

	// The OOM killer's mark, under ptl, and what it reported.
	oomKilled bool
	oomReport OOMKill
	oomDone   chan struct{}
}

// PID is the address space's process ID, the one /proc/PID would use.
func (as *AddressSpace) PID() int { return as.pid }

// Manager returns the Manager that made the address space.
func (as *AddressSpace) Manager() *Manager { return as.mgr }

// Faults returns the counts of minor and major faults resolved.
func (as *AddressSpace) Faults() (minor, major int64) {
	as.ptl.Lock()
	defer as.ptl.Unlock()
	return as.minflt, as.majflt
}

// VMAs returns a snapshot of the areas, in address order.
func (as *AddressSpace) VMAs() []VMAInfo {
	as.mmapLock.RLock()
	defer as.mmapLock.RUnlock()
	var out []VMAInfo
	for v := as.head; v != nil; v = v.next {
		out = append(out, VMAInfo{Start: v.start, End: v.end, Flags: v.flags, Pgoff: v.pgoff, Region: v.file})
	}
	return out
}

// VMAInfo describes one VMA.
type VMAInfo struct {
	Start, End uint32
	Flags      VMFlags
	Pgoff      uint32
	Region     *Region // the region mapped, nil for anonymous memory
}

const maxFaultRetries = 64

// Read copies memory at addr into buf through the software MMU.
func (as *AddressSpace) Read(addr uint32, buf []byte) error {
	return as.access(addr, buf, pgtable.AccessRead)
}

// Write copies data to memory at addr through the software MMU.
func (as *AddressSpace) Write(addr uint32, data []byte) error {
	return as.access(addr, data, pgtable.AccessWrite)
}

// access moves bytes a page at a time: translate with the table as the MMU
// would, and on a fault run the fault handler and try again. Bytes before
// a fault that cannot be resolved have been transferred, as with a CPU
// copy loop that takes a signal.
func (as *AddressSpace) access(addr uint32, buf []byte, acc pgtable.Access) error {
	as.mmapLock.RLock()
	defer as.mmapLock.RUnlock()
	if as.exited {
		return ErrExited
	}
	for done := 0; done < len(buf); {
		at := uint64(addr) + uint64(done)
		if at >= 1<<32 {
			return &FaultError{Addr: 0, Access: acc, Reason: MapError}
		}
		va := uint32(at)
		n := min(pgtable.PageSize-int(va%pgtable.PageSize), len(buf)-done)
		for try := 0; ; try++ {
			as.ptl.Lock()
			pa, fs := as.pt.Translate(va, acc, true)
			if fs == 0 {
				frame, err := as.mgr.frameAt(pa)
				if err == nil {
					off := pa % pgtable.PageSize
					if acc == pgtable.AccessWrite {
						copy(frame[off:], buf[done:done+n])
					} else {
						copy(buf[done:done+n], frame[off:])
					}
				}
				as.ptl.Unlock()
				if err != nil {
					return err
				}
				break
			}
			as.ptl.Unlock()
			if try == maxFaultRetries {
				return errorf("%v at %#08x: still faulting (%v) after %d faults handled", acc, va, fs, try)
			}
			if err := as.handleFault(va, acc); err != nil {
				return err
			}
		}
		done += n
	}
	return nil
}

// Translate is the MMU's verdict on a task access at addr as the tables
// stand, resolving no fault: the physical address, or the fault status a
// data abort would report (what ARMv7's ATS1CUR and ATS1CUW operations
// leave in PAR). It reads only the hardware descriptors, so tests can
// judge them against what they expect without trusting how mm derives
// them from its software entries.
func (as *AddressSpace) Translate(addr uint32, acc pgtable.Access) (pa uint32, fs pgtable.FaultStatus) {
	as.ptl.Lock()
	defer as.ptl.Unlock()
	if as.exited {
		return 0, pgtable.FSTranslationSection
	}
	return as.pt.Translate(addr, acc, true)
}

func (m *Manager) frameAt(pa uint32) ([]byte, error) {
	pfn, err := m.pool.PFNOf(uint64(pa))
	if err != nil {
		return nil, err
	}
	return m.pool.Frame(pfn)
}

// HandleFault resolves a fault at addr for an access, as the data abort
// handler would: it returns nil when the access can be retried, or a
// *FaultError saying why not.
func (as *AddressSpace) HandleFault(addr uint32, acc pgtable.Access) error {
	as.mmapLock.RLock()
	defer as.mmapLock.RUnlock()
	if as.exited {
		return ErrExited
	}
	return as.handleFault(addr, acc)
}

// handleFault is handle_mm_fault; the mmap lock is held for reading.
func (as *AddressSpace) handleFault(addr uint32, acc pgtable.Access) error {
	v := as.lookup(addr)
	if v == nil {
		return &FaultError{Addr: addr, Access: acc, Reason: MapError}
	}
	if !v.allows(acc) {
		return &FaultError{Addr: addr, Access: acc, Reason: AccessError}
	}
	va := addr &^ (pgtable.PageSize - 1)
	as.ptl.Lock()
	defer as.ptl.Unlock()
	var err error
	switch sec := as.pt.Section(va); {
	case sec != 0:
		err = as.hugePMDFault(v, va, sec, acc)
	case as.pt.SmallPages(va) == 0 && as.mgr.thpAllowed(v.flags) && v.thpSuitable(va):
		var done bool
		if done, err = as.doHugeAnonymousPage(v, va, acc); !done {
			err = as.handlePTEFault(v, va, acc)
		}
	default:
		err = as.handlePTEFault(v, va, acc)
	}
	if err != nil {
		var fe *FaultError
		if errors.As(err, &fe) {
			return err
		}
		return &FaultError{Addr: addr, Access: acc, Reason: OutOfMemory, Err: err}
	}
	as.minflt++ // the deferred unlock has not run yet
	return nil
}

// handlePTEFault is handle_pte_fault, with the page-table lock held.
func (as *AddressSpace) handlePTEFault(v *VMA, va uint32, acc pgtable.Access) error {
	pte := as.pt.PTE(va)
	switch {
	case pte.None() && v.file != nil:
		return as.doFileFault(v, va, acc)
	case pte.None() && acc == pgtable.AccessWrite:
		return as.doAnonymousPage(v, va)
	case pte.None():
		return as.mapZeroPage(v, va)
	case pte.IsSwap():
		return as.doSwapPage(v, va, pte, acc)
	case acc == pgtable.AccessWrite && !pte.Has(pgtable.Write):
		return as.doWPPage(v, va, pte)
	}
	// Only the software bits are missing: the first access to an old
	// page, or the first write to a clean one (handle_pte_fault's
	// pte_mkyoung and pte_mkdirty).
	want := pte | pgtable.Young
	if acc == pgtable.AccessWrite {
		want |= pgtable.Dirty
		if v.sharedFile() && !pte.Has(pgtable.Dirty) {
			// The first store since writeback cleaned the PTE: the
			// page is dirty before the store can happen.
			as.mgr.setPageDirty(as.mgr.pool.Page(phys.PFN(pte.PA() >> pgtable.PageShift)))
		}
	}
	if want != pte {
		as.pt.Set(va, want)
	}
	return nil
}

// newPage allocates a page for a fault with the page-table lock dropped
// (allocation may reclaim, and reclaim takes page-table locks).
func (as *AddressSpace) newPage(ctx phys.Context) (phys.PFN, error) {
	as.ptl.Unlock()
	pfn, err := as.mgr.pool.AllocPage(ctx)
	as.ptl.Lock()
	if err == nil && as.mgr.cfg.VerifyZeroed && ctx&phys.Zeroed != 0 {
		err = as.mgr.verifyZeroed(pfn)
	}
	return pfn, err
}

func (m *Manager) verifyZeroed(pfn phys.PFN) error {
	b, err := m.pool.Frame(pfn)
	if err != nil {
		return err
	}
	for i, c := range b {
		if c != 0 {
			m.pool.Put(pfn)
			return errorf("new page %v has byte %#02x at offset %d: not zeroed", pfn, c, i)
		}
	}
	return nil
}

// doAnonymousPage maps a new zeroed page for a write to an empty PTE.
func (as *AddressSpace) doAnonymousPage(v *VMA, va uint32) error {
	pfn, err := as.newPage(phys.User)
	if err != nil {
		return err
	}
	if err := as.pt.Populate(va, &as.ptl); err != nil {
		as.mgr.pool.Put(pfn)
		return err
	}
	if !as.pt.PTE(va).None() { // another fault got there: retry the access
		return as.mgr.pool.Put(pfn)
	}
	as.anonVMAPrepare(v)
	as.mgr.pageAddNewAnonRmap(pfn, v, va)
	as.mgr.lruAdd(pfn)
	as.rss++
	as.pt.Set(va, pgtable.MkPTE(uint32(pfn.Addr()), v.ptePerms()|pgtable.Young|pgtable.Dirty|pgtable.Write))
	return nil
}

// mapZeroPage maps the shared zero page read-only for a read of an empty
// PTE: untouched memory costs no page until it is written.
func (as *AddressSpace) mapZeroPage(v *VMA, va uint32) error {
	if err := as.pt.Populate(va, &as.ptl); err != nil {
		return err
	}
	if !as.pt.PTE(va).None() {
		return nil
	}
	as.pt.Set(va, pgtable.MkPTE(as.mgr.zeroPA, v.ptePerms()|pgtable.Young|pgtable.Special))
	as.zeroMapped++
	return nil
}

// doWPPage handles a write to a present PTE without write permission: the
// zero page, or a page shared copy-on-write. A page this mapping alone
// holds is made writable in place; anything else is copied (do_wp_page).
func (as *AddressSpace) doWPPage(v *VMA, va uint32, pte pgtable.PTE) error {
	if pte.Has(pgtable.Special) {
		return as.wpCopy(v, va, pte, 0)
	}
	pfn := phys.PFN(pte.PA() >> pgtable.PageShift)
	pg := as.mgr.pool.Page(pfn)
	if regionOf(pg) != nil {
		if v.sharedFile() {
			// wp_page_shared: the page itself becomes writable, and
			// dirty.
			as.mgr.setPageDirty(pg)
			as.pt.Set(va, pte|pgtable.Write|pgtable.Dirty|pgtable.Young)
			return nil
		}
		return as.wpCopy(v, va, pte, pfn) // a private mapping's copy
	}
	if pg.Compound() {
		// A frame of a compound page is always copied: the page may be
		// mapped in other frames, by this space or another (wp_can_reuse_anon_folio
		// before Linux 6.11 reuses no large folio either).
		return as.wpCopy(v, va, pte, pfn)
	}
	// Reuse needs the page lock, as page_move_anon_rmap does: an rmap walk
	// (which holds it) must not see Mapping change under it.
	// A swap cache page no swap PTE names any more gives its slot up
	// first (wp_can_reuse_anon_folio's folio_free_swap).
	if pg.MapCount() == 1 && !pg.TestAndSet(phys.PGLocked) {
		if pg.Test(phys.PGSwapCache) {
			as.mgr.folioFreeSwap(pfn)
		}
		reuse := pg.RefCount() == 1 && pg.MapCount() == 1
		if reuse {
			pg.Mapping = v.anonVMA
		}
		pg.Clear(phys.PGLocked)
		if reuse {
			as.pt.Set(va, pte|pgtable.Write|pgtable.Dirty|pgtable.Young)
			return nil
		}
	}
	return as.wpCopy(v, va, pte, pfn)
}

// wpCopy breaks COW: a new page, a copy of old (or zeroed, for the zero
// page, old == 0), mapped writable in place of pte.
func (as *AddressSpace) wpCopy(v *VMA, va uint32, pte pgtable.PTE, old phys.PFN) error {
	pool := as.mgr.pool
	ctx := phys.User
	if old != 0 {
		// Our PTE holds a reference, but the lock is about to be dropped.
		if err := pool.Get(old); err != nil {
			return err
		}
		defer pool.Put(old)
		ctx &^= phys.Zeroed // every byte is about to be copied over
	}
	pfn, err := as.newPage(ctx)
	if err != nil {
		return err
	}
	if old != 0 {
		dst, _ := pool.Frame(pfn)
		src, _ := pool.Frame(old)
		copy(dst, src)
	}
	if as.pt.PTE(va) != pte { // changed while unlocked: retry the access
		return pool.Put(pfn)
	}
	as.anonVMAPrepare(v)
	as.mgr.pageAddNewAnonRmap(pfn, v, va)
	as.mgr.lruAdd(pfn)
	as.pt.Set(va, pgtable.MkPTE(uint32(pfn.Addr()), v.ptePerms()|pgtable.Young|pgtable.Dirty|pgtable.Write))
	if old == 0 {
		as.zeroMapped--
		as.rss++
		return nil
	}
	if regionOf(pool.Page(old)) != nil {
		as.mgr.removeFileRmap(old)
		as.filerss--
		as.rss++
		return pool.Put(old) // the old PTE's reference
	}
	as.mgr.removeRmapPTE(old)
	as.mgr.freeSwapCache(old)
	return pool.Put(old) // the old PTE's reference
}

// doSwapPage brings a swapped-out page back (do_swap_page): from the swap
// cache if it is there, so that every PTE naming the slot maps the same
// page, else read from the device with its neighbours read ahead. It is
// mapped read-only: a write retries into doWPPage, which reuses it when
// nothing else holds it. A page read back without an anon_vma gets the
// root of the VMA's: it may be shared with any process of the fork tree.
// A read that fails fails this fault alone (VM_FAULT_SIGBUS).
func (as *AddressSpace) doSwapPage(v *VMA, va uint32, pte pgtable.PTE, acc pgtable.Access) error {
	m := as.mgr
	entry := pte.Swap()
	as.ptl.Unlock()
	pfn, major, err := m.swapin(entry)
	if err == nil {
		// The page lock comes before the page-table lock, as in reclaim,
		// which holds it while it walks the mappings.
		m.lockPage(pfn)
	}
	as.ptl.Lock()
	switch {
	case err == errSwapRace:
		return nil // the PTE changed: retry the access
	case err != nil && as.pt.PTE(va) != pte:
		return nil
	case err != nil:
		var ae *phys.AllocError
		if errors.As(err, &ae) {
			return err
		}
		return &FaultError{Addr: va, Access: acc, Reason: SwapError, Err: err}
	}
	pg := m.pool.Page(pfn)
	if as.pt.PTE(va) != pte || !pg.Test(phys.PGSwapCache) || pageSwapEntry(pg) != entry {
		// Changed while unlocked: retry the access.
		pg.Clear(phys.PGLocked)
		return m.pool.Put(pfn)
	}
	if anonVMAOf(pg) == nil {
		as.anonVMAPrepare(v)
		pg.Mapping = v.anonVMA.root
		pg.Index = v.linearIndex(va)
	}
	// The reference swapin took becomes the PTE's.
	m.addRmapPTE(pfn)
	as.pt.Set(va, pgtable.MkPTE(uint32(pfn.Addr()), v.ptePerms()|pgtable.Young))
	as.rss++
	as.swapents--
	m.swapFree(entry)
	if acc == pgtable.AccessWrite || m.swapFull() {
		m.folioFreeSwap(pfn) // should_try_to_free_swap
	}
	pg.Clear(phys.PGLocked)
	if major {
		as.majflt++
		m.vm.pgmajfault.Add(1)
	}
	return nil
}

// zap unmaps everything in [start, end) (zap_pmd_range and
// zap_pte_range): a section wholly inside goes at once, one that is only
// partly inside is split first; pages lose a mapping and a reference,
// swap slots a reference. The page-table lock is held; emptied table
// pages are freed as they empty.
func (as *AddressSpace) zap(start, end uint32) error {
	var firstErr error
	keep := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	as.pt.RangeSections(start, end, func(haddr uint32, sec pgtable.PTE) bool {
		switch {
		case !sec.Present():
		case haddr >= start && uint64(haddr)+pgtable.SectionSize <= uint64(end):
			keep(as.zapHugePMD(haddr, sec))
		default:
			as.splitHugePMD(haddr)
		}
		return true
	})
	pool := as.mgr.pool
	as.pt.Range(start, end, func(va uint32, pte pgtable.PTE) bool {
		switch {
		case pte.IsSwap():
			as.mgr.swapFree(pte.Swap())
			as.swapents--
		case pte.Has(pgtable.Special):
			as.zeroMapped--
		case regionOf(pool.Page(phys.PFN(pte.PA()>>pgtable.PageShift))) != nil:
			pfn := phys.PFN(pte.PA() >> pgtable.PageShift)
			if pte.Has(pgtable.Dirty) {
				as.mgr.setPageDirty(pool.Page(pfn))
			}
			as.mgr.removeFileRmap(pfn)
			as.filerss--
			keep(pool.Put(pfn))
		default:
			pfn := phys.PFN(pte.PA() >> pgtable.PageShift)
			as.mgr.removeRmapPTE(pfn)
			as.rss--
			as.mgr.freeSwapCache(pfn)
			keep(pool.Put(pfn))
		}
		as.pt.Set(va, 0)
		return true
	})
	return firstErr
}

// FollowPage returns the anonymous page mapped at addr with a reference
// taken for the caller, who drops it with Put (follow_page with FOLL_GET).
// The zero page, swap entries and unmapped addresses give false.
func (as *AddressSpace) FollowPage(addr uint32) (phys.PFN, bool) {
	as.ptl.Lock()
	defer as.ptl.Unlock()
	if as.exited || !pgtable.InWindow(addr) {
		return 0, false
	}
	pte := as.pt.PTE(addr &^ pageMask)
	if sec := as.pt.Section(addr); sec.Present() {
		pte = pgtable.MkPTE(sec.PA()+addr&hugeMask&^pageMask, sec.Flags())
	}
	if !pte.Present() || pte.Has(pgtable.Special) {
		return 0, false
	}
	pfn := phys.PFN(pte.PA() >> pgtable.PageShift)
	return pfn, as.mgr.pool.Get(pfn) == nil
}
