package phys

import "sync/atomic"

// The pageset: single frames freed recently, kept off the buddy lists so
// that the next order-0 allocation takes a cache-hot frame without a
// split, and a stream of frees does not merge blocks only to split them
// again (Linux's per_cpu_pages, here one per pool; see the package doc).
// Everything here runs with p.mu held.
type pageset struct {
	lists [NrMigrateTypes]List
	count int
	// high is where frees start draining; batch is how many frames a
	// refill takes and a drain returns.
	high, batch int
	drainFrom   MigrateType // round-robin start for drains
}

// init sizes the pageset as Linux's zone_batchsize does: a quarter of a
// thousandth of the pool (at most 256 KiB), rounded down to a power of
// two less one so that batches do not line up with buddy block sizes;
// high is six batches.
func (s *pageset) init(frames uint64) {
	batch := min(frames>>10, 256) / 4
	batch = max(batch, 1)
	b := 1
	for b*2 <= int(batch+batch/2) {
		b *= 2
	}
	s.batch = max(b-1, 1)
	s.high = 6 * s.batch
}

// pcpTake hands out one frame of type mt, refilling the pageset from the
// buddy lists when it has none of that type.
func (p *Pool) pcpTake(mt MigrateType) (uint32, bool) {
	s := &p.pcp
	l := &s.lists[mt]
	if l.Empty() {
		for range s.batch {
			i, ok := p.rmqueue(0, mt)
			if !ok {
				break
			}
			atomic.StoreUint32(&p.pages[i].flags, uint32(PGPCP))
			p.pushBack(l, i)
			s.count++
		}
	}
	if l.Empty() {
		// The buddy lists are empty; a free frame of another type on the
		// pageset is better than failing.
		for _, other := range fallbacks[mt] {
			if !s.lists[other].Empty() {
				l = &s.lists[other]
				break
			}
		}
		if l.Empty() {
			return 0, false
		}
	}
	i := p.popFront(l)
	atomic.StoreUint32(&p.pages[i].flags, 0)
	s.count--
	return i, true
}

// pcpFree puts a freed frame on the pageset, and drains a batch when the
// pageset has grown past high.
func (p *Pool) pcpFree(i uint32) {
	s := &p.pcp
	atomic.StoreUint32(&p.pages[i].flags, uint32(PGPCP))
	p.pushFront(&s.lists[p.blockType(i)], i)
	s.count++
	if s.count >= s.high {
		p.pcpDrain(s.batch)
	}
}

// pcpDrain returns up to n of the pageset's coldest frames to the buddy
// lists, taking from each type's list in turn.
func (p *Pool) pcpDrain(n int) {
	s := &p.pcp
	for n > 0 && s.count > 0 {
		l := &s.lists[s.drainFrom]
		s.drainFrom = (s.drainFrom + 1) % NrMigrateTypes
		if l.Empty() {
			continue
		}
		i := p.popBack(l)
		atomic.StoreUint32(&p.pages[i].flags, 0)
		s.count--
		n--
		p.freeOne(i, 0)
	}
}
