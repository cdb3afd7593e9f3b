package mm

import (
	"sync/atomic"
	"time"

	"yolk/mm/phys"
)

// Page reclaim (Linux's mm/vmscan.c).
//
// Reclaim takes pages from the back of the inactive lists and decides
// each one's fate in shrinkFolio (shrink_folio_list):
//
//   - referenced: the rmap walk finds young entries (and clears them, so
//     the next access faults and sets them again). Two or more, or a
//     second look (PGReferenced from the first), activate the page; one
//     on a first look marks it PGReferenced and keeps it on the inactive
//     list (folio_check_references: every mapped page has a reference
//     from the fault that made it);
//   - a page cache page (filemap.go): unmapped through the region's
//     i_mmap tree; freed if clean, else handed to the region's writeback
//     work, which commits it through the journal and frees it when the
//     commit is durable;
//   - lazily freed (not swap-backed): unmapped and freed without I/O if
//     still clean and unused, a section whole (DiscardLazyFree); a
//     redirtied one is swap-backed again and activated, without a split;
//   - swap-backed: a compound page is split (the subpages go on the
//     inactive list, the head goes on); a slot is allocated and the page
//     enters the swap cache dirty (add_to_swap); every PTE is replaced by
//     the swap entry (try_to_unmap); the page is written (pageout) and,
//     when the device acknowledges, freed; a clean swap cache page that
//     is unmapped is freed at once.
//
// The active list is aged into the inactive one whenever the inactive
// list is the smaller (inactive_is_low, with inactive_ratio 1 below
// 1 GiB), clearing young entries on the way (shrink_active_list).
//
// Lists are scanned in proportion to their size, size >> priority, from
// priority 12 down to 0, as do_try_to_free_pages and balance_pgdat do;
// anonymous lists only while swap has room (can_reclaim_anon_pages), the
// lazily freed pages always.
//
// Who reclaims: kswapd, a goroutine woken by phys when an allocation
// finds free memory below low, reclaims until it is back at high
// (balance_pgdat); direct reclaim is the phys.Reclaimer mm.New installs,
// called by an allocation that failed against min (try_to_free_pages).
// When reclaim at priority 0 frees nothing and nothing more can be
// written, direct reclaim calls the OOM killer (oom_kill.go).
//
// Manager.reclaimMu is read-held by every reclaim pass and write-held by
// Check, so that Check sees no page half-way through reclaim; passes do
// not wait for writes with it held (write completions do not take it).
const (
	defPriority     = 12 // DEF_PRIORITY
	swapClusterMax  = 32 // SWAP_CLUSTER_MAX
	maxReclaimRetry = 16 // MAX_RECLAIM_RETRIES: kswapd's fruitless passes before it gives up
	costlyOrder     = 3  // PAGE_ALLOC_COSTLY_ORDER

	// writebackWait bounds how long a reclaimer waits for the writes it
	// started (reclaim_throttle on VMSCAN_THROTTLE_WRITEBACK waits 100 ms).
	writebackWait = 100 * time.Millisecond
)

// scanControl is one reclaim's state (struct scan_control).
type scanControl struct {
	nrToReclaim int
	priority    int
	mayWrite    bool // StartIO: the caller allows writes (pageout)
	kswapd      bool
	// ignoreRefs reclaims referenced pages too (reclaim_pages for
	// MADV_PAGEOUT).
	ignoreRefs bool
	reclaimed  int
	scanned    int
	writes     []<-chan struct{}
	writeFreed atomic.Int64 // pages freed as their writes completed
}

// progress is what a reclaimer counts toward its target: pages freed,
// and pages whose writes it started, which free them when they complete
// (a pass does not wait for its writes: the next batch goes on meanwhile).
func (sc *scanControl) progress() int { return sc.reclaimed + len(sc.writes) }

// wait waits briefly for the writes the pass started; it returns how many
// completed.
func (sc *scanControl) wait() int { return waitWrites(sc.writes) }

// reclaimOutcome is what shrinkFolio did with one page.
type reclaimOutcome int

const (
	reclaimKeep      reclaimOutcome = iota // back to the front of its list
	reclaimActivate                        // to the active list
	reclaimFreed                           // given back to the pool
	reclaimWriteback                       // handed to the writeback queue
)

// canReclaimAnon reports whether swap-backed pages can be reclaimed: a
// swap device with a free slot.
func (m *Manager) canReclaimAnon() bool {
	return m.swapTotal.Load() > m.swapUsed.Load()
}

// shrinkLruvec is one pass over the lists at sc.priority (shrink_lruvec).
func (m *Manager) shrinkLruvec(sc *scanControl) {
	anon := m.canReclaimAnon()
	lru := m.LRU()
	if anon && lru.InactiveAnon < lru.ActiveAnon {
		m.shrinkActiveList(lruActiveAnon, swapClusterMax, sc)
	}
	if lru.InactiveFile < lru.ActiveFile {
		m.shrinkActiveList(lruActiveFile, swapClusterMax, sc)
	}
	scan := func(size int64) int {
		n := int(size >> sc.priority)
		if n == 0 {
			n = int(min(size, swapClusterMax))
		}
		return n
	}
	nrFile := scan(lru.InactiveFile)
	nrAnon := 0
	if anon {
		nrAnon = scan(lru.InactiveAnon)
	}
	for nrFile > 0 || nrAnon > 0 {
		if nrFile > 0 {
			n := min(nrFile, swapClusterMax)
			nrFile -= n
			if m.shrinkInactiveList(lruInactiveFile, n, sc) == 0 {
				nrFile = 0
			}
		}
		if nrAnon > 0 {
			n := min(nrAnon, swapClusterMax)
			nrAnon -= n
			if m.shrinkInactiveList(lruInactiveAnon, n, sc) == 0 {
				nrAnon = 0
			}
		}
		if sc.progress() >= sc.nrToReclaim {
			break
		}
	}
}

// shrinkActiveList moves up to nr frames from the back of an active list
// to the inactive one, clearing their young entries (shrink_active_list):
// anonymous pages are deactivated whether referenced or not.
func (m *Manager) shrinkActiveList(list lruList, nr int, sc *scanControl) {
	var stack [swapClusterMax]phys.PFN
	pages := m.isolate(list, nr, stack[:0])
	for _, head := range pages {
		pg := m.pool.Page(head)
		if m.folioMapCount(head) > 0 && !pg.TestAndSet(phys.PGLocked) {
			m.PageReferenced(head)
			pg.Clear(phys.PGLocked)
		}
		pg.Clear(phys.PGActive)
		pg.Set(phys.PGWorkingset)
		m.vm.pgdeactivate.Add(uint64(m.folioNr(head)))
		m.putback(head, false)
	}
}

// shrinkInactiveList isolates up to nr frames from the back of an
// inactive list and reclaims what it can of them (shrink_inactive_list).
// It returns how many frames it isolated.
func (m *Manager) shrinkInactiveList(list lruList, nr int, sc *scanControl) int {
	var stack [swapClusterMax]phys.PFN
	pages := m.isolate(list, nr, stack[:0])
	n := 0
	for _, head := range pages {
		n += m.folioNr(head)
	}
	sc.scanned += n
	if sc.kswapd {
		m.vm.pgscanKswapd.Add(uint64(n))
	} else {
		m.vm.pgscanDirect.Add(uint64(n))
	}
	m.shrinkIsolated(pages, sc)
	return n
}

// shrinkIsolated reclaims isolated pages and puts back the others. The
// frames of a huge page split on the way join the list.
func (m *Manager) shrinkIsolated(pages []phys.PFN, sc *scanControl) {
	for i := 0; i < len(pages); i++ {
		head := pages[i]
		nr := m.folioNr(head)
		out := m.shrinkFolio(head, sc, &pages)
		if out != reclaimFreed && out != reclaimWriteback {
			nr = m.folioNr(head) // split: the head alone now
		}
		switch out {
		case reclaimFreed:
			sc.reclaimed += nr
			m.countSteal(sc.kswapd, nr)
		case reclaimActivate:
			m.vm.pgactivate.Add(uint64(m.folioNr(head)))
			m.pool.Page(head).Set(phys.PGActive)
			m.putback(head, false)
		case reclaimKeep:
			m.putback(head, false)
		}
	}
}

func (m *Manager) countSteal(kswapd bool, nr int) {
	if kswapd {
		m.vm.pgstealKswapd.Add(uint64(nr))
	} else {
		m.vm.pgstealDirect.Add(uint64(nr))
	}
}

// shrinkFolio decides the fate of one isolated page, which the caller
// holds one reference to (shrink_folio_list). For reclaimFreed the page
// is gone, for reclaimWriteback the reference went to the write; for
// the others the caller puts the page back.
func (m *Manager) shrinkFolio(head phys.PFN, sc *scanControl, list *[]phys.PFN) reclaimOutcome {
	pg := m.pool.Page(head)
	if pg.TestAndSet(phys.PGLocked) {
		return reclaimKeep
	}
	out := m.shrinkLocked(head, sc, list)
	if out == reclaimKeep || out == reclaimActivate {
		pg.Clear(phys.PGLocked)
	}
	return out
}

func (m *Manager) shrinkLocked(head phys.PFN, sc *scanControl, list *[]phys.PFN) reclaimOutcome {
	pg := m.pool.Page(head)
	if pg.Test(phys.PGWriteback) {
		return reclaimKeep
	}
	mapped := m.folioMapCount(head) > 0
	if mapped && !sc.ignoreRefs {
		refs, err := m.PageReferenced(head)
		if err != nil {
			return reclaimKeep
		}
		referenced := pg.TestAndClear(phys.PGReferenced)
		if refs > 0 {
			if referenced || refs > 1 {
				return reclaimActivate
			}
			pg.Set(phys.PGReferenced)
			return reclaimKeep
		}
	}

	if r := regionOf(pg); r != nil {
		return m.shrinkFilePage(r, head, sc)
	}
	if !pg.Test(phys.PGSwapBacked) {
		return m.reclaimLazyFree(head, mapped)
	}

	if !pg.Test(phys.PGSwapCache) {
		if !mapped || !sc.mayWrite {
			return reclaimKeep
		}
		if _, large := m.pool.LargeCounts(head); large {
			// A swap slot holds one page: split, and go on with the
			// head; the other frames still mapped join the list.
			n, err := m.splitHugePage(head, list)
			if err != nil {
				return reclaimKeep
			}
			m.unisolate(hugeNr - 1 - n)
		}
		e, err := m.getSwapPage()
		if err != nil {
			return reclaimActivate
		}
		if err := m.addToSwapCache(head, e); err != nil {
			return reclaimKeep
		}
		pg.Set(phys.PGDirty) // the slot holds nothing yet
	}

	if m.folioMapCount(head) > 0 {
		e := pageSwapEntry(pg)
		if unmapped, err := m.TryToUnmap(head, &e); err != nil || !unmapped {
			return reclaimActivate
		}
	}

	if pg.Test(phys.PGDirty) {
		if !sc.mayWrite {
			return reclaimKeep
		}
		sc.writes = append(sc.writes, m.pageout(head, sc))
		return reclaimWriteback
	}

	// Clean, unmapped, in the swap cache: the device has the data.
	if !m.removeSwapCache(head, 2) {
		return reclaimKeep
	}
	m.freeUncached(head)
	return reclaimFreed
}

// freeUncached frees a locked, isolated small page its cache (the swap
// cache or a region's) has just let go of: the cache's reference and
// reclaim's, the last, are dropped, and it no longer counts as isolated.
func (m *Manager) freeUncached(pfn phys.PFN) {
	m.pool.Page(pfn).Clear(phys.PGLocked)
	m.pool.Put(pfn) // the cache's
	m.unisolate(1)
	m.pool.Put(pfn) // reclaim's, the last
}

// reclaimLazyFree drops a lazily freed page that is still clean, a
// section without a split.
func (m *Manager) reclaimLazyFree(head phys.PFN, mapped bool) reclaimOutcome {
	pg := m.pool.Page(head)
	if mapped {
		switch d, err := m.DiscardLazyFree(head); {
		case err != nil:
			return reclaimKeep
		case d == Redirtied:
			m.vm.lazyfreeFail.Add(1)
			return reclaimActivate
		case d != Discarded:
			m.vm.lazyfreeFail.Add(1)
			return reclaimKeep
		}
	}
	if pg.RefCount() != 1 || pg.Test(phys.PGDirty) {
		return reclaimKeep
	}
	nr := m.folioNr(head)
	pg.Clear(phys.PGLocked)
	m.unisolate(nr)
	m.pool.Put(head)
	return reclaimFreed
}

// reclaimPages reclaims pages the caller isolated, whatever their
// references (reclaim_pages), and waits briefly for the writes.
func (m *Manager) reclaimPages(pages []phys.PFN) int {
	sc := &scanControl{nrToReclaim: len(pages), mayWrite: true, ignoreRefs: true}
	m.reclaimMu.RLock()
	m.shrinkIsolated(pages, sc)
	m.reclaimMu.RUnlock()
	sc.wait()
	return sc.reclaimed + int(sc.writeFreed.Load())
}

// ProactiveReclaim reclaims up to frames frames now, whatever the
// watermarks, as writing to a cgroup's memory.reclaim does: the lists
// are scanned from priority 12 down, referenced pages are kept, and the
// writes started are waited for. It returns how many frames were freed.
func (m *Manager) ProactiveReclaim(frames int) int {
	before := m.pool.FreeFrames()
	sc := &scanControl{nrToReclaim: frames, mayWrite: true}
	m.reclaimMu.RLock()
	for sc.priority = defPriority; sc.priority >= 0 && sc.progress() < sc.nrToReclaim; sc.priority-- {
		m.shrinkLruvec(sc)
	}
	m.reclaimMu.RUnlock()
	for _, w := range sc.writes {
		<-w
	}
	freed := sc.reclaimed + int(sc.writeFreed.Load())
	if after := m.pool.FreeFrames(); after > before {
		return max(freed, int(after-before))
	}
	return freed
}

// waitWrites waits, up to writebackWait in all, for the writes a
// reclaimer started; it returns how many completed.
func waitWrites(writes []<-chan struct{}) int {
	n := 0
	t := time.NewTimer(writebackWait)
	defer t.Stop()
	for _, w := range writes {
		select {
		case <-w:
			n++
		case <-t.C:
			return n
		}
	}
	return n
}

// Reclaim is direct reclaim, the phys.Reclaimer mm.New installs
// (try_to_free_pages): an allocation that failed reclaims for itself,
// from priority 12 down until it has freed SWAP_CLUSTER_MAX frames (or
// the order it needs), waits briefly for the pages it sent to be
// written, and returns what it freed. With nothing freed at priority 0,
// it calls the OOM killer.
func (m *Manager) Reclaim(order int, ctx phys.Context) int {
	before := m.pool.FreeFrames()
	sc := &scanControl{nrToReclaim: max(swapClusterMax, 1<<order), mayWrite: ctx&phys.StartIO != 0}
	m.reclaimMu.RLock()
	for sc.priority = defPriority; sc.priority >= 0 && sc.progress() < sc.nrToReclaim; sc.priority-- {
		m.shrinkLruvec(sc)
	}
	m.reclaimMu.RUnlock()
	sc.wait()
	freed := sc.reclaimed + int(sc.writeFreed.Load())
	if after := m.pool.FreeFrames(); after > before {
		freed = max(freed, int(after-before))
	}
	if freed > 0 {
		m.kswapdFailures.Store(0)
		m.pool.SetReclaimHopeless(false)
		return freed
	}
	// Only an allocation that could have written pages out, of a
	// small order, calls the OOM killer: reclaim without I/O proves
	// nothing, and a costly order may fail for want of a free block
	// alone (__alloc_pages_may_oom skips !__GFP_FS and orders above
	// PAGE_ALLOC_COSTLY_ORDER).
	if len(sc.writes) == 0 && sc.mayWrite && order <= costlyOrder {
		return m.outOfMemory(order)
	}
	return 0
}

// wakeKswapd is phys's kswapd hook: it must not block.
func (m *Manager) wakeKswapd(order int) {
	if m.kswapdFailures.Load() >= maxReclaimRetry {
		return // hopeless until direct reclaim makes progress
	}
	select {
	case m.kswapdWake <- struct{}{}:
	default:
	}
}

// kswapd is the background reclaimer's goroutine.
func (m *Manager) kswapd() {
	defer close(m.kswapdDone)
	for {
		select {
		case <-m.kswapdStop:
			return
		case <-m.kswapdWake:
		}
		m.balance()
	}
}

// balance reclaims until free memory is back at the high watermark
// (balance_pgdat). A run that frees nothing while memory is still short
// counts as a failure; after maxReclaimRetry failed runs in a row kswapd
// gives up, tells phys so (direct reclaimers stop waiting for it), and is
// not woken again until direct reclaim makes progress. Whatever the
// outcome, it wakes the throttled reclaimers as it goes back to sleep
// (Linux's prepare_kswapd_sleep): a reclaimer waiting for kswapd must
// never outlive kswapd's interest in the zone.
func (m *Manager) balance() {
	defer m.pool.WakeThrottled()
	m.vm.kswapdWakeups.Add(1)
	progress := false
	for {
		select {
		case <-m.kswapdStop:
			return
		default:
		}
		high := m.pool.Watermarks().High
		free := m.pool.FreeFrames()
		if free >= high {
			m.kswapdFailures.Store(0)
			return
		}
		sc := &scanControl{nrToReclaim: int(high - free), mayWrite: true, kswapd: true}
		m.reclaimMu.RLock()
		for sc.priority = defPriority; sc.priority >= 0 && sc.progress() < sc.nrToReclaim; sc.priority-- {
			m.shrinkLruvec(sc)
		}
		m.reclaimMu.RUnlock()
		done := sc.wait()
		if sc.reclaimed == 0 && done == 0 && m.pool.FreeFrames() <= free {
			break
		}
		progress = true
	}
	if progress {
		m.kswapdFailures.Store(0)
		return
	}
	if m.kswapdFailures.Add(1) >= maxReclaimRetry {
		m.pool.SetReclaimHopeless(true)
	}
}
