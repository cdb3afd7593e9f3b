package mm

import (
	"sync/atomic"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
	"yolk/runtime/workqueue"
)

// Swap-out I/O (Linux's mm/page_io.c).
//
// pageout hands a locked, unmapped, dirty swap cache page to its device's
// writeback queue: the page is marked PGWriteback, made clean, unlocked
// (a fault may map it again meanwhile: the data cannot change, since it
// is mapped read-only until the write is done and the page is then
// reused or copied) and stays isolated, the write request holding
// reclaim's reference. The queue is a MemReclaim work queue, so a write
// runs even when no worker can be created for want of memory; the
// requests are made at swapon, so writing allocates nothing. When the
// device acknowledges, the page is freed if nothing maps or holds it
// (the device has its only copy), else put back at the end of the
// inactive list; a failed write makes it dirty again and puts it on the
// active list, so nothing is lost.

// swapWrite is one page under writeback.
type swapWrite struct {
	work   workqueue.Work
	m      *Manager
	si     *swapInfo
	pfn    phys.PFN
	entry  pgtable.SwapEntry
	kswapd bool // who reclaims it, for pgsteal_kswapd or pgsteal_direct
	// freed counts, for the reclaimer that started the write, the pages
	// freed when their writes completed.
	freed *atomic.Int64
	done  chan struct{}
}

func (m *Manager) newSwapWrite(si *swapInfo) *swapWrite {
	w := &swapWrite{m: m, si: si}
	w.work.Func = func(*workqueue.Work, []byte) { w.run() }
	return w
}

// pageout starts writing the locked page at pfn, which reclaim isolated,
// to its swap slot (swap_writepage). The isolation reference goes to the
// request; the page lock is released. The returned channel is closed
// when the write has completed. With every request in flight it waits
// for one, with the page locked, as Linux waits in its bio mempool: a
// fault on the page waits for the lock meanwhile, and the writes in
// flight need nothing from this one to complete.
func (m *Manager) pageout(pfn phys.PFN, sc *scanControl) <-chan struct{} {
	pg := m.pool.Page(pfn)
	e := pageSwapEntry(pg)
	si := m.swapDev(e)
	w := <-si.writes
	w.pfn, w.entry, w.kswapd, w.freed = pfn, e, sc.kswapd, &sc.writeFreed
	w.done = make(chan struct{})
	pg.Set(phys.PGWriteback)
	m.writeback.Add(1)
	pg.Clear(phys.PGDirty)
	pg.Clear(phys.PGLocked)
	done := w.done
	si.wq.Queue(&w.work)
	return done
}

// run writes the page and completes it (end_swap_bio_write).
func (w *swapWrite) run() {
	m := w.m
	b, err := m.pool.Frame(w.pfn)
	if err == nil {
		err = w.si.dev.WriteAt(b, int64(w.entry.Offset)*phys.PageSize, 0)
	}
	pfn, kswapd, freed, done := w.pfn, w.kswapd, w.freed, w.done
	w.si.writes <- w
	if m.endWrite(pfn, kswapd, err) {
		freed.Add(1)
	}
	m.writeback.Add(-1)
	close(done)
}

// endWrite completes a write and reports whether the page was freed.
func (m *Manager) endWrite(pfn phys.PFN, kswapd bool, err error) bool {
	pg := m.pool.Page(pfn)
	if err != nil {
		// The slot keeps the cache bit; the page is dirty, so reclaim
		// will write it again before it ever drops it.
		m.vm.swapWriteErrors.Add(1)
		m.logf("Write-error on swap-device (%v): %v", pageSwapEntry(pg), err)
		pg.Set(phys.PGDirty | phys.PGActive)
		pg.Clear(phys.PGWriteback)
		m.putback(pfn, false)
		return false
	}
	m.vm.pswpout.Add(1)
	pg.Clear(phys.PGWriteback)
	if !pg.TestAndSet(phys.PGLocked) {
		if m.freeable(pfn) && m.removeSwapCache(pfn, 2) {
			m.freeUncached(pfn)
			m.countSteal(kswapd, 1)
			return true
		}
		pg.Clear(phys.PGLocked)
	}
	// Mapped again or busy: back to the end reclaim takes from
	// (folio_rotate_reclaimable).
	m.putback(pfn, true)
	return false
}

// freeable reports whether the locked page at pfn may be dropped from the
// swap cache: unmapped, clean and written (the references are checked by
// removeSwapCache).
func (m *Manager) freeable(pfn phys.PFN) bool {
	pg := m.pool.Page(pfn)
	return pg.MapCount() == 0 && !pg.Test(phys.PGDirty) && !pg.Test(phys.PGWriteback)
}
