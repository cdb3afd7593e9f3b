package workqueue

// workList is a FIFO of pending work threaded through the Works
// themselves (Linux's list_head in work_struct), so queueing allocates
// nothing. The pending list and every worker's scheduled list are
// workLists; a Work is on at most one, and w.list says which so that
// Cancel can take it off in O(1).
type workList struct {
	head, tail *Work
	n          int
}

func (l *workList) pushBack(w *Work) {
	w.list = l
	w.prev, w.next = l.tail, nil
	if l.tail == nil {
		l.head = w
	} else {
		l.tail.next = w
	}
	l.tail = w
	l.n++
}

func (l *workList) popFront() *Work {
	w := l.head
	if w != nil {
		l.remove(w)
	}
	return w
}

func (l *workList) remove(w *Work) {
	if w.prev == nil {
		l.head = w.next
	} else {
		w.prev.next = w.next
	}
	if w.next == nil {
		l.tail = w.prev
	} else {
		w.next.prev = w.prev
	}
	w.prev, w.next, w.list = nil, nil, nil
	l.n--
}

// idleList is the pool's idle workers, most recently idle first: Linux
// wakes the first idle worker, whose stack and buffer are the warmest, and
// lets the ones at the back time out.
type idleList struct {
	head *worker
	n    int
}

func (l *idleList) push(wk *worker) {
	wk.idle = true
	wk.idlePrev, wk.idleNext = nil, l.head
	if l.head != nil {
		l.head.idlePrev = wk
	}
	l.head = wk
	l.n++
}

func (l *idleList) pop() *worker {
	wk := l.head
	if wk != nil {
		l.remove(wk)
	}
	return wk
}

func (l *idleList) remove(wk *worker) {
	if wk.idlePrev == nil {
		l.head = wk.idleNext
	} else {
		wk.idlePrev.idleNext = wk.idleNext
	}
	if wk.idleNext != nil {
		wk.idleNext.idlePrev = wk.idlePrev
	}
	wk.idlePrev, wk.idleNext = nil, nil
	wk.idle = false
	l.n--
}
