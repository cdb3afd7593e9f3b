package mm

import (
	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// Advice values, with Linux's numbers.
type Advice int

const (
	MadvNormal     Advice = 0
	MadvDontneed   Advice = 4
	MadvFree       Advice = 8
	MadvDontfork   Advice = 10
	MadvDofork     Advice = 11
	MadvHugepage   Advice = 14
	MadvNohugepage Advice = 15
	MadvCold       Advice = 20
	MadvPageout    Advice = 21
)

// Madvise gives advice about [addr, addr+length) (madvise(2)):
//
//   - MadvDontneed drops the range's pages now; the next access sees
//     zeroes, as with private anonymous memory on Linux.
//   - MadvDontfork and MadvDofork set and clear VM_DONTCOPY: whether fork
//     copies the area into the child.
//   - MadvFree frees the range's pages lazily (seed 003): they stay mapped
//     and keep their data, but reclaim may discard them instead of
//     swapping them, unless they are written again first; a read then
//     sees either the old data or, once discarded, zeroes. A huge page
//     wholly in the range stays whole. A region mapping, shared or
//     private, is ErrInvalid (EINVAL), as a file mapping is on Linux.
//   - MadvHugepage and MadvNohugepage set VM_HUGEPAGE or VM_NOHUGEPAGE:
//     whether faults may take huge pages under the "madvise" policy, or
//     never.
//   - MadvCold deactivates the range's pages: they go to the inactive
//     list, young bits cleared, to be reclaimed before other memory
//     (Linux 5.4).
//   - MadvPageout reclaims the range's pages now, as reclaim would but
//     ignoring their references: swapped out (the writes are started
//     and waited for, briefly), or dropped if lazily freed (Linux 5.4).
//     Like Linux, both skip pages mapped by other spaces too, and huge
//     pages the range covers only in part.
//   - MadvNormal changes nothing here (it clears the read-ahead hints
//     VM_SEQ_READ and VM_RAND_READ, which no area has).
//
// Mapped parts of the range are advised even if the range has holes, and
// the holes make the call return ErrNotMapped (ENOMEM), as on Linux.
func (as *AddressSpace) Madvise(addr, length uint32, advice Advice) error {
	if addr&pageMask != 0 {
		return ErrInvalid
	}
	size, ok := pageAlignLen(length)
	if !ok {
		return ErrInvalid
	}
	switch advice {
	case MadvDontneed:
		return as.dontneed(addr, size)
	case MadvFree:
		return as.free(addr, size)
	case MadvCold, MadvPageout:
		return as.coldOrPageout(addr, size, advice == MadvPageout)
	case MadvNormal, MadvDontfork, MadvDofork, MadvHugepage, MadvNohugepage:
		if size == 0 {
			return nil
		}
		as.mmapLock.Lock()
		defer as.mmapLock.Unlock()
		if as.exited {
			return ErrExited
		}
		return as.modifyFlags(addr, size, false, func(v *VMA) VMFlags {
			switch advice {
			case MadvDontfork:
				return v.flags | VMDontCopy
			case MadvDofork:
				return v.flags &^ VMDontCopy
			case MadvHugepage:
				return v.flags&^VMNoHugepage | VMHugepage
			case MadvNohugepage:
				return v.flags&^VMHugepage | VMNoHugepage
			}
			// MADV_NORMAL clears read-ahead hints, which anonymous
			// areas here never have; its walk still reports holes.
			return v.flags
		})
	}
	return ErrInvalid
}

// dontneed zaps the PTEs of the range under the mmap lock held for
// reading, as Linux does: faults may run beside it.
func (as *AddressSpace) dontneed(addr, size uint32) error {
	return as.eachMapped(addr, size, func(s, e uint32) error {
		as.ptl.Lock()
		defer as.ptl.Unlock()
		return as.zap(s, e)
	})
}

// free is MADV_FREE (madvise_free_single_vma), also under the mmap lock
// held for reading.
func (as *AddressSpace) free(addr, size uint32) error {
	return as.eachMapped(addr, size, func(s, e uint32) error {
		if as.lookup(s).file != nil {
			return ErrInvalid // only anonymous memory can be freed lazily
		}
		as.freeRange(s, e)
		return nil
	})
}

// eachMapped calls fn for the part of [addr, addr+size) in each VMA, in
// address order, with the mmap lock held for reading. Holes make it
// return ErrNotMapped (ENOMEM) after advising the rest, as madvise does;
// an error from fn stops it.
func (as *AddressSpace) eachMapped(addr, size uint32, fn func(start, end uint32) error) error {
	if size == 0 {
		return nil
	}
	as.mmapLock.RLock()
	defer as.mmapLock.RUnlock()
	if as.exited {
		return ErrExited
	}
	end := uint64(addr) + uint64(size)
	cursor := uint64(addr)
	var err error
	for v := as.findVMA(addr); v != nil && uint64(v.start) < end; v = v.next {
		if uint64(v.start) > cursor {
			err = ErrNotMapped
		}
		if ferr := fn(max(v.start, addr), uint32(min(uint64(v.end), end))); ferr != nil {
			return ferr
		}
		cursor = uint64(v.end)
	}
	if cursor < end {
		err = ErrNotMapped
	}
	return err
}

// freeRange frees [start, end) of one area lazily (madvise_free_pmd_range
// and madvise_free_pte_range). Two passes under the page-table lock, with
// the splits between them, when the lock is dropped: a section only partly
// in the range, and a compound page mapped by small PTEs, are split
// (split_folio) so that only the range is freed; a section wholly in the
// range is not split at all (seed 003). Pages mapped by other spaces too
// are left alone.
func (as *AddressSpace) freeRange(start, end uint32) {
	m := as.mgr
	as.ptl.Lock()
	var split []phys.PFN
	as.pt.RangeSections(start, end, func(haddr uint32, sec pgtable.PTE) bool {
		if sec.Present() && !isHugeZero(sec) && (haddr < start || uint64(haddr)+pgtable.SectionSize > uint64(end)) {
			if head := phys.PFN(sec.PA() >> pgtable.PageShift); !m.mappedShared(head) && m.pool.Get(head) == nil {
				split = append(split, head)
			}
		}
		return true
	})
	as.pt.Range(start, end, func(va uint32, pte pgtable.PTE) bool {
		if pte.Present() && !pte.Has(pgtable.Special) {
			pfn := phys.PFN(pte.PA() >> pgtable.PageShift)
			if m.pool.Page(pfn).Compound() {
				head := m.pool.CompoundHead(pfn)
				if !m.mappedShared(head) && (len(split) == 0 || split[len(split)-1] != head) && m.pool.Get(head) == nil {
					split = append(split, head)
				}
			}
		}
		return true
	})
	as.ptl.Unlock()
	for _, head := range split {
		if pg := m.pool.Page(head); !pg.TestAndSet(phys.PGLocked) {
			m.SplitHugePage(head) // a failure leaves it whole, and unadvised
			pg.Clear(phys.PGLocked)
		}
		m.pool.Put(head)
	}
	as.ptl.Lock()
	defer as.ptl.Unlock()
	as.pt.RangeSections(start, end, func(haddr uint32, sec pgtable.PTE) bool {
		if sec.Present() && haddr >= start && uint64(haddr)+pgtable.SectionSize <= uint64(end) {
			as.freeHugePMD(haddr, sec)
		}
		return true
	})
	as.pt.Range(start, end, func(va uint32, pte pgtable.PTE) bool {
		switch {
		case pte.IsSwap():
			// The data is worthless now: the slot goes, and the next
			// access sees zeroes.
			m.swapFree(pte.Swap())
			as.swapents--
			as.pt.Set(va, 0)
		case pte.Has(pgtable.Special):
		default:
			pfn := phys.PFN(pte.PA() >> pgtable.PageShift)
			pg := m.pool.Page(pfn)
			if pg.Compound() {
				return true // its split failed: left as it is
			}
			if pg.Test(phys.PGSwapCache) || pg.Test(phys.PGDirty) {
				// PG_dirty can only be cleared for the one mapper.
				// A swap cache page must give its slot up first: a
				// clean swap-backed page would otherwise be dropped for
				// the slot's copy, which is older.
				if pg.MapCount() != 1 || pg.TestAndSet(phys.PGLocked) {
					return true
				}
				if pg.Test(phys.PGSwapCache) && !m.folioFreeSwap(pfn) {
					pg.Clear(phys.PGLocked)
					return true
				}
				pg.Clear(phys.PGDirty | phys.PGLocked)
			}
			if pte.Has(pgtable.Young) || pte.Has(pgtable.Dirty) {
				as.pt.Set(va, pte.Without(pgtable.Young|pgtable.Dirty))
			}
			m.markLazyFree(pfn, 1)
		}
		return true
	})
}

// freeHugePMD is madvise_free_huge_pmd for a section wholly in the range:
// the compound page is cleaned and marked lazy-free, and stays whole. The
// huge zero page, a page others map too, and a locked page are skipped.
func (as *AddressSpace) freeHugePMD(haddr uint32, sec pgtable.PTE) {
	m := as.mgr
	if isHugeZero(sec) {
		return
	}
	head := phys.PFN(sec.PA() >> pgtable.PageShift)
	pg := m.pool.Page(head)
	if m.mappedShared(head) || pg.TestAndSet(phys.PGLocked) {
		return
	}
	pg.Clear(phys.PGDirty | phys.PGLocked)
	if sec.Has(pgtable.Young) || sec.Has(pgtable.Dirty) {
		as.setSection(haddr, sec.Without(pgtable.Young|pgtable.Dirty))
	}
	m.markLazyFree(head, hugeNr)
}

// mappedShared is folio_maybe_mapped_shared: the page, or any frame of its
// compound page, may be mapped more than once.
func (m *Manager) mappedShared(head phys.PFN) bool {
	lc, large := m.pool.LargeCounts(head)
	if !large {
		return m.pool.Page(head).MapCount() > 1
	}
	switch e, small := lc.Entire(), lc.PagesMapped()&^phys.EntirelyMapped; {
	case e > 1 || e == 1 && small != 0:
		return true
	case e == 1:
		return false // one section, and no small mapping at all
	}
	for i := phys.PFN(0); i < hugeNr; i++ {
		if m.pool.Page(head+i).MapCount() > 1 {
			return true
		}
	}
	return false
}

// markLazyFree is folio_mark_lazyfree: an anonymous page no longer backed
// by swap, which reclaim may discard while it stays clean (pglazyfree
// counts its frames). It moves to the inactive file list (lru_lazyfree),
// losing its active and referenced marks.
func (m *Manager) markLazyFree(head phys.PFN, nr int) {
	pg := m.pool.Page(head)
	if pg.Test(phys.PGSwapCache) || pg.Test(phys.PGUnevictable) || !pg.Test(phys.PGSwapBacked) {
		return
	}
	if m.setLRUFlags(head, 0, phys.PGSwapBacked|phys.PGActive|phys.PGReferenced)&phys.PGSwapBacked != 0 {
		m.thp.lazyfree.Add(uint64(nr))
	}
}

// Discard is what DiscardLazyFree did with a page.
type Discard int

const (
	// Discarded: every mapping is gone; the caller's reference is the
	// last, and dropping it frees the page.
	Discarded Discard = iota
	// Redirtied: a mapping was written after MADV_FREE, so the page is
	// swap-backed again and keeps that mapping (and any not yet visited).
	Redirtied
	// Busy: someone besides the mappings and the caller holds a
	// reference; the page stays lazily free, with the mappings left.
	Busy
	// NotLazyFree: the page is swap-backed; reclaim must swap it out.
	NotLazyFree
)

var discardNames = [...]string{"discarded", "redirtied", "busy", "not lazy-free"}

func (d Discard) String() string { return discardNames[d] }

// DiscardLazyFree is what reclaim does with a lazily freed page: unmap
// every mapping of it, 4 KiB or a whole section, without writing it
// anywhere, as long as it is still clean and unused. For each mapping it
// follows Linux's rule (__discard_anon_folio_pmd_locked, and
// try_to_unmap_one for small pages): clear the entry, then check that
// neither it nor the page is dirty and that the references are exactly the
// mappings plus the caller's; otherwise put the entry back and stop. A
// dirty entry makes the page swap-backed again (Redirtied); an extra
// reference alone does not (Busy). Mappings visited before the stop stay
// discarded, as in Linux.
//
// The caller holds the page lock on the page (its head) and one reference.
func (m *Manager) DiscardLazyFree(pfn phys.PFN) (Discard, error) {
	head := m.pool.CompoundHead(pfn)
	if err := m.checkLocked(head); err != nil {
		return 0, err
	}
	pg := m.pool.Page(head)
	if pg.Test(phys.PGSwapBacked) || regionOf(pg) != nil {
		return NotLazyFree, nil // a page cache page is not swap-backed either
	}
	result := Discarded
	var failed error
	err := m.rmapWalk(head, func(mp Mapping, pte pgtable.PTE) {
		if result != Discarded || failed != nil {
			return
		}
		as := mp.AS
		if mp.Huge {
			as.setSection(mp.Addr, 0)
		}
		// A small entry is checked before it is cleared: clearing the
		// last entry of a table page frees the page, and putting the
		// entry back would then need an allocation. Under the page-table
		// lock nothing can set Dirty meanwhile (only the fault handler
		// does, under that lock), so the order makes no difference.
		dirty := pte.Has(pgtable.Dirty) || pg.Test(phys.PGDirty)
		if dirty || pg.RefCount() != m.folioMapCount(head)+1 {
			if mp.Huge {
				as.setSection(mp.Addr, pte)
			}
			result = Busy
			if dirty {
				m.setLRUFlags(head, phys.PGSwapBacked, 0)
				result = Redirtied
			}
			return
		}
		if mp.Huge {
			as.pt.Withdraw(mp.Addr)
			m.removeRmapPMD(head)
			as.rss -= hugeNr
			m.thp.lazyfreed.Add(hugeNr)
		} else {
			as.pt.Set(mp.Addr, 0)
			m.removeRmapPTE(phys.PFN(pte.PA() >> pgtable.PageShift))
			as.rss--
			m.thp.lazyfreed.Add(1)
		}
		if err := m.pool.Put(head); err != nil {
			failed = err
		}
	})
	if err == nil {
		err = failed
	}
	return result, err
}

// Mincore reports which pages of [addr, addr+length) are resident, one
// byte per page with bit 0 set for a resident one (mincore(2)): mapped,
// by a PTE or a section, the zero pages included; swapped out or never
// touched pages are not. In a region mapping, a page in the region's page
// cache is resident whether this space maps it or not, as for a file. A hole in the range is ErrNotMapped (ENOMEM).
func (as *AddressSpace) Mincore(addr, length uint32) ([]byte, error) {
	size, ok := pageAlignLen(length)
	if addr&pageMask != 0 || !ok || !inWindow(addr, size) {
		return nil, ErrInvalid
	}
	as.mmapLock.RLock()
	defer as.mmapLock.RUnlock()
	if as.exited {
		return nil, ErrExited
	}
	vec := make([]byte, size>>pgtable.PageShift)
	as.ptl.Lock()
	defer as.ptl.Unlock()
	for i := range vec {
		va := addr + uint32(i)<<pgtable.PageShift
		v := as.lookup(va)
		if v == nil {
			return nil, ErrNotMapped
		}
		pte := as.pt.PTE(va)
		switch {
		case as.pt.Section(va).Present() || pte.Present():
			vec[i] = 1
		case v.file != nil && pte.None():
			// A region's page counts if it is in the page cache,
			// mapped here or not (mincore_page).
			if pfn, ok := v.file.findGet(v.linearIndex(va)); ok {
				as.mgr.pool.Put(pfn)
				vec[i] = 1
			}
		}
	}
	return vec, nil
}

// coldOrPageout is madvise_cold_or_pageout_pte_range: each page mapped
// only here, small or a whole section, has its young bit cleared and is
// deactivated (cold), or isolated from its list and reclaimed
// (reclaim_pages, which ignores references).
func (as *AddressSpace) coldOrPageout(addr, size uint32, pageout bool) error {
	m := as.mgr
	var isolated []phys.PFN
	consider := func(head phys.PFN) {
		if m.mappedShared(head) {
			return
		}
		if !pageout {
			m.setLRUFlags(head, 0, phys.PGActive|phys.PGReferenced)
			return
		}
		if m.isolateOne(head) {
			isolated = append(isolated, head)
		}
	}
	err := as.eachMapped(addr, size, func(s, e uint32) error {
		as.ptl.Lock()
		defer as.ptl.Unlock()
		as.pt.RangeSections(s, e, func(haddr uint32, sec pgtable.PTE) bool {
			if !sec.Present() || isHugeZero(sec) || haddr < s || uint64(haddr)+pgtable.SectionSize > uint64(e) {
				return true
			}
			if sec.Has(pgtable.Young) {
				as.setSection(haddr, sec.Without(pgtable.Young))
			}
			consider(phys.PFN(sec.PA() >> pgtable.PageShift))
			return true
		})
		as.pt.Range(s, e, func(va uint32, pte pgtable.PTE) bool {
			if !pte.Present() || pte.Has(pgtable.Special) {
				return true
			}
			head := m.pool.CompoundHead(phys.PFN(pte.PA() >> pgtable.PageShift))
			if m.pool.Page(head).Compound() {
				return true // part of a huge page mapped small: left whole
			}
			if pte.Has(pgtable.Young) {
				as.pt.Set(va, pte.Without(pgtable.Young))
			}
			consider(head)
			return true
		})
		return nil
	})
	if len(isolated) > 0 {
		m.reclaimPages(isolated)
	}
	return err
}
