package phys

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// ErrNoMemory is wrapped by every *AllocError.
var ErrNoMemory = errors.New("out of memory")

// AllocError says why an allocation failed.
type AllocError struct {
	Order   int
	Ctx     Context
	Reason  string
	Free    uint64 // free frames when it gave up
	Min     uint64 // the min watermark then
	Retries int    // rounds of direct reclaim tried
}

func (e *AllocError) Error() string {
	return fmt.Sprintf("phys: order-%d allocation (%v) failed: %s (free %d frames, min %d, %d reclaim rounds)",
		e.Order, e.Ctx, e.Reason, e.Free, e.Min, e.Retries)
}

func (e *AllocError) Unwrap() error { return ErrNoMemory }

// AllocPage allocates one frame.
func (p *Pool) AllocPage(ctx Context) (PFN, error) { return p.Alloc(0, ctx) }

// Alloc allocates a block of 2^order frames, aligned to its size, and
// returns its first frame with a reference count of one. With Compound
// the block is one compound page; with Zeroed its memory is cleared.
//
// The fast path takes the pool lock once and succeeds while free memory
// stays at or above the low watermark. Otherwise the slow path wakes
// kswapd and tries against min (or the atomic limit, or the reserve),
// then, if ctx allows, throttles, reclaims and retries a bounded number
// of times. It never panics and never waits without bound; on failure it
// returns an *AllocError.
func (p *Pool) Alloc(order int, ctx Context) (PFN, error) {
	if order < 0 || order > MaxOrder {
		return 0, &AllocError{Order: order, Ctx: ctx, Reason: fmt.Sprintf("order out of range [0, %d]", MaxOrder)}
	}
	return p.alloc(order, ctx, false)
}

// TryAllocPage is AllocPage for a caller that only needs to know whether
// it got a frame: a failure allocates no error value. The network's
// receive path, which may drop thousands of frames a second when a flood
// meets the watermark, calls it for each; the pool counts the failures as
// any other.
func (p *Pool) TryAllocPage(ctx Context) (PFN, bool) {
	f, err := p.alloc(0, ctx, true)
	return f, err == nil
}

// errQuiet is alloc's failure when the caller asked for no details.
var errQuiet = errors.New("phys: no memory")

func (p *Pool) alloc(order int, ctx Context, quiet bool) (PFN, error) {
	mt := p.migrateType(ctx)
	p.mu.Lock()
	i, ok := p.take(order, mt, ctx, levelLow)
	p.mu.Unlock()
	if !ok {
		var err error
		if i, err = p.allocSlow(order, mt, ctx, quiet); err != nil {
			return 0, err
		}
	}
	if ctx&Zeroed != 0 {
		clear(p.bytes(i, order))
	}
	if debugChecks {
		p.mustCheck()
	}
	return p.pfn(i), nil
}

// take allocates a block if free memory stays at or above l's watermark
// afterwards, and prepares its descriptors. Called with p.mu held.
func (p *Pool) take(order int, mt MigrateType, ctx Context, l level) (uint32, bool) {
	n := uint64(1) << order
	if p.nrFree < n+p.mark(l) {
		return 0, false
	}
	var i uint32
	var ok bool
	if order == 0 {
		i, ok = p.pcpTake(mt)
	} else {
		i, ok = p.rmqueue(order, mt)
	}
	if !ok {
		return 0, false
	}
	p.nrFree -= n
	p.stat.PgAlloc += n

	pg := &p.pages[i]
	pg.order = uint8(order)
	pg.mt = uint8(mt)
	atomic.StoreInt32(&pg.refcount, 1)
	if l == levelNone && p.nrFree < p.wm.Min {
		// Handed out only because the caller may use the reserve. (A
		// reserve attempt that finds memory back above min, freed since
		// the caller's own attempt, gets an ordinary frame.)
		atomic.StoreUint32(&pg.flags, uint32(PGPfmemalloc))
		p.stat.PfmemallocAllocs++
		p.stat.NrPfmemalloc++
	}
	if ctx&Compound != 0 && order > 0 {
		p.prepCompound(i, order)
	}
	if p.nrFree < p.wm.Min {
		p.stat.ReserveHighWater = max(p.stat.ReserveHighWater, p.wm.Min-p.nrFree)
	}
	return i, true
}

// allocSlow is the slow path (Linux's __alloc_pages_slowpath).
func (p *Pool) allocSlow(order int, mt MigrateType, ctx Context, quiet bool) (uint32, error) {
	l := levelMin
	if ctx&Atomic != 0 {
		l = levelAtomic
	}
	try := func(l level) (uint32, bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.take(order, mt, ctx, l)
	}
	fail := func(reason string, retries int) (uint32, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.stat.AllocFailures++
		if quiet {
			return 0, errQuiet
		}
		return 0, &AllocError{Order: order, Ctx: ctx, Reason: reason, Free: p.nrFree, Min: p.wm.Min, Retries: retries}
	}

	attempt := func() (uint32, bool) {
		if i, ok := try(l); ok {
			return i, true
		}
		if ctx.mayUseReserve() {
			return try(levelNone)
		}
		return 0, false
	}

	for retries := 0; ; retries++ {
		p.wakeKswapd(order)
		if i, ok := attempt(); ok {
			return i, nil
		}
		if order > 0 && p.drainPageset() {
			// Frames on the pageset might complete a block.
			if i, ok := attempt(); ok {
				return i, nil
			}
		}
		switch {
		case ctx&DirectReclaim == 0:
			return fail("caller may not reclaim", retries)
		case ctx&Memalloc != 0:
			if ctx.mayUseReserve() {
				return fail("reserve exhausted", retries)
			}
			return fail("memalloc caller may not recurse into reclaim", retries)
		case retries == p.maxRetries:
			return fail("no progress after direct reclaim", retries)
		}
		r := p.hooks.Load().reclaimer
		if r == nil {
			return fail("no reclaimer installed", retries)
		}
		p.throttle(order, ctx)
		p.mu.Lock()
		p.stat.AllocStalls++
		p.mu.Unlock()
		r.Reclaim(order, ctx)
	}
}

// drainPageset returns every frame on the pageset to the buddy lists and
// reports whether there were any.
func (p *Pool) drainPageset() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.pcp.count
	p.pcpDrain(n)
	return n > 0
}

// throttle makes an ordinary direct reclaimer wait while half or more of
// the reserve below min is in use, until kswapd has brought free memory
// back above min or ThrottleTimeout passes (Linux's
// throttle_direct_reclaim). Reclaim itself, atomic callers and memalloc
// callers are never throttled: they are what refills the reserve.
func (p *Pool) throttle(order int, ctx Context) {
	if !ctx.throttleable() {
		return
	}
	p.mu.Lock()
	if p.nrFree > p.wm.Min/2 || p.hopeless {
		p.mu.Unlock()
		return
	}
	p.stat.Throttled++
	p.throttled++
	if p.wake == nil {
		p.wake = make(chan struct{})
	}
	wake := p.wake
	p.mu.Unlock()

	p.wakeKswapd(order)
	t := time.NewTimer(p.throttleTimeout)
	select {
	case <-wake:
	case <-t.C:
	}
	t.Stop()

	p.mu.Lock()
	p.throttled--
	p.mu.Unlock()
}

// wakeThrottled releases throttled reclaimers once free memory is above
// min. Called with p.mu held after anything that frees memory or lowers
// min.
func (p *Pool) wakeThrottled() {
	if p.nrFree > p.wm.Min {
		p.wakeAllThrottled()
	}
}

func (p *Pool) wakeAllThrottled() {
	if p.throttled > 0 && p.wake != nil {
		close(p.wake)
		p.wake = nil
	}
}

// TryGet takes a reference to an allocated frame (of a compound page: to
// its head) unless its count has already dropped to zero
// (folio_try_get): how a walker that found the frame without holding a
// reference, on an LRU list, makes sure it is not being freed.
func (p *Pool) TryGet(f PFN) bool {
	if !p.Contains(f) {
		return false
	}
	i := uint32(f - p.base)
	if p.pages[i].Flags()&PGTail != 0 {
		i = p.pages[i].head - 1
	}
	rc := &p.pages[i].refcount
	for {
		r := atomic.LoadInt32(rc)
		if r <= 0 {
			return false
		}
		if atomic.CompareAndSwapInt32(rc, r, r+1) {
			return true
		}
	}
}

// Get takes another reference to an allocated frame (of a compound page:
// to its head).
func (p *Pool) Get(f PFN) error {
	i, err := p.allocatedHead(f)
	if err != nil {
		return err
	}
	if atomic.AddInt32(&p.pages[i].refcount, 1) <= 1 {
		return fmt.Errorf("phys: get on %v, which has no references", f)
	}
	return nil
}

// GetRefs takes n more references to an allocated frame (of a compound
// page: to its head) at once (folio_ref_add).
func (p *Pool) GetRefs(f PFN, n int) error {
	i, err := p.allocatedHead(f)
	if err != nil {
		return err
	}
	if n < 0 || atomic.AddInt32(&p.pages[i].refcount, int32(n)) <= int32(n) {
		return fmt.Errorf("phys: taking %d references on %v", n, f)
	}
	return nil
}

// Put drops a reference to an allocated frame (of a compound page: to
// its head) and frees the block when it was the last one.
func (p *Pool) Put(f PFN) error {
	i, err := p.allocatedHead(f)
	if err != nil {
		return err
	}
	return p.put(i, int(p.pages[i].order))
}

// PutRefs drops n references to the frame (or its compound head) at once,
// as Linux's folio_put_refs does for a caller that took or inherited
// several: the last one frees it.
func (p *Pool) PutRefs(f PFN, n int) error {
	if n <= 0 {
		if n == 0 {
			return nil
		}
		return fmt.Errorf("phys: dropping %d references from %v", n, f)
	}
	i, err := p.allocatedHead(f)
	if err != nil {
		return err
	}
	pg := &p.pages[i]
	for {
		r := atomic.LoadInt32(&pg.refcount)
		switch {
		case r < int32(n):
			return fmt.Errorf("phys: dropping %d references from %v, which has %d", n, f, r)
		case r > int32(n):
			if atomic.CompareAndSwapInt32(&pg.refcount, r, r-int32(n)) {
				return nil
			}
		case n == 1 || atomic.CompareAndSwapInt32(&pg.refcount, r, 1):
			return p.put(i, int(pg.order))
		}
	}
}

// Free drops the reference Alloc returned for the order-sized block at f
// (Linux's __free_pages), freeing it if that was the last reference. It
// returns an error, and changes nothing, if f is not the head of an
// allocated block of that order, or if the frame is in a state that must
// not be freed (still on an LRU list, locked, under writeback, mapped).
func (p *Pool) Free(f PFN, order int) error {
	i, err := p.allocatedHead(f)
	if err != nil {
		return err
	}
	if pg := &p.pages[i]; int(pg.order) != order {
		return fmt.Errorf("phys: free of %v as order %d, but it was allocated as order %d", f, order, pg.order)
	}
	return p.put(i, order)
}

// allocatedHead checks that f is an allocated frame and returns the index
// of the head of its block.
func (p *Pool) allocatedHead(f PFN) (uint32, error) {
	if !p.Contains(f) {
		return 0, fmt.Errorf("phys: %v: %w", f, ErrRange)
	}
	i := uint32(f - p.base)
	pg := &p.pages[i]
	flags := pg.Flags()
	switch {
	case flags&(PGBuddy|PGPCP) != 0:
		return 0, fmt.Errorf("phys: %v is free (double free?)", f)
	case flags&PGTail != 0:
		i = pg.head - 1
	}
	if atomic.LoadInt32(&p.pages[i].refcount) <= 0 {
		return 0, fmt.Errorf("phys: %v is not allocated (refcount %d)", f, p.pages[i].RefCount())
	}
	return i, nil
}

// put drops a reference on the head at i and frees its block on the last.
func (p *Pool) put(i uint32, order int) error {
	pg := &p.pages[i]
	for {
		r := atomic.LoadInt32(&pg.refcount)
		if r <= 0 {
			return fmt.Errorf("phys: put on %v with refcount %d", p.pfn(i), r)
		}
		if r > 1 {
			if atomic.CompareAndSwapInt32(&pg.refcount, r, r-1) {
				return nil
			}
			continue
		}
		// The last reference: validate, then free, under the lock so that
		// Check never sees a frame with no references and no free list.
		if err := p.freeLast(i, order); err != errRefRaced {
			return err
		}
	}
}

var errRefRaced = errors.New("refcount changed")

// ErrExtraRefs is wrapped by SplitCompound's error when the page has
// references besides its mappings and the caller's: someone else holds
// it (reclaim, a lookup), and the split may work later (-EAGAIN).
var ErrExtraRefs = errors.New("the page has other references")

func (p *Pool) freeLast(i uint32, order int) error {
	pg := &p.pages[i]
	// A page on its owner's LRU list is unlinked first, by the owner's
	// hook; an LRU walk that took a reference meanwhile (TryGet) has
	// unlinked it itself.
	flags := pg.Flags()
	if flags&PGLRU != 0 {
		if release := p.hooks.Load().release; release != nil {
			release(p.pfn(i))
			flags = pg.Flags()
		}
	}
	// Freeze the count (1 to 0) under the lock: from here no TryGet can
	// take a reference, and one that took it before, even for a moment
	// (a speculative lookup that locks the page to look at it), made the
	// count 2 and we are not the last after all. Only then is the state
	// judged: what such a lookup left is gone by the time it drops its
	// reference.
	p.mu.Lock()
	if !atomic.CompareAndSwapInt32(&pg.refcount, 1, 0) {
		p.mu.Unlock()
		return errRefRaced
	}
	flags = pg.Flags()
	if err := p.badFree(i, order, flags); err != nil {
		atomic.StoreInt32(&pg.refcount, 1)
		p.mu.Unlock()
		return err
	}
	if flags&PGHead != 0 {
		p.destroyCompound(i, order)
	}
	if flags&PGPfmemalloc != 0 {
		p.stat.NrPfmemalloc--
	}
	atomic.StoreUint32(&pg.flags, 0)
	pg.Mapping, pg.Index, pg.Private = nil, 0, 0
	if order == 0 {
		p.pcpFree(i)
	} else {
		p.freeOne(i, order)
	}
	p.nrFree += 1 << order
	p.stat.PgFree += 1 << order
	p.wakeThrottled()
	p.mu.Unlock()
	if debugChecks {
		p.mustCheck()
	}
	return nil
}

// badFree says why the block at i, whose last reference is going, must
// not be freed (Linux's free_page_is_bad): still on a list, under I/O,
// locked, or mapped.
func (p *Pool) badFree(i uint32, order int, flags Flags) error {
	pg := &p.pages[i]
	if bad := flags & checkAtFree; bad != 0 {
		return fmt.Errorf("phys: bad page state freeing %v: flags %v", p.pfn(i), bad)
	}
	if mc := pg.MapCount(); mc != 0 {
		return fmt.Errorf("phys: bad page state freeing %v: still mapped %d times", p.pfn(i), mc)
	}
	if flags&PGHead != 0 {
		if !p.largeCountsZero(i, order) {
			return fmt.Errorf("phys: bad page state freeing %v: still mapped whole", p.pfn(i))
		}
		for k := uint32(1); k < 1<<order; k++ {
			if mc := p.pages[i+k].MapCount(); mc != 0 {
				return fmt.Errorf("phys: bad page state freeing %v: frame %d still mapped %d times", p.pfn(i), k, mc)
			}
		}
	}
	return nil
}

// prepCompound makes the block at i one compound page (Linux's
// prep_compound_page). Called with p.mu held, so that Check sees the
// compound page whole or not at all.
func (p *Pool) prepCompound(i uint32, order int) {
	atomic.OrUint32(&p.pages[i].flags, uint32(PGHead))
	for k := uint32(1); k < 1<<order; k++ {
		t := &p.pages[i+k]
		atomic.StoreUint32(&t.flags, uint32(PGTail))
		t.head = i + 1
	}
}

// destroyCompound clears the tails of the compound page at i, with p.mu
// held.
func (p *Pool) destroyCompound(i uint32, order int) {
	for k := uint32(1); k < 1<<order; k++ {
		t := &p.pages[i+k]
		atomic.StoreUint32(&t.flags, 0)
		t.head = 0
		atomic.StoreInt32(&t.refcount, 0)
		t.Mapping, t.Index, t.Private = nil, 0, 0
	}
}

// CompoundHead returns the head of the compound page f belongs to, or f.
func (p *Pool) CompoundHead(f PFN) PFN {
	pg := p.Page(f)
	if pg == nil || !pg.Test(PGTail) {
		return f
	}
	return p.pfn(pg.head - 1)
}

// Large map counts. A compound page that mm maps whole keeps two counters
// beside its frames' own map counts: how many huge entries map it whole
// (Linux's folio->_entire_mapcount) and how many of its frames are mapped
// by at least one small entry, plus EntirelyMapped while any huge entry
// maps it (folio->_nr_pages_mapped). As in Linux, where struct folio
// overlays the first tail pages, they live in the reference count words of
// the first and second tails, which tails never use otherwise. phys only
// sees that they are zero when the page is freed or split.

// EntirelyMapped is added to PagesMapped while any huge entry maps the
// compound page (Linux's ENTIRELY_MAPPED).
const EntirelyMapped = 0x800000

// LargeCounts are a compound page's two large map counts.
type LargeCounts struct{ entire, pagesMapped *int32 }

// LargeCounts returns the large map counts of the compound page at head,
// or false if head is not the head of one of order 2 or more.
func (p *Pool) LargeCounts(head PFN) (LargeCounts, bool) {
	pg := p.Page(head)
	if pg == nil || !pg.Test(PGHead) || pg.order < 2 {
		return LargeCounts{}, false
	}
	i := p.index(head)
	return LargeCounts{&p.pages[i+1].refcount, &p.pages[i+2].refcount}, true
}

// Entire is the number of huge entries mapping the page.
func (c LargeCounts) Entire() int32 { return atomic.LoadInt32(c.entire) }

// AddEntire adds d to Entire and returns the new value.
func (c LargeCounts) AddEntire(d int32) int32 { return atomic.AddInt32(c.entire, d) }

// PagesMapped is the number of frames mapped by a small entry, plus
// EntirelyMapped while Entire is not zero.
func (c LargeCounts) PagesMapped() int32 { return atomic.LoadInt32(c.pagesMapped) }

// AddPagesMapped adds d to PagesMapped and returns the new value.
func (c LargeCounts) AddPagesMapped(d int32) int32 { return atomic.AddInt32(c.pagesMapped, d) }

// largeCountsZero reports whether the compound page at i is mapped by no
// huge entry and has no frame counted as mapped.
func (p *Pool) largeCountsZero(i uint32, order int) bool {
	return order < 2 || atomic.LoadInt32(&p.pages[i+1].refcount) == 0 && atomic.LoadInt32(&p.pages[i+2].refcount) == 0
}

// SplitCompound turns the compound page holding f into 2^order
// independent frames (split_huge_page_to_list_to_order): what reclaim does
// to a huge page it cannot keep whole, and what frees the unmapped part of
// a partly unmapped one.
//
// The caller holds refs references to the page and has made sure nothing
// else can take or drop one meanwhile (Linux freezes the count): every
// other reference must be a mapping, so the count must be exactly refs
// plus the frames' map counts, and no huge entry may map it (the entire
// map count is zero; the large counts are the frames' own again after).
// Afterwards
// each frame holds its own mappings' references, f holds the caller's as
// well, and every frame left with none is freed. Each frame keeps the
// head's page-state flags (f alone keeps the page lock), its Mapping, and
// Index advanced by its offset.
func (p *Pool) SplitCompound(f PFN, refs int32) error {
	if !p.Contains(f) {
		return fmt.Errorf("phys: split %v: %w", f, ErrRange)
	}
	head := p.CompoundHead(f)
	i := uint32(head - p.base)
	hp := &p.pages[i]
	if !hp.Test(PGHead) {
		return fmt.Errorf("phys: split %v: not part of a compound page (flags %v)", f, hp.Flags())
	}
	order := int(hp.order)
	p.mu.Lock()
	maps := int32(0)
	for k := uint32(0); k < 1<<order; k++ {
		maps += p.pages[i+k].MapCount()
	}
	switch ref := hp.RefCount(); {
	case order >= 2 && atomic.LoadInt32(&p.pages[i+1].refcount) != 0:
		p.mu.Unlock()
		return fmt.Errorf("phys: split %v: still mapped whole", head)
	case refs < 1 || ref != maps+refs:
		p.mu.Unlock()
		return fmt.Errorf("phys: split %v: %d references, want %d for %d mappings and the caller's %d: %w", head, ref, maps+refs, maps, refs, ErrExtraRefs)
	}
	inherit := hp.Flags() &^ (PGHead | PGLRU | PGLocked)
	locked := hp.Flags() & PGLocked
	var free []uint32
	for k := uint32(0); k < 1<<order; k++ {
		t := &p.pages[i+k]
		t.head, t.order, t.mt = 0, 0, hp.mt
		t.Mapping, t.Index = hp.Mapping, hp.Index+uint64(k)
		ref := t.MapCount()
		fl := inherit
		if p.pfn(i+k) == f {
			ref += refs
			fl |= locked
		}
		if ref == 0 {
			// Unreferenced: the splitter frees it, with the one
			// reference put drops.
			ref = 1
			free = append(free, i+k)
		}
		atomic.StoreInt32(&t.refcount, ref)
		atomic.StoreUint32(&t.flags, uint32(fl))
	}
	if inherit&PGPfmemalloc != 0 {
		p.stat.NrPfmemalloc += 1<<order - 1
	}
	p.mu.Unlock()
	for _, k := range free {
		if err := p.put(k, 0); err != nil {
			return err
		}
	}
	return nil
}
