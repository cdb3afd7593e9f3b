package mm

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"yolk/blk"
	"yolk/blk/journal"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
	"yolk/runtime/workqueue"
)

// The page cache of journaled regions (Linux's mm/filemap.c, with the
// block device's address_space and jbd2 beneath it).
//
// A Region is a range of a block device behind a blk/journal, opened once
// and mapped by any number of address spaces (MmapRegion), shared or
// private. It is what a file is to Linux's mm: an address_space with its
// pages indexed by offset (the cache), the VMAs that map it in an
// interval tree by offset (i_mmap), and writeback that makes its dirty
// pages durable, here always as journal transactions.
//
// # Pages
//
// A page cache page has Mapping = the *Region and Index = its page offset
// in the region; it is not swap-backed, so it lives on the file LRU lists
// beside the lazily freed anonymous pages. The cache holds one reference;
// each PTE one more. A miss reads the page, and up to Readahead-1 pages
// after it that are not cached, through a reorder queue over the journal
// (regionView): reads see the latest committed data, also for blocks
// committed but not yet checkpointed home, because the journal reads
// those from the log (journal.ReadBlock, its log map). So a page may be
// dropped as soon as its last commit is durable; nothing is pinned until
// checkpoint.
//
// # Shared and private mappings
//
// A shared mapping maps the cache page itself. A read fault maps it clean
// (writable if the area is, but without the software Dirty bit, so the
// hardware entry is read-only); the first write faults and marks the page
// PGDirty before the PTE's Dirty bit is set, under the page-table lock.
// So PGDirty covers every byte written through any mapping, and
// writeback can start by clearing it: clear PGDirty, clean every PTE
// through the file rmap (page_mkclean), then copy the page into the
// journal. A store before a PTE is cleaned is in the copy; one after it
// faults and dirties the page again for the next writeback.
//
// A private mapping maps cache pages read-only; a write copies the page
// into a new anonymous page with the area's anon_vma (do_cow_fault,
// wp_page_copy), which from then on is anonymous memory like any other:
// swap-backed, reverse-mapped through its anon_vma, shared with children
// copy-on-write. Writes through a private mapping never reach the region.
// Fork copies no PTE of a cache page: the child faults it in again from
// the cache, as Linux leaves file pages to be refaulted.
//
// # Writeback
//
// Every writeback is one journal transaction, and transactions of a
// region are made one at a time (Region.wbMu):
//
//   - Msync(MS_SYNC) commits every dirty page of the range, in each region
//     it maps shared, as one transaction and returns when it is durable.
//     After a crash the range is all there, or, if msync had not
//     returned, whatever the last durable transaction left: never part of
//     one. A range with more dirty pages than a transaction holds
//     (journal Layout.MaxTransaction) is refused, dirty pages left dirty.
//   - background writeback (the region's flusher) commits pages dirty for
//     longer than DirtyExpire (dirty_expire_centisecs), every
//     WritebackInterval (dirty_writeback_centisecs);
//   - reclaim hands a dirty page it has unmapped to the region's
//     writeback work and moves on; the page is freed when its commit is
//     durable.
//
// Background writeback and reclaim commit pages nobody msync'd, as
// Linux's writeback does: after a crash the region is the state after
// some committed transaction, which is an msync's only if nothing else
// committed since.
//
// # Memory
//
// Reclaim waits on writeback, so writeback must not wait for memory. The
// writeback work runs on a MemReclaim queue (Config.Queue, or one made at
// Open), the journal's commits on the journal's, and both allocate
// nothing after their Open: the work copies pages into the journal's
// transaction buffer. A journal whose queue has no rescuer stalls reclaim
// when the pool is empty (seed 001, bcache's journal_write on system_wq).
//
// # Locks
//
// Region.wbMu (one writeback at a time) comes before the page lock, which
// comes before page-table locks; Region.immapMu (i_mmap_rwsem) is taken
// like an anon_vma root lock, under the mmap lock with no page-table lock
// held, by VMA changes (write) and rmap walks (read); Region.mu guards the
// cache index and is a leaf below the page-table locks. A cache lookup
// takes its reference under Region.mu, and a page leaves the cache under
// it only when its reference count shows nobody else holds it
// (remove_mapping), so no reference is ever taken to a page being freed.

// Region errors.
var (
	// ErrRegionBusy: a region still mapped cannot be closed.
	ErrRegionBusy = errors.New("mm: region is mapped")
	// ErrRegionClosed: the region has been closed.
	ErrRegionClosed = errors.New("mm: region closed")
	// ErrMsyncTooBig: a range has more dirty pages than one journal
	// transaction holds.
	ErrMsyncTooBig = errors.New("mm: msync range has more dirty pages than a transaction holds")
)

// Writeback defaults, Linux's vm.dirty_expire_centisecs (30 s) and
// vm.dirty_writeback_centisecs (5 s).
const (
	DefaultDirtyExpire       = 30 * time.Second
	DefaultWritebackInterval = 5 * time.Second
	// DefaultReadahead is how many pages a page cache miss reads, the
	// missing one included (Linux's default read-ahead is 128 KiB; the
	// pool here is a thousand times smaller).
	DefaultReadahead = 8
)

// RegionConfig describes a region to open.
type RegionConfig struct {
	// Name is what /proc/PID/maps shows for mappings of the region.
	Name string
	// Journal is the open journal the region's data goes through; its
	// block size must be the page size. The region does not close it.
	Journal *journal.Journal
	// Start is the region's first block on the journal's device (a home
	// block: outside the journal's own area), Pages its length.
	Start, Pages uint64
	// Queue runs the writeback work. Nil makes one with MemReclaim.
	Queue *workqueue.Queue
	// DirtyExpire is how long a page stays dirty before background
	// writeback commits it; 0 means DefaultDirtyExpire. WritebackInterval
	// is how often the flusher looks; 0 means DefaultWritebackInterval,
	// negative runs no flusher (WritebackExpired does its work).
	DirtyExpire       time.Duration
	WritebackInterval time.Duration
	// Readahead is the number of pages one miss reads; 0 means
	// DefaultReadahead.
	Readahead int
}

// Region is an open journaled region: a mappable object (address_space).
type Region struct {
	m     *Manager
	cfg   RegionConfig
	j     *journal.Journal
	view  regionView
	maxTx int
	epoch time.Time

	mu      sync.Mutex
	cache   map[uint64]phys.PFN      // i_pages
	reading map[uint64]chan struct{} // pages being read in, closed when done
	closed  bool

	immapMu sync.RWMutex
	immap   itree[*VMA] // i_mmap: every VMA mapping the region, by page offset
	nrMaps  int

	wbMu   sync.Mutex
	wbList []*fileWrite // pages reclaim handed over, under mu
	wbWork workqueue.Work
	wq     *workqueue.Queue
	ownQ   bool

	stop, flusherDone chan struct{}

	stats regionCounters
}

// regionCounters are a region's event counts.
type regionCounters struct {
	commits, pagesWritten, pagesRead, readahead atomic.Uint64
	msyncs, bgWritebacks, reclaimWrites         atomic.Uint64
	writeErrors, readErrors                     atomic.Uint64
}

// RegionStats are a region's page counts and counters since Open.
type RegionStats struct {
	Cached, Dirty, Writeback, Mapped int64
	Commits                          uint64 // writeback transactions made durable
	PagesWritten                     uint64 // pages those carried
	PagesRead                        uint64 // pages read in (misses and read-ahead)
	Readahead                        uint64 // of which read ahead
	Msyncs                           uint64 // MS_SYNC calls that reached the region
	BgWritebacks                     uint64 // flusher transactions
	ReclaimWrites                    uint64 // pages reclaim handed to writeback
	WriteErrors                      uint64 // commits that failed (the pages stay dirty)
	ReadErrors                       uint64 // reads that failed (the fault got SIGBUS)
}

// fileWrite is one page reclaim handed to writeback.
type fileWrite struct {
	pfn    phys.PFN
	kswapd bool
	freed  *atomic.Int64
	done   chan struct{}
}

// OpenRegion opens a journaled region of cfg.Journal's device.
func (m *Manager) OpenRegion(cfg RegionConfig) (*Region, error) {
	j := cfg.Journal
	switch {
	case j == nil:
		return nil, errorf("region: no journal")
	case j.BlockSize() != phys.PageSize:
		return nil, errorf("region %s: journal block size %d is not the page size", cfg.Name, j.BlockSize())
	case cfg.Pages == 0 || cfg.Pages > 1<<20:
		return nil, errorf("region %s: %d pages", cfg.Name, cfg.Pages)
	}
	devBlocks := uint64(j.Device().Size()) / phys.PageSize
	l := j.Layout()
	if cfg.Start+cfg.Pages > devBlocks || cfg.Start+cfg.Pages < cfg.Start {
		return nil, errorf("region %s: blocks %d+%d beyond the device's %d", cfg.Name, cfg.Start, cfg.Pages, devBlocks)
	}
	if cfg.Start < l.LogStart+l.LogBlocks && l.LogStart < cfg.Start+cfg.Pages {
		return nil, errorf("region %s: blocks %d+%d overlap the journal's %d+%d", cfg.Name, cfg.Start, cfg.Pages, l.LogStart, l.LogBlocks)
	}
	if cfg.DirtyExpire == 0 {
		cfg.DirtyExpire = DefaultDirtyExpire
	}
	if cfg.WritebackInterval == 0 {
		cfg.WritebackInterval = DefaultWritebackInterval
	}
	if cfg.Readahead <= 0 {
		cfg.Readahead = DefaultReadahead
	}
	r := &Region{m: m, cfg: cfg, j: j, maxTx: l.MaxTransaction, epoch: time.Now(),
		cache: map[uint64]phys.PFN{}, reading: map[uint64]chan struct{}{}, wq: cfg.Queue}
	r.view = regionView{r}
	if r.wq == nil {
		q, err := workqueue.New("writeback-"+cfg.Name, m.pool, workqueue.Config{Flags: workqueue.MemReclaim, MaxActive: 1})
		if err != nil {
			return nil, errorf("region %s: %w", cfg.Name, err)
		}
		r.wq, r.ownQ = q, true
	}
	r.wbWork.Func = func(*workqueue.Work, []byte) { r.reclaimWriteback() }
	if cfg.WritebackInterval > 0 {
		r.stop, r.flusherDone = make(chan struct{}), make(chan struct{})
		go r.flusher()
	}
	m.regionsMu.Lock()
	if m.regions == nil {
		m.regions = map[*Region]struct{}{}
	}
	m.regions[r] = struct{}{}
	m.regionsMu.Unlock()
	return r, nil
}

// Name is the region's name.
func (r *Region) Name() string { return r.cfg.Name }

// Pages is the region's length in pages.
func (r *Region) Pages() uint64 { return r.cfg.Pages }

// Stats returns the region's figures.
func (r *Region) Stats() RegionStats {
	s := RegionStats{Commits: r.stats.commits.Load(), PagesWritten: r.stats.pagesWritten.Load(),
		PagesRead: r.stats.pagesRead.Load(), Readahead: r.stats.readahead.Load(), Msyncs: r.stats.msyncs.Load(),
		BgWritebacks: r.stats.bgWritebacks.Load(), ReclaimWrites: r.stats.reclaimWrites.Load(),
		WriteErrors: r.stats.writeErrors.Load(), ReadErrors: r.stats.readErrors.Load()}
	r.mu.Lock()
	defer r.mu.Unlock()
	s.Cached = int64(len(r.cache))
	for _, pfn := range r.cache {
		pg := r.m.pool.Page(pfn)
		if pg.Test(phys.PGDirty) {
			s.Dirty++
		}
		if pg.Test(phys.PGWriteback) {
			s.Writeback++
		}
		if pg.MapCount() > 0 {
			s.Mapped++
		}
	}
	return s
}

// Close writes back every dirty page, drops the cache and stops the
// flusher. Every mapping of the region must be gone (ErrRegionBusy). If
// writeback fails, Close returns its error and drops the pages it could
// not write all the same.
// The journal stays open: closing it is the caller's.
func (r *Region) Close() error {
	r.immapMu.RLock()
	maps := r.nrMaps
	r.immapMu.RUnlock()
	if maps != 0 {
		return fmt.Errorf("%w: %s has %d mappings", ErrRegionBusy, r.cfg.Name, maps)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrRegionClosed
	}
	r.closed = true
	r.mu.Unlock()
	if r.stop != nil {
		close(r.stop)
		<-r.flusherDone
	}
	err := r.Sync()
	r.wq.Flush()
	// Reclaim may hold a page isolated for a moment: wait for it to put
	// it back or free it. If writeback failed (the journal aborted), the
	// pages it could not write are dropped all the same, their stores
	// lost, as Linux's last close of a block device drops what
	// sync_blockdev could not write (kill_bdev): nothing else would ever
	// free them once the region is gone.
	for {
		r.mu.Lock()
		for idx, pfn := range r.cache {
			if pg := r.m.pool.Page(pfn); err != nil && pg.RefCount() == 1 && pg.MapCount() == 0 {
				r.m.clearPageDirty(pg)
			}
			if r.removeLocked(idx, pfn, 1) {
				r.mu.Unlock()
				r.m.pool.Put(pfn)
				r.mu.Lock()
			}
		}
		left := len(r.cache)
		r.mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if r.ownQ {
		r.wq.Destroy()
	}
	r.m.regionsMu.Lock()
	delete(r.m.regions, r)
	r.m.regionsMu.Unlock()
	return err
}

// regionOf returns the region a page cache page belongs to.
func regionOf(pg *phys.Page) *Region {
	r, _ := pg.Mapping.(*Region)
	return r
}

// home is the device block of page idx.
func (r *Region) home(idx uint64) uint64 { return r.cfg.Start + idx }

// Page cache lookups and reads.

// findGet returns the cached page at idx with a reference
// (filemap_get_folio), or false.
func (r *Region) findGet(idx uint64) (phys.PFN, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pfn, ok := r.cache[idx]
	if ok && r.m.pool.Get(pfn) != nil {
		ok = false
	}
	return pfn, ok
}

// getPage returns the page at idx with a reference for the caller, from
// the cache or read in with read-ahead (filemap_fault). major says it was
// read.
func (r *Region) getPage(idx uint64) (pfn phys.PFN, major bool, err error) {
	if idx >= r.cfg.Pages {
		return 0, false, errorf("region %s: page %d beyond its %d", r.cfg.Name, idx, r.cfg.Pages)
	}
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return 0, false, ErrRegionClosed
		}
		if pfn, ok := r.cache[idx]; ok {
			err := r.m.pool.Get(pfn)
			r.mu.Unlock()
			return pfn, false, err
		}
		if ch := r.reading[idx]; ch != nil {
			r.mu.Unlock()
			<-ch
			continue
		}
		// Claim idx and the pages after it that are neither cached nor
		// being read, up to the read-ahead window: one pipelined read.
		n := uint64(1)
		for n < uint64(r.cfg.Readahead) && idx+n < r.cfg.Pages {
			if _, ok := r.cache[idx+n]; ok || r.reading[idx+n] != nil {
				break
			}
			n++
		}
		chans := make([]chan struct{}, n)
		for i := range chans {
			chans[i] = make(chan struct{})
			r.reading[idx+uint64(i)] = chans[i]
		}
		r.mu.Unlock()
		pfn, err := r.readPages(idx, n, chans)
		return pfn, true, err
	}
}

// readPages reads [idx, idx+n), claimed by the caller, through a reorder
// queue over the journal's view of the device: the page wanted first
// (never pruned), the read-ahead after it, dropped first when memory is
// short. Each page read becomes a cache page on the inactive file list;
// it returns the one at idx with a reference for the caller.
func (r *Region) readPages(idx, n uint64, chans []chan struct{}) (phys.PFN, error) {
	m := r.m
	target, err := m.pool.AllocPage(phys.User &^ phys.Zeroed)
	if err != nil {
		for i := range n {
			r.releaseClaim(idx+i, chans[i])
		}
		return 0, err
	}
	ro, err := blk.NewReorder(&r.view, int64(idx)*phys.PageSize, int64(idx+n)*phys.PageSize,
		blk.ReorderConfig{Window: int(min(n, 4)), Budget: int(n), Pool: m.pool, Ctx: phys.NoIO})
	var targetErr error
	done := uint64(0)
	for err == nil && done < n {
		var data []byte
		var off int64
		off, data, err = ro.Next()
		if err == io.EOF {
			err = nil
			break
		}
		at := uint64(off / phys.PageSize)
		i := at - idx
		switch {
		case err != nil && at == idx:
			targetErr, err = err, nil
			r.releaseClaim(at, chans[i])
		case err != nil:
			err = nil // read-ahead: only that page is lost
			r.releaseClaim(at, chans[i])
		case at == idx:
			dst, _ := m.pool.Frame(target)
			copy(dst, data)
			m.pool.Get(target) // the cache's
			r.addToCache(at, target, chans[i])
		default:
			r.readahead(at, data, chans[i])
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
		r.releaseClaim(idx+i, chans[i])
	}
	if targetErr != nil {
		if done == 0 {
			r.releaseClaim(idx, chans[0])
		}
		m.pool.Put(target)
		r.stats.readErrors.Add(1)
		return 0, fmt.Errorf("region %s: reading page %d: %w", r.cfg.Name, idx, targetErr)
	}
	return target, nil
}

// readahead caches a page read ahead if a frame can be had without
// waiting.
func (r *Region) readahead(idx uint64, data []byte, ch chan struct{}) {
	pfn, err := r.m.pool.AllocPage(phys.Nowait | phys.NoMemalloc | phys.MovableAlloc)
	if err != nil {
		r.releaseClaim(idx, ch)
		return
	}
	dst, _ := r.m.pool.Frame(pfn)
	copy(dst, data)
	r.addToCache(idx, pfn, ch)
	r.stats.readahead.Add(1)
}

// addToCache makes pfn, read for idx, a cache page (the reference the
// caller passes in becomes the cache's) on the inactive file list, and
// wakes the faults waiting for it (filemap_add_folio).
func (r *Region) addToCache(idx uint64, pfn phys.PFN, ch chan struct{}) {
	m := r.m
	pg := m.pool.Page(pfn)
	pg.Mapping = r
	pg.Index = idx
	pg.Private = 0
	pg.Set(phys.PGUptodate)
	r.mu.Lock()
	r.cache[idx] = pfn
	delete(r.reading, idx)
	r.mu.Unlock()
	m.nrFilePages.Add(1)
	m.lruAdd(pfn)
	close(ch)
	r.stats.pagesRead.Add(1)
	m.vm.pgpgin.Add(phys.PageSize >> 10)
}

func (r *Region) releaseClaim(idx uint64, ch chan struct{}) {
	r.mu.Lock()
	if r.reading[idx] == ch {
		delete(r.reading, idx)
		close(ch)
	}
	r.mu.Unlock()
}

// removeLocked takes the page at idx out of the cache if the only
// references are the cache's and refs-1 the caller accounts for, and it
// is clean, unmapped and not under writeback (remove_mapping); the
// cache's reference is then the caller's to drop. r.mu is held.
func (r *Region) removeLocked(idx uint64, pfn phys.PFN, refs int32) bool {
	pg := r.m.pool.Page(pfn)
	if r.cache[idx] != pfn || pg.RefCount() != refs || pg.MapCount() != 0 ||
		pg.Flags()&(phys.PGDirty|phys.PGWriteback) != 0 {
		return false
	}
	delete(r.cache, idx)
	r.m.nrFilePages.Add(-1)
	return true
}

// removePage is removeLocked for a page the caller has locked.
func (r *Region) removePage(pfn phys.PFN, refs int32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removeLocked(r.m.pool.Page(pfn).Index, pfn, refs)
}

// regionView is the region as a read-only block device whose reads see
// the latest committed data: what the reorder queue reads through.
type regionView struct{ r *Region }

func (v *regionView) BlockSize() int          { return phys.PageSize }
func (v *regionView) Size() int64             { return int64(v.r.cfg.Pages) * phys.PageSize }
func (v *regionView) Features() blk.Features  { return 0 }
func (v *regionView) Flush() error            { return nil }
func (v *regionView) Close() error            { return nil }
func (v *regionView) Trim(off, n int64) error { return blk.ErrReadOnly }
func (v *regionView) WriteAt([]byte, int64, blk.WriteFlags) error {
	return blk.ErrReadOnly
}
func (v *regionView) WriteZeroes(int64, int64, blk.WriteFlags) error { return blk.ErrReadOnly }

func (v *regionView) ReadAt(p []byte, off int64) error {
	if off%phys.PageSize != 0 || len(p)%phys.PageSize != 0 || off < 0 || off+int64(len(p)) > v.Size() {
		return fmt.Errorf("region %s: read of %d bytes at %d: %w", v.r.cfg.Name, len(p), off, blk.ErrRange)
	}
	for i := 0; i < len(p); i += phys.PageSize {
		idx := uint64(off+int64(i)) / phys.PageSize
		if err := v.r.j.ReadBlock(v.r.home(idx), p[i:i+phys.PageSize]); err != nil {
			return err
		}
	}
	return nil
}

// Dirty state. Every change of PGDirty on a cache page goes through these,
// which keep NR_FILE_DIRTY and the time the page was first dirtied (in
// Private, as nanoseconds since the region opened, under the region's
// lock: the fault that dirties a page holds a page-table lock, below
// which Region.mu nests, and the flusher reads it under Region.mu alone.
// Not an atomic: Private is not 64-bit aligned on 32-bit ARM).

// setPageDirty is folio_mark_dirty for a cache page.
func (m *Manager) setPageDirty(pg *phys.Page) {
	if !pg.TestAndSet(phys.PGDirty) {
		m.nrFileDirty.Add(1)
		if r := regionOf(pg); r != nil {
			r.mu.Lock()
			pg.Private = uint64(time.Since(r.epoch))
			r.mu.Unlock()
		}
	}
}

// clearPageDirty is folio_clear_dirty_for_io's test-and-clear: it reports
// whether the page was dirty.
func (m *Manager) clearPageDirty(pg *phys.Page) bool {
	if pg.TestAndClear(phys.PGDirty) {
		m.nrFileDirty.Add(-1)
		return true
	}
	return false
}

// pageMkclean clears the Dirty bit of every shared PTE mapping the locked
// cache page at pfn (folio_mkclean): the next store through each faults
// and dirties the page again.
func (m *Manager) pageMkclean(pfn phys.PFN) {
	m.rmapWalk(pfn, func(mp Mapping, pte pgtable.PTE) {
		if pte.Has(pgtable.Dirty) {
			mp.AS.pt.Set(mp.Addr, pte.Without(pgtable.Dirty))
		}
	})
}

// Writeback.

// Sync commits every dirty page of the region, in transactions of at
// most a transaction's worth of pages (sync_file_range over all of it):
// what Close does, and what a caller may do before a checkpoint.
func (r *Region) Sync() error {
	r.wbMu.Lock()
	for {
		// Dirty pages only: those reclaim handed to the writeback work
		// stay under writeback until it runs, which needs wbMu.
		pfns := r.collect(0, r.cfg.Pages, func(pg *phys.Page) bool { return pg.Test(phys.PGDirty) })
		if len(pfns) == 0 {
			break
		}
		n := min(len(pfns), r.maxTx)
		err := r.commit(pfns[:n])
		r.putAll(pfns)
		if err != nil {
			r.wbMu.Unlock()
			return err
		}
	}
	r.wbMu.Unlock()
	r.wq.Flush() // and reclaim's writeback: durable when it returns
	return nil
}

// msync commits the dirty pages of [lo, hi) as one transaction and
// returns when it is durable (vfs_fsync_range).
func (r *Region) msync(lo, hi uint64) error {
	r.stats.msyncs.Add(1)
	r.wbMu.Lock()
	defer r.wbMu.Unlock()
	pfns := r.collect(lo, hi, func(pg *phys.Page) bool { return pg.Flags()&(phys.PGDirty|phys.PGWriteback) != 0 })
	defer r.putAll(pfns)
	if len(pfns) > r.maxTx {
		return fmt.Errorf("%w: %d dirty pages in %s [%d, %d), a transaction holds %d", ErrMsyncTooBig, len(pfns), r.cfg.Name, lo, hi, r.maxTx)
	}
	return r.commit(pfns)
}

// WritebackExpired commits the pages dirty for longer than DirtyExpire,
// oldest first, in transactions of at most a transaction's worth
// (wb_writeback for WB_REASON_PERIODIC). The flusher calls it every
// WritebackInterval; it returns how many pages it committed.
func (r *Region) WritebackExpired() (int, error) {
	r.wbMu.Lock()
	defer r.wbMu.Unlock()
	cutoff := uint64(max(time.Since(r.epoch)-r.cfg.DirtyExpire, 0))
	type aged struct {
		pfn     phys.PFN
		dirtied uint64
	}
	var old []aged
	r.mu.Lock()
	for _, pfn := range r.cache {
		if pg := r.m.pool.Page(pfn); pg.Test(phys.PGDirty) && pg.Private <= cutoff && r.m.pool.Get(pfn) == nil {
			old = append(old, aged{pfn, pg.Private})
		}
	}
	r.mu.Unlock()
	slices.SortFunc(old, func(a, b aged) int { return cmp.Compare(a.dirtied, b.dirtied) })
	pfns := make([]phys.PFN, len(old))
	for i := range old {
		pfns[i] = old[i].pfn
	}
	defer r.putAll(pfns)
	done := 0
	for i := 0; i < len(pfns); i += r.maxTx {
		batch := pfns[i:min(i+r.maxTx, len(pfns))]
		if err := r.commit(batch); err != nil {
			return done, err
		}
		r.stats.bgWritebacks.Add(1)
		done += len(batch)
	}
	return done, nil
}

func (r *Region) flusher() {
	defer close(r.flusherDone)
	t := time.NewTicker(r.cfg.WritebackInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			if _, err := r.WritebackExpired(); err != nil {
				r.m.logf("writeback of %s: %v", r.cfg.Name, err)
			}
		}
	}
}

// collect returns the cache pages in [lo, hi) that want says yes to,
// each with a reference, in index order.
func (r *Region) collect(lo, hi uint64, want func(*phys.Page) bool) []phys.PFN {
	var out []phys.PFN
	r.mu.Lock()
	if hi-lo < uint64(len(r.cache)) {
		for idx := lo; idx < hi; idx++ {
			if pfn, ok := r.cache[idx]; ok && want(r.m.pool.Page(pfn)) && r.m.pool.Get(pfn) == nil {
				out = append(out, pfn)
			}
		}
	} else {
		for idx, pfn := range r.cache {
			if idx >= lo && idx < hi && want(r.m.pool.Page(pfn)) && r.m.pool.Get(pfn) == nil {
				out = append(out, pfn)
			}
		}
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b phys.PFN) int {
		ia, ib := r.m.pool.Page(a).Index, r.m.pool.Page(b).Index
		switch {
		case ia < ib:
			return -1
		case ia > ib:
			return 1
		}
		return 0
	})
	return out
}

func (r *Region) putAll(pfns []phys.PFN) {
	for _, pfn := range pfns {
		r.m.pool.Put(pfn)
	}
}

// commit writes the pages (referenced by the caller, at most a
// transaction's worth) that are dirty, or handed to reclaim's writeback
// and not yet written, as one transaction, and returns when it is
// durable. r.wbMu is held, so every page reclaim has handed over is
// still waiting for the writeback work, which needs wbMu: its data goes
// in this transaction too. On failure the pages are dirty again.
func (r *Region) commit(pfns []phys.PFN) error {
	if len(pfns) == 0 {
		return nil
	}
	m := r.m
	h, err := r.j.Begin(len(pfns))
	if err != nil {
		return r.writeError(err, nil)
	}
	var written, ours []phys.PFN
	for _, pfn := range pfns {
		pg := m.pool.Page(pfn)
		m.lockPage(pfn)
		dirty := m.clearPageDirty(pg)
		if !dirty && !pg.Test(phys.PGWriteback) {
			pg.Clear(phys.PGLocked)
			continue
		}
		if dirty {
			m.pageMkclean(pfn)
		}
		if !pg.Test(phys.PGWriteback) {
			// Under writeback until durable: clean now, it must not
			// be dropped before the journal can give it back.
			pg.Set(phys.PGWriteback)
			m.nrFileWriteback.Add(1)
			ours = append(ours, pfn)
		}
		b, _ := m.pool.Frame(pfn)
		err = h.Add(r.home(pg.Index), b)
		pg.Clear(phys.PGLocked)
		written = append(written, pfn) // dirty again if anything fails
		if err != nil {
			break
		}
	}
	if err == nil {
		err = h.Commit()
	} else {
		// Add refuses only what OpenRegion has ruled out (a home outside
		// the device or inside the log, more blocks than promised), so
		// this is a bug's path; the handle still has to end, and what it
		// holds is committed, so the pages are all made dirty again.
		h.Commit()
	}
	for _, pfn := range ours {
		m.pool.Page(pfn).Clear(phys.PGWriteback)
		m.nrFileWriteback.Add(-1)
	}
	if err != nil {
		return r.writeError(err, written)
	}
	r.stats.commits.Add(1)
	r.stats.pagesWritten.Add(uint64(len(written)))
	m.vm.pgpgout.Add(uint64(len(written)) * (phys.PageSize >> 10))
	return nil
}

// writeError makes the pages dirty again, so nothing is lost, and
// returns err with the region's name.
func (r *Region) writeError(err error, pfns []phys.PFN) error {
	r.stats.writeErrors.Add(1)
	for _, pfn := range pfns {
		r.m.setPageDirty(r.m.pool.Page(pfn))
	}
	return fmt.Errorf("region %s: writeback: %w", r.cfg.Name, err)
}

// pageoutFile hands a locked, unmapped, dirty cache page that reclaim
// isolated to the region's writeback work (pageout for a file page): it
// is made clean, marked PGWriteback and unlocked; the isolation reference
// goes with it. The channel is closed when its commit has completed.
func (m *Manager) pageoutFile(r *Region, pfn phys.PFN, sc *scanControl) <-chan struct{} {
	pg := m.pool.Page(pfn)
	w := &fileWrite{pfn: pfn, kswapd: sc.kswapd, freed: &sc.writeFreed, done: make(chan struct{})}
	pg.Set(phys.PGWriteback)
	m.nrFileWriteback.Add(1)
	m.clearPageDirty(pg)
	pg.Clear(phys.PGLocked)
	r.stats.reclaimWrites.Add(1)
	r.mu.Lock()
	r.wbList = append(r.wbList, w)
	r.mu.Unlock()
	r.wq.Queue(&r.wbWork)
	return w.done
}

// reclaimWriteback is the writeback work: it commits the pages reclaim
// handed over, a transaction's worth at a time, and completes each
// (end_page_writeback): freed if nothing maps or holds it, else put back
// at the end of the inactive list; after a failed commit, dirty again and
// active.
func (r *Region) reclaimWriteback() {
	m := r.m
	r.wbMu.Lock()
	defer r.wbMu.Unlock()
	for {
		r.mu.Lock()
		batch := r.wbList[:min(len(r.wbList), r.maxTx)]
		r.wbList = r.wbList[len(batch):]
		r.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		h, err := r.j.Begin(len(batch))
		for i := 0; err == nil && i < len(batch); i++ {
			pg := m.pool.Page(batch[i].pfn)
			b, _ := m.pool.Frame(batch[i].pfn)
			err = h.Add(r.home(pg.Index), b)
		}
		if err == nil {
			err = h.Commit()
		} else if h != (journal.Handle{}) {
			h.Commit()
		}
		if err != nil {
			r.stats.writeErrors.Add(1)
			m.logf("writeback of %s: %v", r.cfg.Name, err)
		} else {
			r.stats.commits.Add(1)
			r.stats.pagesWritten.Add(uint64(len(batch)))
			m.vm.pgpgout.Add(uint64(len(batch)) * (phys.PageSize >> 10))
		}
		for _, w := range batch {
			if m.endFileWrite(r, w, err) {
				w.freed.Add(1)
			}
			close(w.done)
		}
	}
}

// endFileWrite completes one reclaim write and reports whether the page
// was freed.
func (m *Manager) endFileWrite(r *Region, w *fileWrite, err error) bool {
	pg := m.pool.Page(w.pfn)
	m.nrFileWriteback.Add(-1)
	if err != nil {
		m.setPageDirty(pg)
		pg.Set(phys.PGActive)
		pg.Clear(phys.PGWriteback)
		m.putback(w.pfn, false)
		return false
	}
	pg.Clear(phys.PGWriteback)
	if !pg.TestAndSet(phys.PGLocked) {
		if pg.MapCount() == 0 && r.removePage(w.pfn, 2) {
			m.freeUncached(w.pfn)
			m.countSteal(w.kswapd, 1)
			return true
		}
		pg.Clear(phys.PGLocked)
	}
	m.putback(w.pfn, true)
	return false
}

// shrinkFilePage is shrink_folio_list for a locked, isolated cache page
// that was not referenced: unmapped from every space, then freed if
// clean, or handed to writeback if dirty.
func (m *Manager) shrinkFilePage(r *Region, head phys.PFN, sc *scanControl) reclaimOutcome {
	pg := m.pool.Page(head)
	if pg.MapCount() > 0 {
		if unmapped, err := m.tryToUnmapFile(head); err != nil || !unmapped {
			return reclaimActivate
		}
	}
	if pg.Test(phys.PGDirty) {
		if !sc.mayWrite {
			return reclaimKeep
		}
		sc.writes = append(sc.writes, m.pageoutFile(r, head, sc))
		return reclaimWriteback
	}
	if !r.removePage(head, 2) {
		return reclaimKeep
	}
	m.freeUncached(head)
	return reclaimFreed
}

// tryToUnmapFile removes every PTE mapping the locked cache page at pfn
// (try_to_unmap for a file page): the data stays in the cache, so the
// entries are simply cleared; a dirty one dirties the page.
func (m *Manager) tryToUnmapFile(pfn phys.PFN) (bool, error) {
	pg := m.pool.Page(pfn)
	refs := 0
	err := m.rmapWalk(pfn, func(mp Mapping, pte pgtable.PTE) {
		if pte.Has(pgtable.Dirty) {
			m.setPageDirty(pg)
		}
		mp.AS.pt.Set(mp.Addr, 0)
		mp.AS.filerss--
		m.removeFileRmap(pfn)
		refs++
	})
	if perr := m.pool.PutRefs(pfn, refs); err == nil {
		err = perr
	}
	return pg.MapCount() == 0, err
}

// addFileRmap and removeFileRmap account one PTE mapping a cache page
// (NR_FILE_MAPPED counts pages mapped at least once).
func (m *Manager) addFileRmap(pfn phys.PFN) {
	if m.pool.Page(pfn).IncMapCount() == 1 {
		m.nrFileMapped.Add(1)
	}
}

func (m *Manager) removeFileRmap(pfn phys.PFN) {
	if m.pool.Page(pfn).DecMapCount() == 0 {
		m.nrFileMapped.Add(-1)
	}
}

// The i_mmap tree. A VMA mapping a region is in it from linkVMA to
// unlinkVMA, indexed by the page offsets it maps; range changes take the
// region's immapMu like setRange takes the anon_vma root lock.

func (v *VMA) immapInsert() {
	if r := v.file; r != nil && !v.inImmap {
		r.immapMu.Lock()
		v.immapInsertLocked()
		r.nrMaps++
		r.immapMu.Unlock()
	}
}

func (v *VMA) immapInsertLocked() {
	v.file.immap.insert(&v.fnode, uint64(v.pgoff), uint64(v.pgoff)+uint64(v.pages())-1, v)
	v.inImmap = true
}

func (v *VMA) immapRemove() {
	if r := v.file; r != nil && v.inImmap {
		r.immapMu.Lock()
		r.immap.remove(&v.fnode)
		v.inImmap = false
		r.nrMaps--
		r.immapMu.Unlock()
	}
}

// immapLockRemove takes v out of its region's tree while its range
// changes, holding the region's immapMu until the returned function puts
// it back with its new range: an rmap walk sees it before or after,
// never missing.
func (v *VMA) immapLockRemove() func() {
	r := v.file
	if r == nil || !v.inImmap {
		return func() {}
	}
	r.immapMu.Lock()
	r.immap.remove(&v.fnode)
	return func() {
		v.immapInsertLocked()
		r.immapMu.Unlock()
	}
}

// fileRmapCandidates lists the VMAs of r whose range covers page idx
// (vma_interval_tree_foreach over i_mmap), as rmapCandidates does for an
// anon_vma, under immapMu alone.
func (r *Region) rmapCandidates(idx uint64, buf []rmapCand) []rmapCand {
	r.immapMu.RLock()
	r.immap.overlapping(idx, idx, func(v *VMA) bool {
		base := v.start + uint32(idx-uint64(v.pgoff))<<pgtable.PageShift
		buf = append(buf, rmapCand{as: v.as, base: base, from: base, to: base + pgtable.PageSize})
		return true
	})
	r.immapMu.RUnlock()
	return buf
}

// Faults.

// doFileFault handles an access to an empty PTE of a region mapping, with
// the page-table lock held (do_read_fault, do_shared_fault, do_cow_fault):
// the page is found in the cache or read in with the lock dropped; a
// store through a private mapping copies it into a new anonymous page,
// anything else maps the cache page itself, writable and dirty only for a
// store through a shared mapping. A read that fails fails this fault
// alone (VM_FAULT_SIGBUS).
func (as *AddressSpace) doFileFault(v *VMA, va uint32, acc pgtable.Access) error {
	m := as.mgr
	pool := m.pool
	r := v.file
	as.ptl.Unlock()
	pfn, major, err := r.getPage(v.linearIndex(va))
	as.ptl.Lock()
	if err != nil {
		var ae *phys.AllocError
		if errors.As(err, &ae) {
			return err
		}
		return &FaultError{Addr: va, Access: acc, Reason: SwapError, Err: err}
	}
	if major {
		as.majflt++
		m.vm.pgmajfault.Add(1)
	}
	if acc == pgtable.AccessWrite && !v.sharedFile() {
		defer pool.Put(pfn)
		cow, err := as.newPage(phys.User &^ phys.Zeroed) // every byte is copied over
		if err != nil {
			return err
		}
		dst, _ := pool.Frame(cow)
		src, _ := pool.Frame(pfn)
		copy(dst, src)
		if err := as.pt.Populate(va, &as.ptl); err != nil {
			pool.Put(cow)
			return err
		}
		if !as.pt.PTE(va).None() { // another fault got there: retry the access
			return pool.Put(cow)
		}
		as.anonVMAPrepare(v)
		m.pageAddNewAnonRmap(cow, v, va)
		m.lruAdd(cow)
		as.rss++
		as.pt.Set(va, pgtable.MkPTE(uint32(cow.Addr()), v.ptePerms()|pgtable.Young|pgtable.Dirty|pgtable.Write))
		return nil
	}
	if err := as.pt.Populate(va, &as.ptl); err != nil {
		pool.Put(pfn)
		return err
	}
	if !as.pt.PTE(va).None() {
		return pool.Put(pfn)
	}
	flags := v.ptePerms() | pgtable.Young
	if v.sharedFile() && v.flags&VMWrite != 0 {
		flags |= pgtable.Write
		if acc == pgtable.AccessWrite {
			m.setPageDirty(pool.Page(pfn))
			flags |= pgtable.Dirty
		}
	}
	// The reference getPage took becomes the PTE's.
	m.addFileRmap(pfn)
	as.filerss++
	as.pt.Set(va, pgtable.MkPTE(uint32(pfn.Addr()), flags))
	return nil
}

// DropCaches drops every clean, unmapped page cache page nobody else
// holds, of every region (echo 1 > /proc/sys/vm/drop_caches:
// invalidate_mapping_pages over each address_space), and returns how
// many it freed. Dirty pages and pages under writeback stay: it writes
// nothing.
func (m *Manager) DropCaches() int {
	n := 0
	for _, r := range m.openRegions() {
		r.mu.Lock()
		var drop []phys.PFN
		for idx, pfn := range r.cache {
			if r.removeLocked(idx, pfn, 1) {
				drop = append(drop, pfn)
			}
		}
		r.mu.Unlock()
		for _, pfn := range drop {
			m.pool.Put(pfn)
		}
		n += len(drop)
	}
	return n
}
