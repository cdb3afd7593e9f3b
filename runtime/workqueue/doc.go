// Package workqueue runs deferred work on goroutines, as Linux's work
// queues (kernel/workqueue.c) run work items on kworkers, including the
// one feature that makes a work queue safe to use from memory reclaim:
// the WQ_MEM_RECLAIM rescuer.
//
// # The job
//
// A caller fills in a Work (INIT_WORK) and queues it (queue_work); some
// time later a worker runs its Func. Queueing never blocks and, when an idle
// worker is waiting, allocates nothing: the Work is caller-owned and carries
// its own list links, so the hot path is one mutex, a few pointer writes and
// a non-blocking channel send. Flush (flush_workqueue), FlushWork
// (flush_work), Cancel and CancelSync (cancel_work, cancel_work_sync) wait
// for or withdraw queued work; Destroy (destroy_workqueue) drains the queue
// and gives every frame it took back to the pool.
//
// What makes a worker expensive here, as in Linux, is not the goroutine but
// its memory: every worker owns a buffer of 2^BufferOrder frames from
// mm/phys that its work items use as scratch space (a journal builds its
// descriptor and commit blocks there). Creating a worker therefore
// allocates from the page allocator, and that allocation may have to wait
// for memory reclaim. That is where the deadlock below lives.
//
// # Goroutines: manager, workers, rescuer
//
// Each Queue is its own worker pool (Linux would share per-CPU and unbound
// pools between queues; yolk runs on one core, so a pool per queue keeps
// max_active and the rescuer's scope obvious).
//
//   - Workers run work items one at a time, each with its own buffer. A
//     worker with nothing to do waits on the pool's idle list, most recently
//     idle first (Linux wakes the first idle worker: its cache is hottest).
//     Idle workers beyond one exit after IdleTimeout (Linux's idle timer and
//     IDLE_WORKER_TIMEOUT), freeing their buffers; one is kept so that the
//     next queue_work finds a worker without allocating.
//   - The manager creates workers. Queue wakes it when it found no idle
//     worker, no worker is already on its way for the work, and fewer than
//     MaxActive workers exist or are being created. It first tries to
//     allocate the new worker's buffer without waiting and without the
//     reserve (phys.Nowait|phys.NoMemalloc, GFP_NOWAIT). When that fails a
//     plain queue's manager falls back to an allocation in Config.Ctx, which
//     may enter direct reclaim and wait for it (GFP_KERNEL); if even that
//     fails it cools down for CreateCooldown and tries again while work is
//     still waiting (Linux's maybe_create_worker). The manager never holds
//     the queue's lock while it allocates, so Queue, Flush and Stats keep
//     working while it waits, and a worker it is still creating is never
//     counted on to run anything: work queued meanwhile wakes a worker that
//     has gone idle, since the one being created may never get its memory.
//   - The rescuer exists only on a MemReclaim queue. It is created by New,
//     together with its buffer, while memory is still to be had, and sleeps
//     until a mayday summons it. A mayday is sent when the manager's
//     no-wait allocation fails (the manager then keeps trying in the
//     background), and when the work at the head of the pending list has
//     waited MaydayTimeout without a worker taking it (Linux's mayday
//     timer), e.g. because all MaxActive workers are blocked; the timer
//     checks whether the head has moved once per MaydayTimeout, so the head
//     waits one to two of them. The rescuer then runs pending work with its
//     own buffer until the pending list is empty, and sleeps again. It
//     needs nothing from the allocator, so forward progress does not depend
//     on memory being freed.
//
// Non-reentrancy. A work item runs on at most one worker (or the rescuer)
// at a time. A Work may be queued again while it runs (its pending state is
// cleared as it starts); if a worker then takes it from the list while the
// earlier run is still going, it hands it to the worker running it, which
// runs it next (Linux's find_worker_executing_work and scheduled list).
//
// max_active. MaxActive bounds the workers a queue has at once, and so the
// work items its workers run at once. The rescuer is one execution context
// beyond that bound: it is not a worker and is never counted as one.
//
// # The bcache lesson
//
// After a write to the cache device completed, bcache queued its journal
// write on system_wq, a shared queue without WQ_MEM_RECLAIM. When no idle
// kworker was left, running the journal write needed a new kworker;
// creating one needed memory; the allocation went into reclaim, which
// shrank caches whose writeback depended on the bcache device, which waited
// for the journal write, which waited for the kworker that could not be
// created. The fix, Linux commit "bcache: add separate workqueue for
// journal_write to avoid deadlock" (2018), moved the journal write to its
// own workqueue allocated with WQ_MEM_RECLAIM, whose rescuer is created
// before memory runs out. The rule it teaches, and that this package's
// tests reproduce with a real exhausted pool: any work that
// memory reclaim may wait for must be queued on a MemReclaim queue.
//
// # Locking
//
// One lock per queue, Queue.mu (Linux's pool->lock), protects the pending
// list, the idle list, every worker's state, the counters and, while a Work
// is pending or running on the queue, that Work's unexported fields.
// Lock order: a caller's locks, then Queue.mu. Nothing that can block is
// done while holding Queue.mu (only channel sends to a buffer of one that
// give up when it is full, closing a flusher's channel and resetting a
// timer). In particular:
//
//   - Work functions run without Queue.mu, so they may call Queue, Flush,
//     FlushWork and Cancel on any queue.
//   - The page allocator is never called with Queue.mu held: an allocation
//     may enter reclaim, and reclaim may queue or flush work.
//   - Flush, FlushWork, CancelSync and Destroy wait without Queue.mu.
//
// As in Linux, waiting for oneself deadlocks: a work function must not
// Flush or Destroy its own queue, nor FlushWork or CancelSync itself, and
// flushing work that can only run after the caller's own work item finishes
// (MaxActive 1, no rescuer) waits forever.
//
// # Invariants
//
// With the lock held (the tests check them with Queue.check):
//
//   - every buffer is held by exactly one live worker or by the rescuer, and
//     is an allocated block of the pool of order BufferOrder; a worker's
//     buffer goes back to the pool when the worker exits, and Destroy waits
//     for every worker, the rescuer and the manager to exit, so after it
//     every frame the queue took is free again
//   - workers (live and being created) never exceed MaxActive
//   - the workers counted as on their way to the pending list (nrWaking)
//     are exactly those woken from the idle list or just started, never one
//     still being created
//   - a Work is pending on at most one list (the pending list, or the
//     scheduled list of the worker running its previous instance) and
//     running on at most one worker
//   - an idle worker runs nothing and is on the idle list, and the idle
//     count matches the list
//   - the in-flight count is pending plus running work, and every flush
//     waits only for work queued before it
//
// # Differences from Linux
//
// There are no per-CPU pools and no concurrency management by the
// scheduler (a worker that blocks is not noticed); MaxActive is simply the
// number of workers, as for an unbound pool. The mayday timer also rescues
// work held up because all MaxActive workers are busy, which Linux's does
// not (there, work beyond max_active is inactive and no rescuer runs it).
// Delayed work, ordered queues, freezing and workqueue attributes are not
// implemented. Destroy accepts work queued while it drains (Linux allows
// only chained work, queued by the queue's own work items) and refuses
// work after that.
package workqueue
