package workqueue

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"yolk/mm/phys"
)

// Flags are a queue's WQ_* flags.
type Flags uint8

const (
	// MemReclaim is WQ_MEM_RECLAIM: the queue may be needed to free
	// memory, so New creates a rescuer, with its buffer, that runs pending
	// work when no worker can be created.
	MemReclaim Flags = 1 << iota

	allFlags = MemReclaim
)

func (f Flags) String() string {
	switch f {
	case 0:
		return "0"
	case MemReclaim:
		return "MemReclaim"
	}
	return fmt.Sprintf("Flags(%#x)", uint8(f))
}

// Defaults and limits, named after Linux's.
const (
	// DefaultMaxActive is the max_active a zero Config.MaxActive means.
	DefaultMaxActive = 4
	// MaxMaxActive is WQ_MAX_ACTIVE, the largest max_active accepted.
	MaxMaxActive = 512
	// DefaultIdleTimeout is IDLE_WORKER_TIMEOUT.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultMaydayTimeout is MAYDAY_INITIAL_TIMEOUT (10 ms).
	DefaultMaydayTimeout = 10 * time.Millisecond
	// CreateCooldown is CREATE_COOLDOWN: how long the manager waits after
	// failing to allocate a worker's buffer before trying again.
	CreateCooldown = time.Second
)

// ErrConfig is wrapped by every error New returns for a bad Config.
var ErrConfig = errors.New("workqueue: bad configuration")

// Config describes a queue (the arguments of alloc_workqueue).
type Config struct {
	Flags Flags
	// MaxActive is max_active: the most workers the queue has at once, and
	// so the most work items its workers run at once. 0 means
	// DefaultMaxActive.
	MaxActive int
	// BufferOrder is the order of each worker's buffer: 2^BufferOrder
	// frames. 0 is one 4 KiB frame.
	BufferOrder int
	// Ctx is the allocation context for the rescuer's buffer at New, and
	// for a new worker's buffer once the manager's attempt without
	// waiting has failed: it may enter direct reclaim and wait. The zero
	// Context (Nowait) means phys.Kernel, since a fallback that may not
	// wait would only repeat the first attempt.
	Ctx phys.Context
	// IdleTimeout is how long an idle worker beyond the first waits for
	// work before it exits and frees its buffer. 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaydayTimeout is how long the work at the head of the pending list
	// may wait without a worker taking it before a MemReclaim queue calls
	// its rescuer (checked once per MaydayTimeout, so one to two of them
	// pass). 0 means DefaultMaydayTimeout.
	MaydayTimeout time.Duration
}

// Work is a work item (struct work_struct). Set Func and queue it; the
// Work is the caller's, may be queued again once it has started running,
// and carries the links that put it on a queue's lists, so queueing
// allocates nothing. The zero Work with a Func set is ready (INIT_WORK).
// A Work must not be copied after it is first queued, nor its Func
// changed while it is pending or running.
type Work struct {
	// Func is the work function. It runs on a worker (or the rescuer)
	// and gets the Work and that worker's buffer: scratch space of
	// 2^BufferOrder frames that belongs to the work only for the call.
	// Its contents are whatever the last work on that worker left.
	Func func(w *Work, buf []byte)

	// owner is the queue the Work is pending or running on, nil while it
	// is idle. It is set by Queue and cleared, under the owner's lock,
	// when the Work goes idle; the fields below are protected by the
	// owner's lock.
	owner atomic.Pointer[Queue]

	pending   bool      // queued, not yet started (WORK_STRUCT_PENDING)
	canceling int       // CancelSyncs in progress: Queue refuses meanwhile
	seq       uint64    // the pending instance's queueing sequence number
	runner    *worker   // the worker running it, or nil
	list      *workList // the list it is pending on
	prev      *Work
	next      *Work
}

// Pending reports whether w is queued and has not started yet
// (work_pending). The answer may be stale as soon as it is returned.
func (w *Work) Pending() bool {
	q := w.owner.Load()
	if q == nil {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return w.owner.Load() == q && w.pending
}

// Stats are a queue's counters: a snapshot of its state and its events
// since New.
type Stats struct {
	Workers    int // live workers (nr_workers), the rescuer not counted
	Creating   int // workers being created: their buffers may be allocated already
	Idle       int // of those, idle (nr_idle)
	Running    int // work items running now, on workers and the rescuer
	Pending    int // work items queued and not yet started
	MaxWorkers int // most live workers at once

	Created        uint64 // workers created
	CreateFailures uint64 // failed allocations of a new worker's buffer, each attempt counted
	Maydays        uint64 // times the rescuer was summoned
	RescuerRuns    uint64 // work items run by the rescuer (Linux's "rescued")
	Processed      uint64 // work items completed, by workers and the rescuer
}

// Queue is a work queue and its worker pool (struct workqueue_struct and
// its worker_pool).
type Queue struct {
	name   string
	pool   *phys.Pool
	cfg    Config
	frames int // per buffer

	manageCh chan struct{} // wakes the manager
	maydayCh chan struct{} // summons the rescuer
	watchCh  chan struct{} // asks the rescuer to watch the pending list
	stop     chan struct{} // closed by Destroy once the queue is drained
	done     chan struct{} // closed when Destroy has finished
	wg       sync.WaitGroup

	mu       sync.Mutex
	worklist workList // pending work, oldest first (pool->worklist)
	idle     idleList
	workers  []*worker // live workers, not the rescuer
	rescuer  *worker
	flushers *flusher
	seq      uint64 // sequence number of the last work queued

	nrRunning  int // work items running
	nrInflight int // pending (on any list) plus running
	// nrCreating counts workers the manager is allocating buffers for.
	// They count against max_active, but not as help on the way: the
	// allocation may wait for ever (the deadlock this package is about).
	nrCreating int
	// nrWaking counts workers on their way to the pending list: idle
	// workers Queue has woken and new workers started but not yet
	// running. Queue wakes another only for work beyond them.
	nrWaking int
	// watching says the rescuer is watching the pending list for work
	// that no worker takes, or has been asked to.
	watching   bool
	destroying bool // Destroy has begun; work is still accepted while it drains
	dead       bool // drained: Queue refuses work
	stopping   bool // workers, manager and rescuer are to exit

	stats Stats
}

// flusher is a Flush, FlushWork or CancelSync waiting for in-flight work:
// all work queued up to seq, or (single) the one instance queued as seq.
type flusher struct {
	seq    uint64
	single bool
	left   int
	done   chan struct{}
	next   *flusher
}

// New creates a queue (alloc_workqueue) drawing worker buffers from pool.
// A MemReclaim queue's rescuer and its buffer are created now, with
// cfg.Ctx, which may enter reclaim; New fails if that allocation does.
// Workers are created as work arrives. Destroy the queue when done: its
// manager and rescuer run until then.
func New(name string, pool *phys.Pool, cfg Config) (*Queue, error) {
	if cfg.MaxActive == 0 {
		cfg.MaxActive = DefaultMaxActive
	}
	if cfg.Ctx == 0 {
		cfg.Ctx = phys.Kernel
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaydayTimeout == 0 {
		cfg.MaydayTimeout = DefaultMaydayTimeout
	}
	switch {
	case pool == nil:
		return nil, fmt.Errorf("%w: %q: no pool", ErrConfig, name)
	case cfg.Flags&^allFlags != 0:
		return nil, fmt.Errorf("%w: %q: unknown flags %v", ErrConfig, name, cfg.Flags&^allFlags)
	case cfg.MaxActive < 1 || cfg.MaxActive > MaxMaxActive:
		return nil, fmt.Errorf("%w: %q: max_active %d outside [1, %d]", ErrConfig, name, cfg.MaxActive, MaxMaxActive)
	case cfg.BufferOrder < 0 || cfg.BufferOrder > phys.MaxOrder:
		return nil, fmt.Errorf("%w: %q: buffer order %d outside [0, %d]", ErrConfig, name, cfg.BufferOrder, phys.MaxOrder)
	case cfg.IdleTimeout < 0 || cfg.MaydayTimeout < 0:
		return nil, fmt.Errorf("%w: %q: negative timeout", ErrConfig, name)
	}
	q := &Queue{
		name:     name,
		pool:     pool,
		cfg:      cfg,
		frames:   1 << cfg.BufferOrder,
		manageCh: make(chan struct{}, 1),
		maydayCh: make(chan struct{}, 1),
		watchCh:  make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if cfg.Flags&MemReclaim != 0 {
		// Now, while memory can still be had: the rescuer is what runs
		// the queue's work when it cannot.
		f, err := pool.Alloc(cfg.BufferOrder, cfg.Ctx)
		if err != nil {
			return nil, fmt.Errorf("workqueue %q: rescuer buffer: %w", name, err)
		}
		q.rescuer = q.newWorker(f, true)
		q.wg.Go(func() { q.rescuerLoop(q.rescuer) })
	}
	q.wg.Go(q.manager)
	return q, nil
}

// Name returns the name the queue was created with.
func (q *Queue) Name() string { return q.name }

// Queue queues w (queue_work) and returns true, or returns false if w is
// already pending, if a CancelSync of w is in progress, or if the queue
// has been destroyed: after Destroy has drained the queue, every Queue
// returns false and the work does not run. While Destroy drains, work is
// still accepted, so that work items may queue their successors.
//
// Queue never blocks and, when a worker is idle, allocates nothing, from
// the Go heap or the pool. It may be called from any goroutine, including
// from a work function. w must not be pending or running on another queue.
func (q *Queue) Queue(w *Work) bool {
	if w == nil || w.Func == nil {
		panic("workqueue: Queue of a Work with no Func")
	}
	q.mu.Lock()
	if !q.own(w) {
		q.mu.Unlock()
		panic(fmt.Sprintf("workqueue %q: Queue of a Work pending or running on another queue", q.name))
	}
	if q.dead {
		w.owner.Store(nil) // it is idle: a dead queue has nothing in flight
		q.mu.Unlock()
		return false
	}
	if w.pending || w.canceling > 0 {
		q.mu.Unlock()
		return false
	}
	q.seq++
	w.seq = q.seq
	w.pending = true
	q.worklist.pushBack(w)
	q.nrInflight++

	var wake *worker
	var manage, watch bool
	if q.worklist.n > q.nrWaking {
		// No worker is on its way for this work: wake an idle one, even
		// if the manager is creating one (it may never get its memory),
		// or have one created (need_more_worker, may_start_working).
		if wake = q.idle.pop(); wake != nil {
			wake.woken = true
			q.nrWaking++
		} else {
			manage = q.needToCreate()
		}
	}
	if wake == nil && q.rescuer != nil && !q.watching {
		// Not handed to an idle worker: the work may wait, so arm the
		// mayday timer.
		q.watching = true
		watch = true
	}
	q.mu.Unlock()

	if wake != nil {
		poke(wake.wake)
	}
	if manage {
		poke(q.manageCh)
	}
	if watch {
		poke(q.watchCh)
	}
	return true
}

// own makes q w's owner if w is idle, and reports whether q owns it.
// Called with q.mu held: only q, under q.mu, ever clears the owner of a
// work q owns, so the answer holds until q.mu is released.
func (q *Queue) own(w *Work) bool {
	for {
		switch o := w.owner.Load(); {
		case o == q:
			return true
		case o != nil:
			return false
		case w.owner.CompareAndSwap(nil, q):
			return true
		}
	}
}

// poke sends a wake-up on a channel with a buffer of one, without
// blocking: a wake-up already waiting there covers this one too.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Flush waits until every work item queued on q before the call has
// finished (flush_workqueue). Work queued after the call, including work
// queued by the work being flushed, is not waited for. It must not be
// called from a work function of q: that work would wait for itself.
func (q *Queue) Flush() {
	q.mu.Lock()
	if q.nrInflight == 0 {
		q.mu.Unlock()
		return
	}
	// Everything in flight now was queued with a sequence number of at
	// most q.seq, and everything queued later gets a greater one.
	f := &flusher{seq: q.seq, left: q.nrInflight, done: make(chan struct{})}
	q.addFlusher(f)
	q.mu.Unlock()
	<-f.done
}

// FlushWork waits until the last queueing of w has finished executing
// (flush_work) and reports whether it waited; it returns false at once if
// w is neither pending nor running on q. If w is queued again meanwhile,
// that later instance is not waited for.
func (q *Queue) FlushWork(w *Work) bool {
	q.mu.Lock()
	if w.owner.Load() != q {
		q.mu.Unlock()
		return false
	}
	f := q.flushWorkLocked(w)
	q.mu.Unlock()
	if f == nil {
		return false
	}
	<-f.done
	return true
}

// flushWorkLocked registers a flusher for w's last instance, pending or
// running, or returns nil if there is none.
func (q *Queue) flushWorkLocked(w *Work) *flusher {
	var seq uint64
	switch {
	case w.pending:
		// Non-reentrancy runs it after any instance still running.
		seq = w.seq
	case w.runner != nil:
		seq = w.runner.curSeq
	default:
		return nil
	}
	f := &flusher{seq: seq, single: true, left: 1, done: make(chan struct{})}
	q.addFlusher(f)
	return f
}

func (q *Queue) addFlusher(f *flusher) {
	f.next = q.flushers
	q.flushers = f
}

// retire accounts for an instance, queued as seq, that has finished or
// been cancelled, and releases the flushers waiting for it. Called with
// q.mu held.
func (q *Queue) retire(seq uint64) {
	q.nrInflight--
	for pp := &q.flushers; *pp != nil; {
		f := *pp
		if f.single && seq == f.seq || !f.single && seq <= f.seq {
			f.left--
		}
		if f.left == 0 {
			close(f.done)
			*pp = f.next
			continue
		}
		pp = &f.next
	}
}

// Cancel takes w off q if it is pending (cancel_work) and reports whether
// it was. A running instance is not waited for.
func (q *Queue) Cancel(w *Work) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return w.owner.Load() == q && q.cancelLocked(w)
}

func (q *Queue) cancelLocked(w *Work) bool {
	if !w.pending {
		return false
	}
	w.list.remove(w)
	w.pending = false
	q.retire(w.seq)
	q.maybeDisown(w)
	return true
}

// CancelSync takes w off q if it is pending and waits for a running
// instance to finish (cancel_work_sync), refusing to queue w meanwhile,
// so that when it returns w is idle unless queued again since. It reports
// whether w was pending. It must not be called from w's own Func.
func (q *Queue) CancelSync(w *Work) bool {
	q.mu.Lock()
	if w.owner.Load() != q {
		q.mu.Unlock()
		return false
	}
	w.canceling++
	was := q.cancelLocked(w)
	f := q.flushWorkLocked(w)
	q.mu.Unlock()
	if f != nil {
		<-f.done
	}
	q.mu.Lock()
	w.canceling--
	q.maybeDisown(w)
	q.mu.Unlock()
	return was
}

// maybeDisown clears w's owner once it is idle, so that it may be queued
// on another queue. Called with q.mu held.
func (q *Queue) maybeDisown(w *Work) {
	if !w.pending && w.runner == nil && w.canceling == 0 {
		w.owner.Store(nil)
	}
}

// Destroy drains q, waiting for all pending and running work, including
// work queued meanwhile by its work items (drain_workqueue), then stops
// the workers, the manager and the rescuer and waits for them to exit, so
// that every buffer is back in the pool when it returns
// (destroy_workqueue). Queue returns false from then on. If the manager is
// waiting for a worker's buffer, Destroy waits for that allocation to
// return, and frees the buffer. Destroy may be called more than once;
// later calls wait for the first. It must not be called from a work
// function of q.
func (q *Queue) Destroy() {
	q.mu.Lock()
	if q.destroying {
		q.mu.Unlock()
		<-q.done
		return
	}
	q.destroying = true
	q.mu.Unlock()

	for {
		q.Flush()
		q.mu.Lock()
		if q.nrInflight == 0 {
			break // with q.mu held, so no work slips in before dead is set
		}
		q.mu.Unlock()
	}
	q.dead = true
	q.stopping = true
	for wk := q.idle.pop(); wk != nil; wk = q.idle.pop() {
		poke(wk.wake)
	}
	q.mu.Unlock()
	// The manager, the rescuer and workers on their way to idle see
	// stopping or stop; wg.Add is only called under q.mu before stopping
	// is set, so Wait cannot miss a worker.
	close(q.stop)
	q.wg.Wait()
	close(q.done)
}

// Stats returns a snapshot of q's counters.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.stats
	s.Workers = len(q.workers)
	s.Creating = q.nrCreating
	s.Idle = q.idle.n
	s.Running = q.nrRunning
	s.Pending = q.nrInflight - q.nrRunning
	return s
}
