package mm

import (
	"fmt"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// Check's part for regions and their page cache.

// openRegions returns the regions open on the Manager.
func (m *Manager) openRegions() []*Region {
	m.regionsMu.Lock()
	defer m.regionsMu.Unlock()
	out := make([]*Region, 0, len(m.regions))
	for r := range m.regions {
		out = append(out, r)
	}
	return out
}

// filePTE checks a PTE mapping a page cache page: the VMA maps that
// region at that page's offset, a private mapping maps it read-only, and
// a dirty PTE has dirtied the page.
func (c *checker) filePTE(v *VMA, va uint32, pte pgtable.PTE, pg *phys.Page) error {
	r := regionOf(pg)
	switch {
	case v.file != r:
		return fmt.Errorf("%#08x: PTE maps a page of region %s in %v, which maps %v", va, r.cfg.Name, v, v.file)
	case v.linearIndex(va) != pg.Index:
		return fmt.Errorf("%#08x: PTE maps page %d of %s where %v maps page %d", va, pg.Index, r.cfg.Name, v, v.linearIndex(va))
	case !v.sharedFile() && pte.Has(pgtable.Write):
		return fmt.Errorf("%#08x: private mapping %v maps page cache page %d writable", va, v, pg.Index)
	case pte.Has(pgtable.Dirty) && !pg.Test(phys.PGDirty):
		return fmt.Errorf("%#08x: dirty PTE %v, but page %d of %s is clean", va, pte, pg.Index, r.cfg.Name)
	}
	return nil
}

// filePage checks a mapped page cache page: its map count is its PTEs,
// it holds their references and the cache's, and the rmap walk through
// the region's i_mmap tree finds every PTE exactly once.
func (c *checker) filePage(pfn phys.PFN) error {
	pool := c.m.pool
	pg := pool.Page(pfn)
	r := regionOf(pg)
	ptes := c.mapped[pfn]
	if pg.Compound() {
		return fmt.Errorf("%v: page cache page of %s is compound", pfn, r.cfg.Name)
	}
	if got := pg.MapCount(); got != int32(len(ptes)) {
		return fmt.Errorf("%v: page cache page map count %d, mapped by %d PTEs", pfn, got, len(ptes))
	}
	if pg.RefCount() < int32(len(ptes))+1 {
		return fmt.Errorf("%v: %d references for %d mappings and the cache", pfn, pg.RefCount(), len(ptes))
	}
	r.mu.Lock()
	cached := r.cache[pg.Index]
	r.mu.Unlock()
	if cached != pfn {
		return fmt.Errorf("%v: mapped page %d of %s is not in its cache (%v is)", pfn, pg.Index, r.cfg.Name, cached)
	}
	cands := r.rmapCandidates(pg.Index, nil)
	for _, mp := range ptes {
		n := 0
		for _, cand := range cands {
			if cand.as == mp.as && cand.base == mp.addr {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%v: the i_mmap walk visits pid %d %#08x %d times", pfn, mp.as.pid, mp.addr, n)
		}
	}
	return nil
}

// regions checks each open region: its i_mmap tree against the VMAs of
// every space, its cache entries, and the page cache counters.
func (c *checker) regions(spaces []*AddressSpace) error {
	m := c.m
	want := map[*Region]map[*VMA]bool{}
	for _, as := range spaces {
		if as.exited {
			continue
		}
		for v := as.head; v != nil; v = v.next {
			if v.file == nil {
				continue
			}
			if want[v.file] == nil {
				want[v.file] = map[*VMA]bool{}
			}
			want[v.file][v] = true
		}
	}
	var pages, dirty, writeback int64
	for _, r := range m.openRegions() {
		r.immapMu.RLock()
		nodes, err := r.immap.check()
		n := r.nrMaps
		r.immapMu.RUnlock()
		if err != nil {
			return fmt.Errorf("region %s: i_mmap: %w", r.cfg.Name, err)
		}
		if len(nodes) != len(want[r]) || n != len(nodes) {
			return fmt.Errorf("region %s: i_mmap holds %d VMAs (counted %d), %d map it", r.cfg.Name, len(nodes), n, len(want[r]))
		}
		for _, nd := range nodes {
			v := nd.val
			switch {
			case !want[r][v]:
				return fmt.Errorf("region %s: i_mmap holds %v, which does not map it", r.cfg.Name, v)
			case nd.start != uint64(v.pgoff) || nd.last != uint64(v.pgoff)+uint64(v.pages())-1:
				return fmt.Errorf("region %s: i_mmap indexes %v at stale offsets [%d, %d]", r.cfg.Name, v, nd.start, nd.last)
			}
		}
		r.mu.Lock()
		for idx, pfn := range r.cache {
			pg := m.pool.Page(pfn)
			fl := pg.Flags()
			switch {
			case regionOf(pg) != r || pg.Index != idx:
				err = fmt.Errorf("region %s: cache page %d is %v, which names %v page %d", r.cfg.Name, idx, pfn, pg.Mapping, pg.Index)
			case pg.RefCount() < 1+pg.MapCount():
				err = fmt.Errorf("region %s: cache page %d (%v) has %d references for %d mappings and the cache", r.cfg.Name, idx, pfn, pg.RefCount(), pg.MapCount())
			case fl&(phys.PGSwapBacked|phys.PGSwapCache) != 0 || fl&phys.PGUptodate == 0:
				err = fmt.Errorf("region %s: cache page %d (%v) has flags %v", r.cfg.Name, idx, pfn, fl)
			case idx >= r.cfg.Pages:
				err = fmt.Errorf("region %s: cache page %d beyond its %d pages", r.cfg.Name, idx, r.cfg.Pages)
			}
			if err != nil {
				break
			}
			pages++
			if fl&phys.PGDirty != 0 {
				dirty++
			}
			if fl&phys.PGWriteback != 0 {
				writeback++
			}
		}
		r.mu.Unlock()
		if err != nil {
			return err
		}
	}
	switch {
	case m.nrFilePages.Load() != pages:
		return fmt.Errorf("Cached counter %d, the caches hold %d pages", m.nrFilePages.Load(), pages)
	case m.nrFileDirty.Load() != dirty:
		return fmt.Errorf("Dirty counter %d, %d cache pages are dirty", m.nrFileDirty.Load(), dirty)
	case m.nrFileWriteback.Load() != writeback:
		return fmt.Errorf("file writeback counter %d, %d cache pages are under writeback", m.nrFileWriteback.Load(), writeback)
	}
	return nil
}
