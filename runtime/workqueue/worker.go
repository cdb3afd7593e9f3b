package workqueue

import (
	"fmt"
	"time"

	"yolk/mm/phys"
)

// worker is a kworker: a goroutine and the buffer it lends to the work it
// runs. The rescuer is a worker too, one that is never idle-listed and
// runs only on a mayday.
type worker struct {
	buf     []byte
	pfn     phys.PFN
	rescuer bool
	wake    chan struct{} // an idle worker waits here (buffer of one)
	timer   *time.Timer   // idle timeout, or the rescuer's mayday timer

	// Under q.mu.
	idle      bool // on the idle list
	woken     bool // on its way to the pending list (counted in nrWaking)
	idlePrev  *worker
	idleNext  *worker
	index     int      // in q.workers
	current   *Work    // the work running, or nil
	curSeq    uint64   // the running instance's sequence number
	scheduled workList // instances of current's kind to run next (non-reentrancy)
}

func (q *Queue) newWorker(f phys.PFN, rescuer bool) *worker {
	buf, err := q.pool.Block(f, q.cfg.BufferOrder)
	if err != nil {
		// Alloc just handed out this block.
		panic(fmt.Sprintf("workqueue %q: buffer at %v: %v", q.name, f, err))
	}
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &worker{buf: buf, pfn: f, rescuer: rescuer, wake: make(chan struct{}, 1), timer: t}
}

// freeBuffer gives a buffer back to the pool.
func (q *Queue) freeBuffer(f phys.PFN) {
	if err := q.pool.Free(f, q.cfg.BufferOrder); err != nil {
		// The queue allocated it and nobody else frees it: the pool or the
		// queue is corrupt.
		panic(fmt.Sprintf("workqueue %q: freeing a worker buffer: %v", q.name, err))
	}
}

// workerLoop is a worker's life (worker_thread): run work while there is
// some, otherwise wait idle; exit when the queue stops or, beyond the
// first idle worker, after IdleTimeout with nothing to do.
func (q *Queue) workerLoop(wk *worker) {
	q.mu.Lock()
	for {
		if wk.woken {
			wk.woken = false
			q.nrWaking--
		}
		if w := q.claim(wk); w != nil {
			q.mu.Unlock()
			w.Func(w, wk.buf)
			q.mu.Lock()
			q.finish(wk, w)
			continue
		}
		if q.stopping || !q.idleWait(wk) {
			break
		}
	}
	last := len(q.workers) - 1
	q.workers[wk.index] = q.workers[last]
	q.workers[wk.index].index = wk.index
	q.workers = q.workers[:last]
	q.mu.Unlock()
	wk.timer.Stop()
	q.freeBuffer(wk.pfn)
}

// idleWait puts wk on the idle list and waits until Queue or Destroy takes
// it off (true), or until it has been idle for IdleTimeout while another
// worker is idle too (false: it has left the list and must exit). Called
// and returns with q.mu held.
func (q *Queue) idleWait(wk *worker) bool {
	q.idle.push(wk)
	for wk.idle {
		// The idle timer runs only for workers beyond the first, so the
		// one idle worker kept for the next Queue costs no timer.
		armed := q.idle.n > 1
		if armed {
			wk.timer.Reset(q.cfg.IdleTimeout)
		}
		q.mu.Unlock()
		timedOut := false
		select {
		case <-wk.wake:
		case <-wk.timer.C:
			timedOut = true
		}
		if armed && !timedOut {
			wk.timer.Stop()
		}
		q.mu.Lock()
		// Still idle after a wake-up: a stale poke from a Queue that took
		// us off the list during an earlier wait. Wait again.
		if wk.idle && timedOut && q.idle.n > 1 {
			q.idle.remove(wk)
			return false
		}
	}
	return true
}

// claim takes the next work for wk: first what was scheduled on it, then
// the head of the pending list. Work that is still running elsewhere is
// handed to the worker running it instead, which runs it next, so that no
// work item runs on two workers at once. Called with q.mu held; returns
// nil if there is nothing for wk.
func (q *Queue) claim(wk *worker) *Work {
	w := wk.scheduled.popFront()
	for w == nil {
		if w = q.worklist.popFront(); w == nil {
			return nil
		}
		if r := w.runner; r != nil {
			r.scheduled.pushBack(w)
			w = nil
		}
	}
	w.pending = false
	w.runner = wk
	wk.current = w
	wk.curSeq = w.seq
	q.nrRunning++
	return w
}

// finish accounts for w, which wk has just run. Called with q.mu held.
func (q *Queue) finish(wk *worker, w *Work) {
	w.runner = nil
	wk.current = nil
	q.nrRunning--
	q.stats.Processed++
	if wk.rescuer {
		q.stats.RescuerRuns++
	}
	q.maybeDisown(w)
	q.retire(wk.curSeq)
}

// manager creates workers when Queue asks for one (Linux's manager role,
// which an idle worker takes on; here it is a goroutine of its own so that
// it can wait for memory while workers run).
func (q *Queue) manager() {
	cooldown := time.NewTimer(time.Hour)
	cooldown.Stop()
	for {
		select {
		case <-q.stop:
			return
		case <-q.manageCh:
		}
		for q.maybeCreateWorker(cooldown) {
		}
	}
}

// needToCreate reports whether work is waiting that no worker, woken or
// being created, is on its way to take, no worker is idle, and max_active
// allows another worker (need_to_create_worker). Called with q.mu held.
func (q *Queue) needToCreate() bool {
	return !q.stopping &&
		q.worklist.n > q.nrWaking+q.nrCreating &&
		q.idle.n == 0 &&
		len(q.workers)+q.nrCreating < q.cfg.MaxActive
}

// maybeCreateWorker creates one worker if one is needed (maybe_create_worker
// and create_worker) and reports whether to look again.
func (q *Queue) maybeCreateWorker(cooldown *time.Timer) bool {
	q.mu.Lock()
	if !q.needToCreate() {
		q.mu.Unlock()
		return false
	}
	// Count the worker from now on, so that max_active holds and Queue
	// does not ask for it twice.
	q.nrCreating++
	q.mu.Unlock()

	// First without waiting and without the reserve: a worker is not
	// worth the memory reclaim needs.
	f, err := q.pool.Alloc(q.cfg.BufferOrder, phys.Nowait|phys.NoMemalloc)
	if err != nil {
		q.mu.Lock()
		q.stats.CreateFailures++
		mayday := q.rescuer != nil
		if mayday {
			q.stats.Maydays++
		}
		q.mu.Unlock()
		if mayday {
			// The rescuer runs the work now; we keep trying below.
			poke(q.maydayCh)
		}
		// On a plain queue this is where a deadlock can live: the
		// allocation may wait for reclaim, and reclaim may wait for the
		// very work this worker is wanted for.
		f, err = q.pool.Alloc(q.cfg.BufferOrder, q.cfg.Ctx)
	}

	q.mu.Lock()
	q.nrCreating--
	if err != nil || q.stopping {
		if err != nil {
			q.stats.CreateFailures++
		}
		q.mu.Unlock()
		if err == nil {
			q.freeBuffer(f) // Destroy drained the queue meanwhile
			return false
		}
		cooldown.Reset(CreateCooldown)
		select {
		case <-cooldown.C:
			return true
		case <-q.stop:
			cooldown.Stop()
			return false
		}
	}
	wk := q.newWorker(f, false)
	wk.woken = true // on its way to the pending list
	q.nrWaking++
	wk.index = len(q.workers)
	q.workers = append(q.workers, wk)
	q.stats.Created++
	q.stats.MaxWorkers = max(q.stats.MaxWorkers, len(q.workers))
	q.wg.Go(func() { q.workerLoop(wk) })
	q.mu.Unlock()
	return true
}

// rescuerLoop is the rescuer (rescuer_thread): it sleeps until a mayday,
// then runs pending work with its own buffer until none is left. It also
// keeps the mayday timer: while work is pending it checks, every
// MaydayTimeout, whether the work at the head of the list is still the
// same, and if so summons itself (pool_mayday_timeout).
func (q *Queue) rescuerLoop(r *worker) {
	var head uint64 // sequence number of the work at the head at the last look
	for {
		select {
		case <-q.stop:
			r.timer.Stop()
			q.freeBuffer(r.pfn)
			return
		case <-q.maydayCh:
			q.rescue(r)
		case <-q.watchCh:
			q.mu.Lock()
			q.watch(r, &head)
			q.mu.Unlock()
		case <-r.timer.C:
			q.mu.Lock()
			if w := q.worklist.head; w != nil && w.seq == head {
				q.stats.Maydays++
				q.mu.Unlock()
				q.rescue(r)
				q.mu.Lock()
			}
			q.watch(r, &head)
			q.mu.Unlock()
		}
	}
}

// watch arms the mayday timer on the work now at the head of the pending
// list, or stops watching if there is none. Called with q.mu held.
func (q *Queue) watch(r *worker, head *uint64) {
	w := q.worklist.head
	if w == nil {
		q.watching = false
		return
	}
	q.watching = true
	*head = w.seq
	r.timer.Reset(q.cfg.MaydayTimeout)
}

// rescue runs pending work on the rescuer until the pending list is empty.
func (q *Queue) rescue(r *worker) {
	q.mu.Lock()
	for {
		w := q.claim(r)
		if w == nil {
			break
		}
		q.mu.Unlock()
		w.Func(w, r.buf)
		q.mu.Lock()
		q.finish(r, w)
	}
	q.mu.Unlock()
}
