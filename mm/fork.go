package mm

import (
	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// Fork makes a child address space: a copy of every VMA not marked
// VM_DONTCOPY, sharing every anonymous page copy-on-write (dup_mmap and
// copy_page_range). Both sides' PTEs of a writable page lose write
// permission, so the first write on either side copies (or, for the last
// user, reuses) it. Areas with no anon_vma have no pages to share and are
// left for the child to fault in, as Linux leaves them; so are page cache
// pages (mapped read-only in a private area, or shared), which the child
// finds in the cache.
func (as *AddressSpace) Fork() (*AddressSpace, error) {
	as.mmapLock.Lock()
	defer as.mmapLock.Unlock()
	if as.exited {
		return nil, ErrExited
	}
	child, err := as.mgr.NewAddressSpace()
	if err != nil {
		return nil, err
	}
	child.mmapLock.Lock()
	var prev *VMA
	for v := as.head; v != nil && err == nil; v = v.next {
		if v.flags&VMDontCopy != 0 {
			continue
		}
		nv := &VMA{as: child, start: v.start, end: v.end, pgoff: v.pgoff, flags: v.flags, file: v.file}
		anonVMAFork(nv, v)
		child.linkVMA(nv, prev)
		child.nrVMAs++
		prev = nv
		if v.anonVMA != nil {
			err = as.copyPageRange(child, v)
		}
	}
	child.mmapLock.Unlock()
	if err != nil {
		child.Exit()
		return nil, err
	}
	return child, nil
}

// copyPageRange copies v's PTEs into child, one table page (2 MiB) at a
// time: the child's table is allocated with no lock held, then both
// page-table locks are taken, parent's first.
func (as *AddressSpace) copyPageRange(child *AddressSpace, v *VMA) error {
	const chunk = 2 * pgtable.SectionSize
	for start := v.start; start < v.end; {
		end := min((start&^(chunk-1))+chunk, v.end)
		if end == 0 { // the top of the address space
			end = v.end
		}
		as.ptl.Lock()
		populated := as.pt.Populated(start)
		as.ptl.Unlock()
		if populated {
			child.ptl.Lock()
			err := child.pt.Populate(start, &child.ptl)
			child.ptl.Unlock()
			if err != nil {
				return err
			}
			as.ptl.Lock()
			child.ptl.Lock()
			err = as.copyPTEs(child, start, end)
			child.pt.Trim(start)
			child.ptl.Unlock()
			as.ptl.Unlock()
			if err != nil {
				return err
			}
		}
		start = end
	}
	return nil
}

// copyPTEs is copy_pmd_range and copy_pte_range with both page-table
// locks held; the child's table page for the range exists.
func (as *AddressSpace) copyPTEs(child *AddressSpace, start, end uint32) error {
	pool := as.mgr.pool
	var err error
	as.pt.RangeSections(start, end, func(haddr uint32, sec pgtable.PTE) bool {
		if !sec.Present() {
			return true
		}
		err = as.copyHugePMD(child, haddr, sec)
		return err == nil
	})
	if err != nil {
		return err
	}
	as.pt.Range(start, end, func(va uint32, pte pgtable.PTE) bool {
		switch {
		case pte.IsSwap():
			if err = as.mgr.swapDup(pte.Swap()); err != nil {
				return false
			}
			child.swapents++
		case pte.Has(pgtable.Special):
			child.zeroMapped++
		case regionOf(pool.Page(phys.PFN(pte.PA()>>pgtable.PageShift))) != nil:
			// A page cache page: the child faults it in from the
			// cache when it needs it.
			return true
		default:
			pfn := phys.PFN(pte.PA() >> pgtable.PageShift)
			if err = pool.Get(pfn); err != nil {
				return false
			}
			as.mgr.addRmapPTE(pfn)
			child.rss++
			if pte.Has(pgtable.Write) {
				pte = pte.Without(pgtable.Write)
				as.pt.Set(va, pte)
			}
			pte = pte.Without(pgtable.Young) // the child has not touched it
		}
		child.pt.Set(va, pte)
		return true
	})
	return err
}

// copyHugePMD is copy_huge_pmd: the child maps the same compound page
// (or the huge zero page) with a section of its own, in a table page
// deposited for it; both sides lose write permission, and the child's
// entry is old.
func (as *AddressSpace) copyHugePMD(child *AddressSpace, haddr uint32, sec pgtable.PTE) error {
	if err := child.pt.Deposit(haddr, &child.ptl); err != nil {
		return err
	}
	if isHugeZero(sec) {
		child.setSection(haddr, sec)
		child.hugeZeroMapped++
		return nil
	}
	head := phys.PFN(sec.PA() >> pgtable.PageShift)
	if err := as.mgr.pool.Get(head); err != nil {
		child.pt.Withdraw(haddr)
		return err
	}
	as.mgr.addRmapPMD(head)
	if sec.Has(pgtable.Write) {
		sec = sec.Without(pgtable.Write)
		as.setSection(haddr, sec)
	}
	child.setSection(haddr, sec.Without(pgtable.Young))
	child.rss += hugeNr
	return nil
}

// Exit tears the address space down (exit_mmap): every page and swap slot
// it maps loses a reference, every VMA leaves its anon_vmas, and the
// table's frames go back to the pool. Exiting twice is an error.
func (as *AddressSpace) Exit() error {
	as.mmapLock.Lock()
	defer as.mmapLock.Unlock()
	if as.exited {
		return ErrExited
	}
	as.ptl.Lock()
	err := as.zap(pgtable.WindowStart, pgtable.WindowEnd)
	as.exited = true
	as.ptl.Unlock()
	for v := as.head; v != nil; {
		next := v.next
		as.removeVMA(v)
		v = next
	}
	as.ptl.Lock()
	if derr := as.pt.Destroy(); err == nil {
		err = derr
	}
	as.ptl.Unlock()
	as.mgr.unregister(as)
	return err
}
