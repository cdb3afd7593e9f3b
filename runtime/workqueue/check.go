package workqueue

import (
	"errors"
	"fmt"

	"yolk/mm/phys"
)

// check verifies the invariants in the package doc and returns every
// violation it finds, joined. It takes q.mu; the tests call it between
// steps and while work runs.
func (q *Queue) check() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("workqueue %q: "+format, append([]any{q.name}, args...)...))
	}

	all := q.workers
	if q.rescuer != nil {
		all = append(all[:len(all):len(all)], q.rescuer)
	}
	if n := len(q.workers) + q.nrCreating; n > q.cfg.MaxActive {
		bad("%d workers live or being created, max_active %d", n, q.cfg.MaxActive)
	}

	// Every buffer is held by exactly one live worker or the rescuer, and
	// is an allocated block of the pool of the queue's order.
	seen := make(map[uint32]bool)
	running, scheduled, woken := 0, 0, 0
	for i, wk := range all {
		if !wk.rescuer && wk.index != i {
			bad("worker %d has index %d", i, wk.index)
		}
		for k := 0; k < q.frames; k++ {
			f := uint32(wk.pfn) + uint32(k)
			if seen[f] {
				bad("frame %#x is in two workers' buffers", f)
			}
			seen[f] = true
		}
		pg := q.pool.Page(wk.pfn)
		switch {
		case pg == nil:
			bad("buffer %v is not in the pool", wk.pfn)
		case pg.RefCount() != 1 || pg.Order() != q.cfg.BufferOrder:
			bad("buffer %v: refcount %d, order %d, want 1 and %d", wk.pfn, pg.RefCount(), pg.Order(), q.cfg.BufferOrder)
		case len(wk.buf) != q.frames<<phys.PageShift || cap(wk.buf) != len(wk.buf):
			bad("buffer %v is %d bytes (cap %d), want %d", wk.pfn, len(wk.buf), cap(wk.buf), q.frames<<phys.PageShift)
		}
		if wk.rescuer && (wk.idle || wk.woken) {
			bad("the rescuer is on the idle list or woken from it")
		}
		if wk.woken {
			woken++
		}
		if wk.idle && wk.current != nil {
			bad("idle worker %v runs work", wk.pfn)
		}
		if w := wk.current; w != nil {
			running++
			if w.runner != wk {
				bad("worker %v runs a work whose runner is another", wk.pfn)
			}
		}
		for w := wk.scheduled.head; w != nil; w = w.next {
			scheduled++
			if !w.pending || w.list != &wk.scheduled {
				bad("work scheduled on worker %v: pending %v, on the wrong list", wk.pfn, w.pending)
			}
			if w.runner != wk || w.owner.Load() != q {
				bad("work scheduled on worker %v, which is not running it, or not owned by the queue", wk.pfn)
			}
		}
	}

	idle := 0
	for wk := q.idle.head; wk != nil; wk = wk.idleNext {
		idle++
		if !wk.idle {
			bad("worker %v on the idle list is not marked idle", wk.pfn)
		}
		if wk.rescuer || wk.index >= len(q.workers) || q.workers[wk.index] != wk {
			bad("idle worker %v is not a live worker", wk.pfn)
		}
		if wk.idleNext != nil && wk.idleNext.idlePrev != wk {
			bad("idle list links broken at %v", wk.pfn)
		}
	}
	if idle != q.idle.n {
		bad("%d idle workers listed, count says %d", idle, q.idle.n)
	}

	pending := 0
	var prev *Work
	for w := q.worklist.head; w != nil; w = w.next {
		pending++
		if !w.pending || w.list != &q.worklist || w.owner.Load() != q {
			bad("work on the pending list: pending %v, owner ok %v", w.pending, w.owner.Load() == q)
		}
		if w.prev != prev {
			bad("pending list links broken")
		}
		if prev != nil && prev.seq >= w.seq {
			bad("pending list out of order: %d before %d", prev.seq, w.seq)
		}
		prev = w
	}
	if pending != q.worklist.n || prev != q.worklist.tail {
		bad("pending list has %d works, count says %d", pending, q.worklist.n)
	}
	if running != q.nrRunning {
		bad("%d works running, count says %d", running, q.nrRunning)
	}
	if n := pending + scheduled + running; n != q.nrInflight {
		bad("%d pending + %d scheduled + %d running, in-flight count says %d", pending, scheduled, running, q.nrInflight)
	}
	if q.nrCreating < 0 || q.nrWaking != woken {
		bad("%d workers woken, waking count says %d (%d being created)", woken, q.nrWaking, q.nrCreating)
	}
	for f := q.flushers; f != nil; f = f.next {
		if f.left <= 0 || f.seq > q.seq {
			bad("flusher for %d waits for %d works (last queued %d)", f.seq, f.left, q.seq)
		}
	}
	return errors.Join(errs...)
}
