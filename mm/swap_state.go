package mm

import (
	"errors"
	"fmt"
	"io"

	"yolk/blk"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// The swap cache (Linux's mm/swap_state.c).
//
// A page being written to a slot, or read back from one, is found by its
// swap entry: si.cache maps the slot to the page, the page has
// PGSwapCache set and the entry in Private, and the cache holds one
// reference to it. Every fault on a swap PTE looks there first, so all
// the PTEs that name one slot, a page shared by fork, map the same page
// again after swap-in. The page leaves the cache when reclaim frees it
// (unmapped, clean, written), when its last swap PTE is gone and nothing
// maps it (swapFree), or when a writer needs it exclusively and no swap
// PTE names the slot any more (folioFreeSwap, which marks it dirty: the
// slot's copy is given up).
//
// A slot being read has a channel in si.reading, set with the cache bit
// in its map word before the read starts (swapcache_prepare), so that
// two faults never read one slot into two pages: the second waits and
// then finds the page in the cache.

var errSwapRace = errors.New("mm: swap slot changed under the fault")

// addToSwapCache puts the locked page at pfn into the swap cache for e,
// whose slot was allocated with the cache bit; the cache takes a
// reference.
func (m *Manager) addToSwapCache(pfn phys.PFN, e pgtable.SwapEntry) error {
	if err := m.pool.Get(pfn); err != nil {
		return err
	}
	pg := m.pool.Page(pfn)
	pg.Private = packSwap(e)
	pg.Set(phys.PGSwapCache)
	si := m.swapDev(e)
	si.mu.Lock()
	si.cache[e.Offset] = uint32(pfn) + 1
	m.swapCached.Add(1)
	si.mu.Unlock()
	return nil
}

func packSwap(e pgtable.SwapEntry) uint64 { return uint64(e.Type)<<32 | uint64(e.Offset) }

func unpackSwap(v uint64) pgtable.SwapEntry {
	return pgtable.SwapEntry{Type: uint8(v >> 32), Offset: uint32(v)}
}

// pageSwapEntry is the swap entry of a swap cache page.
func pageSwapEntry(pg *phys.Page) pgtable.SwapEntry { return unpackSwap(pg.Private) }

// deleteFromSwapCache takes the locked page out of the swap cache and
// clears the slot's cache bit, freeing the slot if no PTE names it
// (delete_from_swap_cache and put_swap_folio). The cache's reference is
// the caller's to drop.
func (m *Manager) deleteFromSwapCache(pfn phys.PFN) { m.removeSwapCache(pfn, 0) }

// removeSwapCache is deleteFromSwapCache, done only if the page has
// exactly refs references when refs is not zero. The count is checked
// under the device lock, under which alone a lookup takes a reference
// to a cached page: so no one can find the page between the check and
// the removal (Linux freezes the count in __remove_mapping).
func (m *Manager) removeSwapCache(pfn phys.PFN, refs int32) bool {
	pg := m.pool.Page(pfn)
	e := pageSwapEntry(pg)
	si := m.swapDev(e)
	si.mu.Lock()
	if refs != 0 && pg.RefCount() != refs {
		si.mu.Unlock()
		return false
	}
	si.cache[e.Offset] = 0
	si.smap[e.Offset] &^= swapHasCache
	if si.smap[e.Offset] == 0 {
		si.releaseSlot(e.Offset)
	}
	m.swapCached.Add(-1)
	si.mu.Unlock()
	pg.Clear(phys.PGSwapCache)
	pg.Private = 0
	return true
}

// folioFreeSwap gives up the slot of a locked swap cache page when no swap
// PTE names it any more and it is not being written: the page becomes the
// only copy, so it is marked dirty (folio_free_swap). It reports whether
// it did; the cache's reference is then dropped.
func (m *Manager) folioFreeSwap(pfn phys.PFN) bool {
	pg := m.pool.Page(pfn)
	if !pg.Test(phys.PGSwapCache) || pg.Test(phys.PGWriteback) {
		return false
	}
	if m.swapCount(pageSwapEntry(pg)) != 0 {
		return false
	}
	m.deleteFromSwapCache(pfn)
	pg.Set(phys.PGDirty)
	m.pool.Put(pfn) // not the last: the caller holds one
	return true
}

// tryReclaimSwap drops the swap cache page at pfn, which the cache listed
// for e, if it can do so at once: unlocked, not under writeback, and no
// swap PTE left (__try_to_reclaim_swap). A page nobody maps is then
// freed as the reference is dropped.
func (m *Manager) tryReclaimSwap(pfn phys.PFN, e pgtable.SwapEntry) {
	if !m.pool.TryGet(pfn) {
		return
	}
	pg := m.pool.Page(pfn)
	if !pg.TestAndSet(phys.PGLocked) {
		if pg.Test(phys.PGSwapCache) && pageSwapEntry(pg) == e && pg.MapCount() == 0 {
			m.folioFreeSwap(pfn)
		}
		pg.Clear(phys.PGLocked)
	}
	m.pool.Put(pfn)
}

// freeSwapCache drops the swap cache's hold on a page whose last mapping
// is going, if no swap PTE names its slot either and its lock is free
// (free_swap_cache, as the unmapping's page freeing calls it): else the
// page would sit in the cache, reachable by nothing, until reclaim came
// by. The caller holds a reference.
func (m *Manager) freeSwapCache(pfn phys.PFN) {
	pg := m.pool.Page(pfn)
	if !pg.Test(phys.PGSwapCache) || pg.MapCount() != 0 || pg.TestAndSet(phys.PGLocked) {
		return
	}
	if pg.Test(phys.PGSwapCache) && pg.MapCount() == 0 {
		m.folioFreeSwap(pfn)
	}
	pg.Clear(phys.PGLocked)
}

// lookupSwapCache returns the page cached for e with a reference, if
// there is one (swap_cache_get_folio).
func (m *Manager) lookupSwapCache(si *swapInfo, e pgtable.SwapEntry) (phys.PFN, bool) {
	si.mu.Lock()
	v := si.cache[e.Offset]
	got := v != 0 && m.pool.TryGet(phys.PFN(v-1))
	si.mu.Unlock()
	if !got {
		return 0, false
	}
	pfn := phys.PFN(v - 1)
	pg := m.pool.Page(pfn)
	if !pg.Test(phys.PGSwapCache) || pageSwapEntry(pg) != e {
		m.pool.Put(pfn)
		return 0, false
	}
	return pfn, true
}

// swapin returns the page holding e's data with a reference for the
// caller, from the swap cache or read from the device with up to
// SwapPageWindow-1 following slots read ahead (swapin_readahead). major
// says whether it was read. errSwapRace means the slot was freed
// meanwhile: the PTE naming it has changed, and the fault is retried.
func (m *Manager) swapin(e pgtable.SwapEntry) (pfn phys.PFN, major bool, err error) {
	si := m.swapDev(e)
	if si == nil || e.Offset == 0 || e.Offset >= si.slots {
		return 0, false, errorf("swap-in: bad swap entry %v", e)
	}
	for {
		if pfn, ok := m.lookupSwapCache(si, e); ok {
			return pfn, false, nil
		}
		si.mu.Lock()
		w := si.smap[e.Offset]
		if ch := si.reading[e.Offset]; ch != nil {
			si.mu.Unlock()
			<-ch
			continue
		}
		if w&swapCountMax == 0 {
			si.mu.Unlock()
			return 0, false, errSwapRace
		}
		if w&swapHasCache != 0 {
			// Being added or deleted right now: look again.
			si.mu.Unlock()
			continue
		}
		// Claim the slot and those after it that are swapped out and
		// not cached, up to the window: one contiguous read.
		n := uint32(1)
		for n < SwapPageWindow && e.Offset+n < si.slots && n < swapCluster {
			o := e.Offset + n
			if si.smap[o]&swapCountMax == 0 || si.smap[o]&(swapHasCache|swapBad) != 0 || si.reading[o] != nil {
				break
			}
			n++
		}
		chans := make([]chan struct{}, n)
		for i := range n {
			chans[i] = make(chan struct{})
			si.reading[e.Offset+i] = chans[i]
			si.smap[e.Offset+i] |= swapHasCache
		}
		si.mu.Unlock()
		pfn, err := m.readSwap(si, e.Offset, n, chans)
		return pfn, true, err
	}
}

// readSwap reads slots [off, off+n), which the caller claimed, through a
// reorder queue, the faulting slot off first: it is the next-needed
// block, which the queue never prunes under a tight budget (seed 002);
// the read-ahead slots, further out, go first when memory is short. Each
// slot read whole becomes a swap cache page on the inactive list; a slot
// whose read or page allocation fails is released. It returns the page
// for off, with a reference for the caller.
func (m *Manager) readSwap(si *swapInfo, off, n uint32, chans []chan struct{}) (phys.PFN, error) {
	target, err := m.pool.AllocPage(phys.User &^ phys.Zeroed)
	if err != nil {
		for i := range n {
			m.releaseClaim(si, off+i, chans[i])
		}
		return 0, err
	}
	ro, err := blk.NewReorder(si.dev, int64(off)*phys.PageSize, int64(off+n)*phys.PageSize,
		blk.ReorderConfig{Window: int(min(n, 4)), Budget: int(n), Pool: m.pool, Ctx: phys.NoIO})
	var targetErr error
	done := uint32(0)
	for err == nil && done < n {
		var data []byte
		var boff int64
		boff, data, err = ro.Next()
		if err == io.EOF {
			err = nil
			break
		}
		slot := uint32(boff / phys.PageSize)
		i := slot - off
		switch {
		case err != nil && slot == off:
			targetErr, err = err, nil
			m.releaseClaim(si, slot, chans[i])
		case err != nil:
			err = nil // a read-ahead slot: only that one is lost
			m.releaseClaim(si, slot, chans[i])
		case slot == off:
			dst, _ := m.pool.Frame(target)
			copy(dst, data)
			m.swapinDone(si, target, slot, chans[i])
		default:
			m.readahead(si, slot, data, chans[i])
		}
		done = i + 1
	}
	if ro != nil {
		ro.Close()
	}
	if err != nil && targetErr == nil {
		targetErr = err
	}
	for i := done; i < n; i++ {
		m.releaseClaim(si, off+i, chans[i])
	}
	if targetErr != nil {
		if done == 0 {
			m.releaseClaim(si, off, chans[0])
		}
		m.pool.Put(target)
		m.vm.swapinErrors.Add(1)
		return 0, fmt.Errorf("swap-in of %v: %w", pgtable.SwapEntry{Type: si.typ, Offset: off}, targetErr)
	}
	return target, nil
}

// readahead makes a swap cache page of a slot read ahead, if a page can be
// had without waiting; the cache's reference is its only one.
func (m *Manager) readahead(si *swapInfo, slot uint32, data []byte, ch chan struct{}) {
	pfn, err := m.pool.AllocPage(phys.Nowait | phys.NoMemalloc | phys.MovableAlloc)
	if err != nil {
		m.releaseClaim(si, slot, ch)
		return
	}
	dst, _ := m.pool.Frame(pfn)
	copy(dst, data)
	m.swapinDone(si, pfn, slot, ch)
	m.pool.Put(pfn) // the cache keeps its own
	m.vm.swapRA.Add(1)
}

// swapinDone puts a page just read for slot into the swap cache and on the
// inactive list, and wakes the faults waiting for it.
func (m *Manager) swapinDone(si *swapInfo, pfn phys.PFN, slot uint32, ch chan struct{}) {
	pg := m.pool.Page(pfn)
	pg.Set(phys.PGSwapBacked | phys.PGUptodate | phys.PGLocked)
	m.addToSwapCache(pfn, pgtable.SwapEntry{Type: si.typ, Offset: slot})
	m.lruAdd(pfn)
	pg.Clear(phys.PGLocked)
	si.mu.Lock()
	delete(si.reading, slot)
	si.mu.Unlock()
	close(ch)
	m.vm.pswpin.Add(1)
}

// releaseClaim gives up a slot claimed for reading and not cached.
func (m *Manager) releaseClaim(si *swapInfo, slot uint32, ch chan struct{}) {
	si.mu.Lock()
	if si.reading[slot] != ch {
		si.mu.Unlock()
		return
	}
	delete(si.reading, slot)
	si.smap[slot] &^= swapHasCache
	if si.smap[slot] == 0 {
		si.releaseSlot(slot)
	}
	si.mu.Unlock()
	close(ch)
}
