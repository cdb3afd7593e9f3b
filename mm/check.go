package mm

import (
	"bytes"
	"fmt"
	"sort"
	"time"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// Check verifies mm's invariants across every live address space; it is
// the oracle of the property tests and of the vm scenario, and must run
// with no other mm operation in flight (it takes the locks it needs only
// to read safely). It checks:
//
//   - each VMA set: sorted, disjoint, page aligned, in the window, its
//     tree and list agreeing, its count right;
//   - each table: hardware entries derived from software ones, L1
//     descriptors pointing at the right pages, no empty table page kept
//     (pgtable.Table.Check), no PTE outside a VMA, PTE permissions within
//     the VMA's, the zero page mapped only read-only and still zero;
//   - each page mapped: its map count equals the PTEs found mapping it,
//     its reference count is at least that, it is anonymous, its Index is
//     its linear index in every VMA mapping it, its anon_vma is in every
//     such VMA's chain, and the rmap walk from it lists every one of those
//     PTEs exactly once; no other frame has a map count;
//   - each anon_vma: its tree holds exactly the chains that point at it,
//     its degree counters and reference count match, every chain has one
//     root; the global counters (AnonPages, anon_vmas, chains) add up;
//   - each space's RSS and swap-entry counters;
//   - each region (filemap_check.go): its i_mmap tree holds exactly the
//     VMAs mapping it; each cache page names it at its index, is on a
//     list or isolated, holds the cache's reference beside its mappings',
//     and is mapped only within its VMAs' offsets, read-only by private
//     ones, dirty in a PTE only if PGDirty; the page cache counters add up.
func (m *Manager) Check() error {
	spaces := m.AddressSpaces()
	for _, as := range spaces {
		as.mmapLock.RLock()
		defer as.mmapLock.RUnlock()
	}
	if !m.quiesced.Load() {
		m.reclaimMu.Lock()
		defer m.reclaimMu.Unlock()
	}
	c := &checker{m: m, mapped: map[phys.PFN][]mapped{}, huge: map[phys.PFN][]mapped{}, avs: map[*anonVMA]*avState{},
		swapRefs: map[pgtable.SwapEntry]int{}}
	for _, as := range spaces {
		if err := c.space(as); err != nil {
			return fmt.Errorf("mm check: pid %d: %w", as.pid, err)
		}
	}
	if err := c.pages(); err != nil {
		return fmt.Errorf("mm check: %w", err)
	}
	if err := c.anonVMAs(); err != nil {
		return fmt.Errorf("mm check: %w", err)
	}
	if err := c.reclaim(); err != nil {
		return fmt.Errorf("mm check: %w", err)
	}
	if err := c.regions(spaces); err != nil {
		return fmt.Errorf("mm check: %w", err)
	}
	return nil
}

// Quiesce runs fn with reclaim held off: no reclaim pass is under way
// while it runs (writes already handed to a device may complete). Check
// takes the same hold by itself; Quiesce is for a caller that wants
// Check and its own views of the spaces to agree, as the model test
// does. fn must not fault or allocate from the pool (direct reclaim
// would wait for it), and nothing else may be running address-space
// calls meanwhile.
func (m *Manager) Quiesce(fn func() error) error {
	m.reclaimMu.Lock()
	m.quiesced.Store(true)
	defer func() {
		m.quiesced.Store(false)
		m.reclaimMu.Unlock()
	}()
	return fn()
}

type checker struct {
	m      *Manager
	mapped map[phys.PFN][]mapped // small PTEs, by frame
	huge   map[phys.PFN][]mapped // sections, by compound head
	avs    map[*anonVMA]*avState
	avcs   int64
	// swapRefs counts the swap PTEs naming each slot.
	swapRefs map[pgtable.SwapEntry]int
}

// mapped is one PTE found mapping a page.
type mapped struct {
	as   *AddressSpace
	addr uint32
	vma  *VMA
}

type avState struct {
	chains   int // AVCs pointing at it
	active   int // VMAs whose own anon_vma it is
	children int // anon_vmas whose parent it is
	nonroots int // for a root: live non-root anon_vmas of its family
}

func (c *checker) space(as *AddressSpace) error {
	as.ptl.Lock()
	defer as.ptl.Unlock()
	if as.exited {
		return nil
	}
	if err := c.vmaSet(as); err != nil {
		return err
	}
	if err := as.pt.Check(); err != nil {
		return err
	}
	var inVMAs, rss, filerss, swp, zero, hugeZero, sections int64
	var perr error
	for v := as.head; v != nil && perr == nil; v = v.next {
		if err := c.chain(v); err != nil {
			return fmt.Errorf("%v: %w", v, err)
		}
		as.pt.RangeSections(v.start, v.end, func(haddr uint32, sec pgtable.PTE) bool {
			sections++
			switch {
			case !sec.Present():
				perr = fmt.Errorf("section %#08x: %v is not a present huge mapping", haddr, sec)
			case haddr < v.start || uint64(haddr)+pgtable.SectionSize > uint64(v.end):
				perr = fmt.Errorf("section %#08x sticks out of %v", haddr, v)
			case !as.pt.Deposited(haddr):
				perr = fmt.Errorf("section %#08x has no table deposited for its split", haddr)
			case isHugeZero(sec):
				hugeZero++
				if sec.PA() != c.m.hugeZeroPA.Load() || sec.Has(pgtable.Write) {
					perr = fmt.Errorf("section %#08x: special %v is not the read-only huge zero page", haddr, sec)
				}
			default:
				rss += hugeNr
				head := phys.PFN(sec.PA() >> pgtable.PageShift)
				if pg := c.m.pool.Page(head); pg == nil || !pg.Test(phys.PGHead) || pg.Order() != phys.HugeOrder {
					perr = fmt.Errorf("section %#08x: %v does not map an order-%d compound page", haddr, sec, phys.HugeOrder)
					return false
				}
				c.huge[head] = append(c.huge[head], mapped{as, haddr, v})
			}
			if sec.Has(pgtable.Write) && v.flags&VMWrite == 0 {
				perr = fmt.Errorf("section %#08x: writable %v in %v", haddr, sec, v)
			}
			if sec.Has(pgtable.Exec) != (v.flags&VMExec != 0) || sec.Has(pgtable.NoAccess) != (v.flags&vmAccessFlags == 0) || !sec.Has(pgtable.User) {
				perr = fmt.Errorf("section %#08x: %v does not carry %v's permissions", haddr, sec, v)
			}
			return perr == nil
		})
		if perr != nil {
			break
		}
		as.pt.Range(v.start, v.end, func(va uint32, pte pgtable.PTE) bool {
			inVMAs++
			switch {
			case pte.IsSwap():
				c.swapRefs[pte.Swap()]++
				swp++
				return true
			case pte.Has(pgtable.Special):
				zero++
				if pte.PA() != c.m.zeroPA || pte.Has(pgtable.Write) {
					perr = fmt.Errorf("%#08x: special PTE %v is not the read-only zero page", va, pte)
				}
			default:
				pfn := phys.PFN(pte.PA() >> pgtable.PageShift)
				if !c.m.pool.Contains(pfn) {
					perr = fmt.Errorf("%#08x: PTE %v maps a frame outside the pool", va, pte)
					return false
				}
				c.mapped[pfn] = append(c.mapped[pfn], mapped{as, va, v})
				if pg := c.m.pool.Page(pfn); regionOf(pg) != nil {
					filerss++
					perr = c.filePTE(v, va, pte, pg)
				} else {
					rss++
				}
			}
			if pte.Has(pgtable.Write) && v.flags&VMWrite == 0 {
				perr = fmt.Errorf("%#08x: writable PTE %v in %v", va, pte, v)
			}
			if pte.Has(pgtable.Exec) != (v.flags&VMExec != 0) || pte.Has(pgtable.NoAccess) != (v.flags&vmAccessFlags == 0) || !pte.Has(pgtable.User) {
				perr = fmt.Errorf("%#08x: PTE %v does not carry %v's permissions", va, pte, v)
			}
			return perr == nil
		})
	}
	if perr != nil {
		return perr
	}
	var all, allSections int64
	as.pt.Range(pgtable.WindowStart, pgtable.WindowEnd, func(uint32, pgtable.PTE) bool { all++; return true })
	as.pt.RangeSections(pgtable.WindowStart, pgtable.WindowEnd, func(uint32, pgtable.PTE) bool { allSections++; return true })
	for va := pgtable.WindowStart; va < pgtable.WindowEnd; va += pgtable.SectionSize {
		if as.pt.Deposited(va) != as.pt.Section(va).Present() {
			return fmt.Errorf("section %#08x: deposit %v beside section entry %v", va, as.pt.Deposited(va), as.pt.Section(va))
		}
	}
	switch {
	case all != inVMAs:
		return fmt.Errorf("%d PTEs lie outside every VMA", all-inVMAs)
	case allSections != sections:
		return fmt.Errorf("%d sections lie outside every VMA", allSections-sections)
	case hugeZero != as.hugeZeroMapped:
		return fmt.Errorf("huge zero page counter %d, sections map it %d times", as.hugeZeroMapped, hugeZero)
	case rss != as.rss:
		return fmt.Errorf("rss counter %d, PTEs map %d pages", as.rss, rss)
	case filerss != as.filerss:
		return fmt.Errorf("file rss counter %d, PTEs map %d page cache pages", as.filerss, filerss)
	case swp != as.swapents:
		return fmt.Errorf("swap entry counter %d, PTEs hold %d", as.swapents, swp)
	case zero != as.zeroMapped:
		return fmt.Errorf("zero page counter %d, PTEs map it %d times", as.zeroMapped, zero)
	}
	return nil
}

func (c *checker) vmaSet(as *AddressSpace) error {
	nodes, err := as.vmas.check()
	if err != nil {
		return err
	}
	if len(nodes) != as.nrVMAs {
		return fmt.Errorf("%d VMAs in the tree, counter says %d", len(nodes), as.nrVMAs)
	}
	i := 0
	var prev *VMA
	for v := as.head; v != nil; v = v.next {
		switch {
		case i >= len(nodes) || nodes[i].val != v:
			return fmt.Errorf("VMA list and tree disagree at %v", v)
		case v.prev != prev:
			return fmt.Errorf("%v: broken prev link", v)
		case v.as != as:
			return fmt.Errorf("%v belongs to another address space", v)
		case v.start >= v.end || v.start&pageMask != 0 || v.end&pageMask != 0 || !inWindow(v.start, v.end-v.start):
			return fmt.Errorf("%v: bad range", v)
		case prev != nil && prev.end > v.start:
			return fmt.Errorf("%v overlaps %v", v, prev)
		case prev != nil && canMerge(prev, v):
			return fmt.Errorf("%v and %v should have been merged", prev, v)
		case nodes[i].start != uint64(v.start) || nodes[i].last != uint64(v.end)-1:
			return fmt.Errorf("%v: tree node has a stale range", v)
		}
		prev = v
		i++
	}
	if as.tail != prev {
		return fmt.Errorf("VMA list tail is %v, want %v", as.tail, prev)
	}
	return nil
}

// chain checks one VMA's anon_vma chain and records its anon_vmas.
func (c *checker) chain(v *VMA) error {
	if (v.anonVMA == nil) != (len(v.chain) == 0) {
		return fmt.Errorf("anon_vma %p with a chain of %d", v.anonVMA, len(v.chain))
	}
	own := false
	for _, avc := range v.chain {
		av := avc.av
		switch {
		case avc.vma != v:
			return fmt.Errorf("chain entry points at %v", avc.vma)
		case !avc.linked:
			return fmt.Errorf("chain entry to anon_vma %d is not in its tree", av.id)
		case av.root != v.chain[0].av.root:
			return fmt.Errorf("chain has two roots")
		case avc.node.start != uint64(v.pgoff) || avc.node.last != uint64(v.pgoff)+uint64(v.pages())-1:
			return fmt.Errorf("anon_vma %d indexes it at stale offsets [%#x, %#x]", av.id, avc.node.start, avc.node.last)
		}
		own = own || av == v.anonVMA
		c.avcs++
		c.anonVMA(av).chains++
	}
	if v.anonVMA != nil {
		if !own {
			return fmt.Errorf("own anon_vma %d is not in its chain", v.anonVMA.id)
		}
		c.anonVMA(v.anonVMA).active++
	}
	return nil
}

func (c *checker) anonVMA(av *anonVMA) *avState {
	s := c.avs[av]
	if s == nil {
		s = &avState{}
		c.avs[av] = s
	}
	return s
}

// pages checks every mapped page, small or compound, against the entries
// found mapping it.
func (c *checker) pages() error {
	pool := c.m.pool
	heads := map[phys.PFN]bool{}
	for pfn := range c.mapped {
		heads[pool.CompoundHead(pfn)] = true
	}
	for head := range c.huge {
		heads[head] = true
	}
	var anon, thps, fileMapped int64
	for head := range heads {
		if regionOf(pool.Page(head)) != nil {
			if err := c.filePage(head); err != nil {
				return err
			}
			fileMapped++
			continue
		}
		n, whole, err := c.page(head)
		if err != nil {
			return err
		}
		anon += n
		if whole {
			thps++
		}
	}
	for pfn := pool.Start(); pfn < pool.End(); pfn++ {
		if n := pool.Page(pfn).MapCount(); n != 0 {
			if _, ok := c.mapped[pfn]; !ok {
				return fmt.Errorf("%v: map count %d but no PTE maps it", pfn, n)
			}
		}
	}
	if got := c.m.nrFileMapped.Load(); got != fileMapped {
		return fmt.Errorf("Mapped counter %d, %d page cache pages are mapped", got, fileMapped)
	}
	if got := c.m.nrAnonPages.Load(); got != anon {
		return fmt.Errorf("AnonPages counter %d, %d frames are mapped", got, anon)
	}
	if got := c.m.thp.nrAnonTHPs.Load(); got != thps {
		return fmt.Errorf("AnonHugePages counter %d huge pages, %d are mapped whole", got, thps)
	}
	zero, err := pool.Frame(c.m.zeroPFN)
	if err != nil {
		return err
	}
	if i := nonZero(zero); i >= 0 {
		return fmt.Errorf("the zero page has %#02x at offset %d", zero[i], i)
	}
	if c.m.hugeZeroPA.Load() != 0 {
		// A megabyte is too much to read at every check on the image:
		// each check reads one of its frames in turn (and the model's
		// reads see every byte a task can).
		k := phys.PFN(c.m.hugeZeroChecks.Add(1) % hugeNr)
		b, err := pool.Frame(c.m.hugeZeroPFN + k)
		if err != nil {
			return err
		}
		if i := nonZero(b); i >= 0 {
			return fmt.Errorf("the huge zero page has %#02x at offset %d", b[i], uint32(k)<<pgtable.PageShift+uint32(i))
		}
	}
	return nil
}

// nonZero returns the offset of the first byte of b that is not zero, or
// -1, a page at a time with the runtime's memequal.
func nonZero(b []byte) int {
	for off := 0; off < len(b); off += len(zeroPage) {
		chunk := b[off:min(off+len(zeroPage), len(b))]
		if !bytes.Equal(chunk, zeroPage[:len(chunk)]) {
			for i, c := range chunk {
				if c != 0 {
					return off + i
				}
			}
		}
	}
	return -1
}

var zeroPage [pgtable.PageSize]byte

// page checks one page: a small one, or a compound page with its frames.
// It returns how many frames count as mapped (AnonPages) and whether a
// section maps it whole.
func (c *checker) page(head phys.PFN) (int64, bool, error) {
	pool := c.m.pool
	hp := pool.Page(head)
	av := anonVMAOf(hp)
	lc, large := pool.LargeCounts(head)
	nr := phys.PFN(1)
	if large {
		nr = hugeNr
	}
	if av == nil {
		return 0, false, fmt.Errorf("%v: mapped but not anonymous (Mapping %T)", head, hp.Mapping)
	}
	maps := int32(0)
	var framesMapped int64
	for k := phys.PFN(0); k < nr; k++ {
		ptes := c.mapped[head+k]
		if got := pool.Page(head + k).MapCount(); got != int32(len(ptes)) {
			return 0, false, fmt.Errorf("%v: map count %d, mapped by %d PTEs", head+k, got, len(ptes))
		}
		maps += int32(len(ptes))
		if len(ptes) > 0 {
			framesMapped++
		}
	}
	sections := c.huge[head]
	maps += int32(len(sections))
	if large {
		want := int32(framesMapped)
		if len(sections) > 0 {
			want += phys.EntirelyMapped
		}
		switch {
		case lc.Entire() != int32(len(sections)):
			return 0, false, fmt.Errorf("%v: entire map count %d, mapped by %d sections", head, lc.Entire(), len(sections))
		case lc.PagesMapped() != want:
			return 0, false, fmt.Errorf("%v: pages-mapped count %#x, want %#x", head, lc.PagesMapped(), want)
		}
		c.m.deferredMu.Lock()
		_, queued := c.m.deferred[head]
		c.m.deferredMu.Unlock()
		if len(sections) == 0 && framesMapped > 0 && framesMapped < hugeNr && !queued {
			return 0, false, fmt.Errorf("%v: %d of %d frames mapped, but not on the deferred split queue", head, framesMapped, hugeNr)
		}
	}
	if hp.RefCount() < maps {
		return 0, false, fmt.Errorf("%v: %d references for %d mappings", head, hp.RefCount(), maps)
	}
	var buf []rmapCand
	buf = c.m.rmapCandidates(head, int(nr), buf)
	found := func(mp mapped, huge bool, k phys.PFN) error {
		v := mp.vma
		if hp.Index+uint64(k) != v.linearIndex(mp.addr) {
			return fmt.Errorf("%v: Index %#x, but pid %d maps frame %d at %#08x in %v", head, hp.Index, mp.as.pid, k, mp.addr, v)
		}
		inChain := false
		for _, avc := range v.chain {
			inChain = inChain || avc.av == av
		}
		if !inChain {
			return fmt.Errorf("%v: anon_vma %d is not in the chain of %v (pid %d) that maps it", head, av.id, v, mp.as.pid)
		}
		// The rmap walk must find every mapping, and each once.
		n := 0
		for _, cand := range buf {
			switch {
			case cand.as != mp.as:
			case huge && cand.base == mp.addr && cand.from == cand.base && cand.to-cand.from == pgtable.SectionSize:
				n++
			case !huge && cand.base+uint32(k)<<pgtable.PageShift == mp.addr && mp.addr >= cand.from && mp.addr < cand.to:
				n++
			}
		}
		switch n {
		case 1:
			return nil
		case 0:
			return fmt.Errorf("%v: rmap walk misses pid %d %#08x", head+k, mp.as.pid, mp.addr)
		}
		return fmt.Errorf("%v: rmap walk visits pid %d %#08x %d times", head+k, mp.as.pid, mp.addr, n)
	}
	for _, mp := range sections {
		if err := found(mp, true, 0); err != nil {
			return 0, false, err
		}
	}
	for k := phys.PFN(0); k < nr; k++ {
		for _, mp := range c.mapped[head+k] {
			if err := found(mp, false, k); err != nil {
				return 0, false, err
			}
		}
	}
	if len(sections) > 0 {
		return hugeNr, true, nil
	}
	return framesMapped, false, nil
}

func (c *checker) anonVMAs() error {
	// Families: each anon_vma's parent and root are live too.
	for av := range c.avs {
		for _, a := range []*anonVMA{av.parent, av.root} {
			if _, ok := c.avs[a]; !ok {
				return fmt.Errorf("anon_vma %d: its parent or root %d is linked to no VMA", av.id, a.id)
			}
		}
	}
	for av := range c.avs {
		if av.parent != av {
			c.avs[av.parent].children++
		} else {
			c.avs[av].children++
		}
		if av.root != av {
			c.avs[av.root].nonroots++
		}
	}
	for av, s := range c.avs {
		av.root.mu.RLock()
		nodes, err := av.tree.check()
		children, active, ref := av.numChildren, av.numActiveVMAs, av.refcount
		av.root.mu.RUnlock()
		if err != nil {
			return fmt.Errorf("anon_vma %d: %w", av.id, err)
		}
		for _, n := range nodes {
			if n.val.av != av {
				return fmt.Errorf("anon_vma %d: tree holds a chain entry of anon_vma %d", av.id, n.val.av.id)
			}
		}
		wantRef := int32(1)
		if av.root == av {
			wantRef += int32(s.nonroots)
		}
		switch {
		case av.root.root != av.root || av.parent.root != av.root:
			return fmt.Errorf("anon_vma %d: inconsistent root", av.id)
		case len(nodes) != s.chains:
			return fmt.Errorf("anon_vma %d: tree holds %d chain entries, %d point at it", av.id, len(nodes), s.chains)
		case active != s.active:
			return fmt.Errorf("anon_vma %d: num_active_vmas %d, want %d", av.id, active, s.active)
		case children != s.children:
			return fmt.Errorf("anon_vma %d: num_children %d, want %d", av.id, children, s.children)
		case ref != wantRef:
			return fmt.Errorf("anon_vma %d: refcount %d, want %d", av.id, ref, wantRef)
		}
	}
	if got := c.m.nrAnonVMAs.Load(); got != int64(len(c.avs)) {
		return fmt.Errorf("%d anon_vmas counted live, %d reachable", got, len(c.avs))
	}
	if got := c.m.nrAVCs.Load(); got != c.avcs {
		return fmt.Errorf("%d anon_vma chains counted, %d linked", got, c.avcs)
	}
	return nil
}

// reclaim checks the LRU lists and the swap devices against the pages
// and swap PTEs the walk found:
//
//   - each list holds pages whose flags name it (PGLRU, PGActive,
//     PGSwapBacked), heads only, and its frame count is right;
//   - every mapped page and every swap cache page is on a list or
//     isolated: the frames of those on none are at most the isolated
//     count (reclaim holds them, or their writes are in flight);
//   - each slot's count equals the swap PTEs naming it, its cache bit is
//     set exactly while a page is cached or being read for it, the cached
//     page names the slot; the in-use and per-cluster counts add up;
//   - SwapCached and the slots in use agree with the devices.
func (c *checker) reclaim() error {
	m := c.m
	devs := append([]*swapInfo(nil), m.devices()...)
	sort.Slice(devs, func(i, j int) bool { return devs[i].typ < devs[j].typ })
	for _, si := range devs {
		si.mu.Lock()
		defer si.mu.Unlock()
	}
	m.lru.mu.Lock()
	defer m.lru.mu.Unlock()

	onLRU := map[phys.PFN]bool{}
	for l := lruList(0); l < nrLRULists; l++ {
		var frames int64
		lst := &m.lru.lists[l]
		n := 0
		for f, ok := lst.Front(m.pool); ok; f, ok = lst.Next(m.pool, f) {
			if n++; n > lst.Len() {
				return fmt.Errorf("%v: list longer than its count %d", l, lst.Len())
			}
			pg := m.pool.Page(f)
			fl := pg.Flags()
			switch {
			case fl&phys.PGLRU == 0:
				return fmt.Errorf("%v on %v without PGLRU (flags %v)", f, l, fl)
			case lruOf(fl) != l:
				return fmt.Errorf("%v on %v, but its flags %v name %v", f, l, fl, lruOf(fl))
			case fl&phys.PGTail != 0:
				return fmt.Errorf("%v on %v is a tail page", f, l)
			case onLRU[f]:
				return fmt.Errorf("%v on two lists", f)
			}
			onLRU[f] = true
			frames += int64(m.folioNr(f))
		}
		if frames != m.lru.frames[l] {
			return fmt.Errorf("%v holds %d frames, its counter says %d", l, frames, m.lru.frames[l])
		}
	}

	offLRU := int64(0)
	seen := map[phys.PFN]bool{}
	account := func(head phys.PFN) error {
		if seen[head] {
			return nil
		}
		seen[head] = true
		if onLRU[head] {
			return nil
		}
		if m.pool.Page(head).Test(phys.PGLRU) {
			return fmt.Errorf("%v has PGLRU but is on no list", head)
		}
		offLRU += int64(m.folioNr(head))
		return nil
	}
	for pfn := range c.mapped {
		if err := account(m.pool.CompoundHead(pfn)); err != nil {
			return err
		}
	}
	for head := range c.huge {
		if err := account(head); err != nil {
			return err
		}
	}
	for _, r := range m.openRegions() {
		r.mu.Lock()
		for _, pfn := range r.cache {
			if err := account(pfn); err != nil {
				r.mu.Unlock()
				return err
			}
		}
		r.mu.Unlock()
	}

	var used, cached int64
	for _, si := range devs {
		inuse := uint32(0)
		clusters := make([]uint16, len(si.clusters))
		for off := uint32(0); off < si.slots; off++ {
			w := si.smap[off]
			e := pgtable.SwapEntry{Type: si.typ, Offset: off}
			if w != 0 {
				clusters[off/swapCluster]++
			}
			if w != 0 && off != 0 {
				inuse++
			}
			if off == 0 {
				if w != swapBad {
					return fmt.Errorf("%s: header slot word %#x", si.name, w)
				}
				continue
			}
			if got := int(w & swapCountMax); got != 0 {
				if want := c.swapRefs[e]; got != want {
					return fmt.Errorf("%v: count %d, named by %d swap PTEs", e, got, want)
				}
			}
			pfn, reading := si.cache[off], si.reading[off] != nil
			if hasCache := w&swapHasCache != 0; hasCache != (pfn != 0 || reading) {
				return fmt.Errorf("%v: cache bit %v, cached page %v, being read %v", e, hasCache, pfn != 0, reading)
			}
			if pfn == 0 {
				continue
			}
			cached++
			page := phys.PFN(pfn - 1)
			pg := m.pool.Page(page)
			switch {
			case pg == nil || !pg.Test(phys.PGSwapCache) || pageSwapEntry(pg) != e:
				return fmt.Errorf("%v: cached page %v does not name it (flags %v)", e, page, pg.Flags())
			case pg.RefCount() < 1:
				return fmt.Errorf("%v: cached page %v has no reference", e, page)
			case pg.Compound():
				return fmt.Errorf("%v: cached page %v is part of a compound page", e, page)
			}
			if err := account(page); err != nil {
				return err
			}
		}
		if c := clusters[len(clusters)-1]; si.slots%swapCluster != 0 {
			clusters[len(clusters)-1] = c + uint16(swapCluster-si.slots%swapCluster)
		}
		for i := range clusters {
			if clusters[i] != si.clusters[i] {
				return fmt.Errorf("%s: cluster %d counts %d slots in use, %d are", si.name, i, si.clusters[i], clusters[i])
			}
		}
		if inuse != si.inuse {
			return fmt.Errorf("%s: %d slots counted in use, %d are", si.name, si.inuse, inuse)
		}
		used += int64(inuse)
	}
	// The other way round: every slot a swap PTE names counts it (the
	// loop above checked the slots with a count).
	for e, n := range c.swapRefs {
		var si *swapInfo
		for _, d := range devs {
			if d.typ == e.Type {
				si = d
			}
		}
		if si == nil || e.Offset == 0 || e.Offset >= si.slots {
			return fmt.Errorf("%d swap PTEs name %v, which is on no device", n, e)
		}
		if got := int(si.smap[e.Offset] & swapCountMax); got != n {
			return fmt.Errorf("%v: count %d, named by %d swap PTEs", e, got, n)
		}
	}
	if got := m.swapCached.Load(); got != cached {
		return fmt.Errorf("SwapCached counter %d, %d pages are cached", got, cached)
	}
	if got := m.swapUsed.Load(); got != used {
		return fmt.Errorf("swap used counter %d, %d slots are in use", got, used)
	}
	if offLRU > m.lru.isolated {
		return fmt.Errorf("%d frames mapped or cached are on no list, only %d are isolated", offLRU, m.lru.isolated)
	}
	return nil
}

// CheckFrames accounts for every frame of a pool that this Manager alone
// uses (as the model test's pools are): each is free, on an LRU list,
// isolated by reclaim, a page table, one of the zero pages, or the
// buffer of a swap or region writeback worker (or of one being created,
// which widens the count by as much). A region's journal must then
// allocate from another pool. Run it inside Quiesce: it first waits,
// up to a second, for the writes in flight to complete, since a
// completing write frees its page after it stops counting it as
// isolated.
func (m *Manager) CheckFrames() error {
	for deadline := time.Now().Add(time.Second); m.writeback.Load() != 0; {
		if time.Now().After(deadline) {
			return errorf("frame census: %d writes still in flight after a second", m.writeback.Load())
		}
		time.Sleep(time.Millisecond)
	}
	s := m.Stats()
	lru := m.LRU()
	owned := lru.InactiveAnon + lru.ActiveAnon + lru.InactiveFile + lru.ActiveFile + lru.Isolated + s.PageTables + 1
	if m.hugeZeroPA.Load() != 0 {
		owned += hugeNr
	}
	var creating int64
	for _, si := range m.devices() {
		st := si.wq.Stats()
		owned += int64(st.Workers) + 1 // each worker's buffer, and the rescuer's
		creating += int64(st.Creating)
	}
	for _, r := range m.openRegions() {
		if r.ownQ { // a journal and a queue passed in are the caller's
			st := r.wq.Stats()
			owned += int64(st.Workers) + 1
			creating += int64(st.Creating)
		}
	}
	total, free := int64(m.pool.Frames()), int64(m.pool.FreeFrames())
	if free+owned > total || free+owned+creating < total {
		return errorf("frame census: %d free + %d owned by mm (LRU %+v, %d page tables) of %d frames, %d workers being created",
			free, owned, lru, s.PageTables, total, creating)
	}
	return nil
}
