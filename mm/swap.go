package mm

import (
	"runtime"
	"sync"

	"yolk/mm/phys"
)

// The LRU lists (Linux's lruvec and mm/swap.c).
//
// Every anonymous page that is mapped, or sits in the swap cache, is on
// exactly one of four lists, threaded through its phys.Page links, or is
// isolated: taken off by reclaim, which then holds a reference to it and
// owes it a putback or a free. Which list follows from the page's flags,
// so that a page's list can always be recomputed:
//
//	PGSwapBacked  PGActive  list
//	yes           no        inactive anon
//	yes           yes       active anon
//	no            no        inactive file   (lazily freed anonymous pages,
//	no            yes       active file      as Linux keeps them there)
//
// A compound page is one entry, its head, and counts for all its frames.
// Whoever changes PGSwapBacked or PGActive of a page that may be on a
// list does it through setLRUFlags, under the list lock, moving the page
// with it. The lists hold no reference: the last Put of a page with PGLRU
// set calls lruRelease through phys's release hook, which unlinks it.
//
// New pages go to the front of the inactive list (Linux 5.9: anonymous
// pages start inactive, so that a large streaming allocation cannot push
// the real working set out through the active list); reclaim takes from
// the back. lru.mu is a leaf below the page-table locks and the swap
// device locks, above phys's zone lock; nothing is freed with it held.
type lruList int

const (
	lruInactiveAnon lruList = iota
	lruActiveAnon
	lruInactiveFile
	lruActiveFile
	nrLRULists
)

var lruNames = [nrLRULists]string{"Inactive(anon)", "Active(anon)", "Inactive(file)", "Active(file)"}

func (l lruList) String() string { return lruNames[l] }

func (l lruList) active() bool { return l == lruActiveAnon || l == lruActiveFile }

// lruOf is folio_lru_list: the list a page's flags put it on.
func lruOf(f phys.Flags) lruList {
	l := lruInactiveAnon
	if f&phys.PGSwapBacked == 0 {
		l = lruInactiveFile
	}
	if f&phys.PGActive != 0 {
		l++
	}
	return l
}

type lruvec struct {
	mu       sync.Mutex
	lists    [nrLRULists]phys.List
	frames   [nrLRULists]int64 // frames on each list (a compound page counts whole)
	isolated int64             // frames taken off by reclaim (NR_ISOLATED_ANON)
}

// folioNr is the number of frames of the page whose head is head.
func (m *Manager) folioNr(head phys.PFN) int {
	if _, large := m.pool.LargeCounts(head); large {
		return hugeNr
	}
	return 1
}

// lruAdd puts a page that is on no list at the front of its list
// (folio_add_lru). New anonymous pages come here inactive.
func (m *Manager) lruAdd(head phys.PFN) {
	l := &m.lru
	pg := m.pool.Page(head)
	l.mu.Lock()
	m.lruLink(head, pg, false)
	l.mu.Unlock()
}

// lruLink adds a page to its list, at the back (the end reclaim takes
// from) if tail is set; lru.mu is held.
func (m *Manager) lruLink(head phys.PFN, pg *phys.Page, tail bool) {
	l := &m.lru
	if pg.TestAndSet(phys.PGLRU) {
		panic("mm: lru_add of a page already on an LRU list") // a bug: the lists would be corrupt
	}
	list := lruOf(pg.Flags())
	if tail {
		l.lists[list].PushBack(m.pool, head)
	} else {
		l.lists[list].PushFront(m.pool, head)
	}
	l.frames[list] += int64(m.folioNr(head))
}

// lruUnlink takes a page off its list; lru.mu is held and PGLRU was set.
func (m *Manager) lruUnlink(head phys.PFN, pg *phys.Page) {
	l := &m.lru
	list := lruOf(pg.Flags())
	l.lists[list].Remove(m.pool, head)
	l.frames[list] -= int64(m.folioNr(head))
}

// lruRelease is phys's release hook: the last reference to a page on a
// list is going.
func (m *Manager) lruRelease(head phys.PFN) {
	l := &m.lru
	pg := m.pool.Page(head)
	l.mu.Lock()
	if pg.Test(phys.PGLRU) {
		m.lruUnlink(head, pg)
		pg.Clear(phys.PGLRU | phys.PGActive)
	}
	l.mu.Unlock()
}

// setLRUFlags sets and clears PGSwapBacked, PGActive and PGReferenced on
// a page, moving it to the list its new flags name if it is on one
// (lru_lazyfree, lru_deactivate, folio_activate). It returns the flags
// before.
func (m *Manager) setLRUFlags(head phys.PFN, set, clear phys.Flags) phys.Flags {
	l := &m.lru
	pg := m.pool.Page(head)
	l.mu.Lock()
	old := pg.Flags()
	onLRU := old&phys.PGLRU != 0
	if onLRU {
		m.lruUnlink(head, pg)
		pg.Clear(phys.PGLRU)
	}
	pg.Clear(clear)
	pg.Set(set)
	if onLRU {
		m.lruLink(head, pg, false)
	}
	l.mu.Unlock()
	return old
}

// isolate takes up to nr frames' worth of pages from the back of a list,
// each with a reference for the caller (isolate_lru_folios). A page whose
// count has already dropped to zero is being freed: lruRelease will take
// it off, so it is left alone.
func (m *Manager) isolate(list lruList, nr int, out []phys.PFN) []phys.PFN {
	l := &m.lru
	l.mu.Lock()
	defer l.mu.Unlock()
	lst := &l.lists[list]
	taken := 0
	for skipped := 0; taken < nr && skipped < lst.Len(); {
		head, ok := lst.Back(m.pool)
		if !ok {
			break
		}
		pg := m.pool.Page(head)
		if !m.pool.TryGet(head) {
			// Rotate it out of the way; the release hook unlinks it.
			lst.Remove(m.pool, head)
			lst.PushFront(m.pool, head)
			skipped++
			continue
		}
		n := m.folioNr(head)
		m.lruUnlink(head, pg)
		pg.Clear(phys.PGLRU)
		l.isolated += int64(n)
		taken += n
		out = append(out, head)
	}
	return out
}

// isolateOne takes one page off its list with a reference for the
// caller (folio_isolate_lru); false if it is on none.
func (m *Manager) isolateOne(head phys.PFN) bool {
	l := &m.lru
	pg := m.pool.Page(head)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !pg.Test(phys.PGLRU) || !m.pool.TryGet(head) {
		return false
	}
	m.lruUnlink(head, pg)
	pg.Clear(phys.PGLRU)
	l.isolated += int64(m.folioNr(head))
	return true
}

// putback returns an isolated page to the list its flags name, at the
// front or, with tail, at the back, and drops the isolation reference
// (folio_putback_lru).
func (m *Manager) putback(head phys.PFN, tail bool) error {
	l := &m.lru
	pg := m.pool.Page(head)
	l.mu.Lock()
	l.isolated -= int64(m.folioNr(head))
	m.lruLink(head, pg, tail)
	l.mu.Unlock()
	return m.pool.Put(head)
}

// unisolate forgets an isolated page that the caller is about to free or
// has handed elsewhere (its frames no longer count as isolated).
func (m *Manager) unisolate(nr int) {
	m.lru.mu.Lock()
	m.lru.isolated -= int64(nr)
	m.lru.mu.Unlock()
}

// LRUStats are the LRU lists' sizes in frames.
type LRUStats struct {
	InactiveAnon, ActiveAnon, InactiveFile, ActiveFile int64
	Isolated                                           int64
}

// LRU returns the lists' sizes.
func (m *Manager) LRU() LRUStats {
	l := &m.lru
	l.mu.Lock()
	defer l.mu.Unlock()
	return LRUStats{InactiveAnon: l.frames[lruInactiveAnon], ActiveAnon: l.frames[lruActiveAnon],
		InactiveFile: l.frames[lruInactiveFile], ActiveFile: l.frames[lruActiveFile], Isolated: l.isolated}
}

// lockPage takes the page lock (folio_lock), yielding while someone else
// holds it: reclaim, for as long as it takes to unmap the page or start
// its write. The caller holds a reference and no page-table lock.
func (m *Manager) lockPage(pfn phys.PFN) {
	pg := m.pool.Page(pfn)
	for pg.TestAndSet(phys.PGLocked) {
		runtime.Gosched()
	}
}
