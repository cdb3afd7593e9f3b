package mm

import (
	"sync"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// Anonymous reverse mapping, after Linux's anon_vma design (mm/rmap.c).
//
// An anon_vma is a bucket that anonymous pages point to (page.Mapping);
// from it an rmap walk finds every VMA that may map the page. A VMA is
// linked to each anon_vma it may hold pages of by an anon_vma_chain (AVC):
// its own anon_vma (where its new pages go) and, after fork, every anon_vma
// of its ancestors (whose pages it may still share). Each anon_vma indexes
// the AVCs linked to it in an interval tree by page offset, so a walk for
// page index i visits only VMAs whose range covers i.
//
//	parent VMA P ──avc──▶ anon_vma A (root)
//	child VMA C ──avc──▶ anon_vma A        (pages shared with P)
//	            └─avc──▶ anon_vma B, parent A (pages C made itself)
//
// All anon_vmas of one fork tree share a root; the root's lock protects
// every tree and degree counter of the family. A page's anon_vma is the
// anon_vma of the VMA it was first mapped exclusively in: the oldest one
// covering all its mappings, which fork never changes (children are linked
// to it). A page reused in place by a write fault, with no other mapper,
// moves to the writer's own anon_vma (page_move_anon_rmap), which covers
// it more narrowly.
//
// Reuse keeps the family small, with two rules from Linux:
//
//   - anon_vma_prepare reuses a neighbour's anon_vma when the two VMAs are
//     adjacent, compatible (flags differing only in R/W/X, contiguous
//     pgoff) and the neighbour's chain is a singleton, i.e. its anon_vma was
//     not shared through fork (find_mergeable_anon_vma, as settled after
//     the 2.6.34 anon_vma bugs).
//   - fork reuses an anon_vma of the parent's chain that no VMA uses any
//     more and that has at most one child anon_vma (the "degree" rule of
//     Linux 3.19, commit 7a3ef208e662), so an endless chain of fork and
//     exit does not grow a chain of anon_vmas.
type anonVMA struct {
	mgr          *Manager
	root, parent *anonVMA
	// mu is used on the root only.
	mu       sync.RWMutex
	refcount int32 // under the root lock, or the last holder's
	// numChildren counts anon_vmas whose parent this is (a root counts
	// itself); numActiveVMAs counts VMAs whose own anon_vma this is.
	numChildren, numActiveVMAs int
	tree                       itree[*anonVMAChain]
	id                         uint64
}

// anonVMAChain links one VMA to one anon_vma.
type anonVMAChain struct {
	vma    *VMA
	av     *anonVMA
	linked bool // in av.tree
	node   inode[*anonVMAChain]
}

func (c *anonVMAChain) insert() {
	v := c.vma
	c.av.tree.insert(&c.node, uint64(v.pgoff), uint64(v.pgoff)+uint64(v.pages())-1, c)
	c.linked = true
}

func (c *anonVMAChain) remove() {
	if c.linked {
		c.av.tree.remove(&c.node)
		c.linked = false
	}
}

func (m *Manager) newAnonVMA() *anonVMA {
	av := &anonVMA{mgr: m, refcount: 1, id: m.anonVMASeq.Add(1)}
	av.root, av.parent = av, av
	m.nrAnonVMAs.Add(1)
	return av
}

// putAnonVMA drops a reference; the last one frees the anon_vma, and a
// non-root's release drops the reference it held on its root.
func putAnonVMA(av *anonVMA) {
	root := av.root
	root.mu.Lock()
	av.refcount--
	last := av.refcount == 0
	root.mu.Unlock()
	if !last {
		return
	}
	av.mgr.nrAnonVMAs.Add(-1)
	if root != av {
		putAnonVMA(root)
	}
}

// lockChainRoot write-locks the root of v's anon_vmas, if it has any, and
// returns the unlock.
func lockChainRoot(v *VMA) func() {
	if len(v.chain) == 0 {
		return func() {}
	}
	root := v.chain[0].av.root
	root.mu.Lock()
	return root.mu.Unlock
}

// link chains v to av; the root lock is held.
func (m *Manager) link(v *VMA, av *anonVMA) {
	avc := &anonVMAChain{vma: v, av: av}
	v.chain = append(v.chain, avc)
	avc.insert()
	m.nrAVCs.Add(1)
}

// anonVMACompatible: could a and b (a immediately below b) share an
// anon_vma? Adjacent, flags differing only in what mprotect changes, and
// contiguous page offsets (anon_vma_compatible).
func anonVMACompatible(a, b *VMA) bool {
	return a.end == b.start && a.file == b.file &&
		(a.flags^b.flags)&^vmAccessFlags == 0 &&
		b.pgoff == a.pgoff+(b.start-a.start)>>pgtable.PageShift
}

// reusableAnonVMA returns old's anon_vma if the pair a, b (one of them
// old) is compatible and old's chain is a singleton: an anon_vma that went
// through fork is never handed to a neighbour (reusable_anon_vma).
func reusableAnonVMA(old, a, b *VMA) *anonVMA {
	if anonVMACompatible(a, b) && old.anonVMA != nil && len(old.chain) == 1 {
		return old.anonVMA
	}
	return nil
}

// findMergeableAnonVMA looks for an anon_vma v may share with a neighbour,
// so that a later merge of the two is possible.
func findMergeableAnonVMA(v *VMA) *anonVMA {
	if n := v.next; n != nil {
		if av := reusableAnonVMA(n, v, n); av != nil {
			return av
		}
	}
	if p := v.prev; p != nil {
		return reusableAnonVMA(p, p, v)
	}
	return nil
}

// anonVMAPrepare gives v an anon_vma before its first anonymous page is
// mapped. Called with the page-table lock held, which serialises it with
// other faults of the address space, as Linux's page_table_lock does.
func (as *AddressSpace) anonVMAPrepare(v *VMA) {
	if v.anonVMA != nil {
		return
	}
	av := findMergeableAnonVMA(v)
	if av == nil {
		av = as.mgr.newAnonVMA()
		av.numChildren++ // a root is its own parent
	}
	av.root.mu.Lock()
	v.anonVMA = av
	as.mgr.link(v, av)
	av.numActiveVMAs++
	av.root.mu.Unlock()
}

// anonVMAClone links dst to every anon_vma of src's chain, in src's order
// (oldest first, so dst's chain ends in its newest, like src's). When dst
// has no anon_vma yet (fork), it may adopt one of them that no VMA uses any
// more and that has fewer than two children (anon_vma_clone).
func anonVMAClone(dst, src *VMA) {
	m := dst.as.mgr
	for _, pavc := range src.chain {
		av := pavc.av
		av.root.mu.Lock()
		m.link(dst, av)
		if dst.anonVMA == nil && src.anonVMA != nil && av.numChildren < 2 && av.numActiveVMAs == 0 {
			dst.anonVMA = av
		}
		av.root.mu.Unlock()
	}
	if dst.anonVMA != nil {
		r := dst.anonVMA.root
		r.mu.Lock()
		dst.anonVMA.numActiveVMAs++
		r.mu.Unlock()
	}
}

// anonVMAFork sets up the child VMA v of parent VMA pv: linked to every
// anon_vma of the parent's, with an anon_vma of its own for the pages it
// will make: reused per the degree rule, or new, a child of the parent's.
func anonVMAFork(v, pv *VMA) {
	if pv.anonVMA == nil {
		return
	}
	v.anonVMA = nil
	anonVMAClone(v, pv)
	if v.anonVMA != nil {
		return
	}
	m := v.as.mgr
	av := m.newAnonVMA()
	root := pv.anonVMA.root
	av.root, av.parent = root, pv.anonVMA
	root.mu.Lock()
	root.refcount++ // each anon_vma pins its root
	av.numActiveVMAs++
	v.anonVMA = av
	m.link(v, av)
	av.parent.numChildren++
	root.mu.Unlock()
}

// unlinkAnonVMAs takes v out of every anon_vma's tree and frees its chain;
// an anon_vma left with an empty tree loses its first reference (and with
// it, unless pinned, its life).
func unlinkAnonVMAs(v *VMA) {
	if len(v.chain) == 0 {
		return
	}
	m := v.as.mgr
	root := v.chain[0].av.root
	root.mu.Lock()
	var emptied []*anonVMA
	for _, avc := range v.chain {
		avc.remove()
		if avc.av.tree.n == 0 {
			avc.av.parent.numChildren--
			emptied = append(emptied, avc.av)
		}
	}
	if v.anonVMA != nil {
		v.anonVMA.numActiveVMAs--
	}
	root.mu.Unlock()
	m.nrAVCs.Add(-int64(len(v.chain)))
	v.chain, v.anonVMA = nil, nil
	for _, av := range emptied {
		putAnonVMA(av)
	}
}

// Page-level rmap: the anonymous page's Mapping is its anon_vma, Index its
// linear page index (of a compound page: the head's are the page's, frame
// k's index is the head's plus k); map counts count the entries mapping
// it (huge_memory.go has the compound pages' counts).

// pageAddNewAnonRmap accounts a new, exclusively mapped small page.
func (m *Manager) pageAddNewAnonRmap(pfn phys.PFN, v *VMA, addr uint32) {
	pg := m.pool.Page(pfn)
	pg.Mapping = v.anonVMA
	pg.Index = v.linearIndex(addr)
	pg.Set(phys.PGSwapBacked | phys.PGUptodate)
	m.addRmapPTE(pfn)
}

// Mapping is one place a page is mapped, as an rmap walk reports it. It
// carries nothing of the VMA's: the walk holds only the anon_vma lock, and
// a VMA's fields change under its space's mmap lock.
type Mapping struct {
	AS   *AddressSpace
	Addr uint32
	// Huge: a section maps the whole compound page from Addr.
	Huge bool
}

// anonVMAOf returns the anon_vma an anonymous page points to.
func anonVMAOf(pg *phys.Page) *anonVMA {
	av, _ := pg.Mapping.(*anonVMA)
	return av
}

// rmapCand is where a page of nr frames may be mapped: in AS, its first
// frame's index would be at base, and [from, to) is the part of that
// range inside the VMA.
type rmapCand struct {
	as             *AddressSpace
	base, from, to uint32
}

// rmapCandidates lists where the page at head (nr frames) may be mapped:
// every VMA chained to the page's anon_vma whose range meets the page's
// indexes. It takes only the anon_vma root lock and releases it before
// returning: the lock order puts page-table locks before anon_vma locks,
// so callers check each candidate under its address space's page-table
// lock, where an entry still mapping this frame is a mapping whatever has
// happened to the VMA since.
func (m *Manager) rmapCandidates(head phys.PFN, nr int, buf []rmapCand) []rmapCand {
	pg := m.pool.Page(head)
	if r := regionOf(pg); r != nil {
		return r.rmapCandidates(pg.Index, buf)
	}
	av := anonVMAOf(pg)
	if av == nil {
		return buf
	}
	first, last := pg.Index, pg.Index+uint64(nr)-1
	root := av.root
	root.mu.RLock()
	av.tree.overlapping(first, last, func(avc *anonVMAChain) bool {
		v := avc.vma
		base := int64(v.start) + (int64(first)-int64(v.pgoff))<<pgtable.PageShift
		from, to := max(base, int64(v.start)), min(base+int64(nr)<<pgtable.PageShift, int64(v.end))
		if from < to {
			buf = append(buf, rmapCand{as: v.as, base: uint32(base), from: uint32(from), to: uint32(to)})
		}
		return true
	})
	root.mu.RUnlock()
	return buf
}

// rmapWalk calls fn, with the page-table lock of the mapping's address
// space held, for every entry that maps a frame of the page at pfn: the
// whole compound page it belongs to, sections and small PTEs alike. fn
// gets the entry as it is; the page's frames are head to head+nr.
func (m *Manager) rmapWalk(pfn phys.PFN, fn func(mp Mapping, pte pgtable.PTE)) error {
	pg := m.pool.Page(pfn)
	if pg == nil {
		return errorf("rmap: %v is outside the pool", pfn)
	}
	head := m.pool.CompoundHead(pfn)
	nr := 1
	if _, large := m.pool.LargeCounts(head); large {
		nr = hugeNr
	}
	if hp := m.pool.Page(head); anonVMAOf(hp) == nil && regionOf(hp) == nil {
		return errorf("rmap: %v is neither anonymous nor a page cache page", pfn)
	}
	var stack [16]rmapCand
	lo, hi := uint32(head.Addr()), uint32(head.Addr())+uint32(nr)<<pgtable.PageShift
	for _, c := range m.rmapCandidates(head, nr, stack[:0]) {
		as := c.as
		as.ptl.Lock()
		if !as.exited {
			if nr == hugeNr && c.from == c.base && c.to-c.from == pgtable.SectionSize {
				if sec := as.pt.Section(c.base); sec.Present() && sec.PA() == lo && !isHugeZero(sec) {
					fn(Mapping{AS: as, Addr: c.base, Huge: true}, sec)
				}
			}
			for va := c.from; va < c.to; va += pgtable.PageSize {
				pte := as.pt.PTE(va)
				if pte.Present() && !pte.Has(pgtable.Special) && pte.PA() >= lo && pte.PA() < hi && pte.PA()-lo == va-c.base {
					fn(Mapping{AS: as, Addr: va}, pte)
				}
			}
		}
		as.ptl.Unlock()
	}
	return nil
}

// RmapWalk visits every mapping of the anonymous page at pfn, of the
// whole compound page it is part of: each address space and address
// whose entry maps one of its frames, sections as one mapping with Huge
// set. The caller holds the page lock (PGLocked) on the head, which keeps
// the page's anon_vma from changing under the walk.
func (m *Manager) RmapWalk(pfn phys.PFN, fn func(Mapping)) error {
	if err := m.checkLocked(pfn); err != nil {
		return err
	}
	return m.rmapWalk(pfn, func(mp Mapping, _ pgtable.PTE) { fn(mp) })
}

func (m *Manager) checkLocked(pfn phys.PFN) error {
	pg := m.pool.Page(m.pool.CompoundHead(pfn))
	if pg == nil || !pg.Test(phys.PGLocked) {
		return errorf("rmap: %v must be locked by the caller", pfn)
	}
	return nil
}

// PageReferenced tests and clears the young bit of every mapping of the
// locked anonymous page at pfn, sections included (folio_referenced),
// and returns how many were young. A cleared entry's hardware descriptor
// becomes a fault, so the next access marks it young again: how Linux/ARM
// ages pages without a hardware access flag.
func (m *Manager) PageReferenced(pfn phys.PFN) (int, error) {
	if err := m.checkLocked(pfn); err != nil {
		return 0, err
	}
	n := 0
	err := m.rmapWalk(pfn, func(mp Mapping, pte pgtable.PTE) {
		if !pte.Has(pgtable.Young) {
			return
		}
		if mp.Huge {
			mp.AS.setSection(mp.Addr, pte.Without(pgtable.Young))
		} else {
			mp.AS.pt.Set(mp.Addr, pte.Without(pgtable.Young))
		}
		n++
	})
	return n, err
}

// TryToUnmap removes every mapping of the locked anonymous small page at
// pfn (try_to_unmap). With a swap entry, each PTE is replaced by it (the
// page is in the swap cache and its data will be found there), and each
// replacement takes a reference on the slot (swap_duplicate); without
// one the page is discarded. A dirty PTE marks the page PGDirty.
// It reports whether no mapping is left: mappings made after the walk
// started (a concurrent fork) may survive. A compound page must be split
// first (SplitHugePage): a swap slot holds one small page.
func (m *Manager) TryToUnmap(pfn phys.PFN, entry *pgtable.SwapEntry) (bool, error) {
	if err := m.checkLocked(pfn); err != nil {
		return false, err
	}
	if m.pool.Page(pfn).Compound() {
		return false, errorf("try_to_unmap: %v is part of a compound page: split it first", pfn)
	}
	var swp pgtable.PTE
	if entry != nil {
		var err error
		if swp, err = pgtable.MkSwapPTE(*entry); err != nil {
			return false, err
		}
	}
	pg := m.pool.Page(pfn)
	var failed error
	refs := 0 // the PTEs' references, dropped together at the end
	err := m.rmapWalk(pfn, func(mp Mapping, pte pgtable.PTE) {
		if failed != nil {
			return
		}
		if entry != nil {
			if err := m.swapDup(*entry); err != nil {
				failed = err
				return
			}
			mp.AS.swapents++
		}
		if pte.Has(pgtable.Dirty) {
			pg.Set(phys.PGDirty)
		}
		mp.AS.pt.Set(mp.Addr, swp)
		mp.AS.rss--
		m.removeRmapPTE(pfn)
		refs++
	})
	if perr := m.pool.PutRefs(pfn, refs); err == nil {
		err = perr
	}
	if err == nil {
		err = failed
	}
	return pg.MapCount() == 0, err
}
