package phys

// List is a doubly linked list of frames threaded through their
// descriptors' links, like a list_head on page->lru: O(1) to add at either
// end and to remove any member. phys keeps its free lists and pageset in
// Lists; mm may keep allocated frames (its LRU lists) in its own. A frame
// is on at most one List, and whoever owns the frame owns its links. The
// zero List is empty.
type List struct {
	first, last uint32 // frame index + 1; 0 when empty
	n           int
}

// Len returns the number of frames on the list.
func (l *List) Len() int { return l.n }

// Empty reports whether the list has no frames.
func (l *List) Empty() bool { return l.n == 0 }

// Front returns the first frame, if any.
func (l *List) Front(p *Pool) (PFN, bool) { return p.listPFN(l.first) }

// Back returns the last frame, if any.
func (l *List) Back(p *Pool) (PFN, bool) { return p.listPFN(l.last) }

// Next returns the frame after f on its list, if any.
func (l *List) Next(p *Pool, f PFN) (PFN, bool) { return p.listPFN(p.pages[p.index(f)].next) }

// PushFront adds f at the front. f must be an allocated frame of p that
// is on no list.
func (l *List) PushFront(p *Pool, f PFN) { p.pushFront(l, p.index(f)) }

// PushBack adds f at the back.
func (l *List) PushBack(p *Pool, f PFN) { p.pushBack(l, p.index(f)) }

// Remove takes f off the list.
func (l *List) Remove(p *Pool, f PFN) { p.unlink(l, p.index(f)) }

func (p *Pool) listPFN(link uint32) (PFN, bool) {
	if link == 0 {
		return 0, false
	}
	return p.pfn(link - 1), true
}

func (p *Pool) pushFront(l *List, i uint32) {
	pg := &p.pages[i]
	pg.prev = 0
	pg.next = l.first
	if l.first != 0 {
		p.pages[l.first-1].prev = i + 1
	} else {
		l.last = i + 1
	}
	l.first = i + 1
	l.n++
}

func (p *Pool) pushBack(l *List, i uint32) {
	pg := &p.pages[i]
	pg.next = 0
	pg.prev = l.last
	if l.last != 0 {
		p.pages[l.last-1].next = i + 1
	} else {
		l.first = i + 1
	}
	l.last = i + 1
	l.n++
}

func (p *Pool) unlink(l *List, i uint32) {
	pg := &p.pages[i]
	if pg.prev != 0 {
		p.pages[pg.prev-1].next = pg.next
	} else {
		l.first = pg.next
	}
	if pg.next != 0 {
		p.pages[pg.next-1].prev = pg.prev
	} else {
		l.last = pg.prev
	}
	pg.next, pg.prev = 0, 0
	l.n--
}

// popFront removes and returns the first frame's index; the list must not
// be empty.
func (p *Pool) popFront(l *List) uint32 {
	i := l.first - 1
	p.unlink(l, i)
	return i
}

// popBack removes and returns the last frame's index.
func (p *Pool) popBack(l *List) uint32 {
	i := l.last - 1
	p.unlink(l, i)
	return i
}
