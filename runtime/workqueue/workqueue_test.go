package workqueue

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/phys"
)

func TestNewRejectsBadConfig(t *testing.T) {
	p := newPool(t, 1, phys.Config{})
	for name, cfg := range map[string]Config{
		"flags":          {Flags: 1 << 7},
		"max_active":     {MaxActive: -1},
		"max_active big": {MaxActive: MaxMaxActive + 1},
		"order":          {BufferOrder: phys.MaxOrder + 1},
		"negative order": {BufferOrder: -1},
		"idle timeout":   {IdleTimeout: -time.Second},
		"mayday timeout": {MaydayTimeout: -time.Second},
	} {
		_, err := New(name, p, cfg)
		assert.ErrorIs(t, err, ErrConfig, name)
	}
	_, err := New("nopool", nil, Config{})
	assert.ErrorIs(t, err, ErrConfig)
	requireAllFree(t, p)
}

// A MemReclaim queue's rescuer buffer is allocated by New; with no memory
// to be had, New fails and takes nothing.
func TestNewMemReclaimNeedsItsRescuerBuffer(t *testing.T) {
	before := runtime.NumGoroutine()
	p := newPool(t, 1, phys.Config{})
	hog := exhaust(t, p)
	_, err := New("norescuer", p, Config{Flags: MemReclaim})
	require.ErrorIs(t, err, phys.ErrNoMemory)
	for _, f := range hog {
		require.NoError(t, p.Free(f, 0))
	}
	q, err := New("rescuer", p, Config{Flags: MemReclaim, BufferOrder: 2})
	require.NoError(t, err)
	assert.Equal(t, uint64(p.Frames()-4), p.FreeFrames(), "the rescuer holds one order-2 buffer")
	assert.Equal(t, "rescuer", q.Name())
	requireCheck(t, q)
	q.Destroy()
	requireAllFree(t, p)
	requireNoLeaks(t, before)
}

// Every queued work runs exactly once per successful Queue, whatever the
// order; a work already pending is not queued twice.
func TestEveryQueuedWorkRunsOnce(t *testing.T) {
	before := runtime.NumGoroutine()
	p := newPool(t, 4, phys.Config{})
	q := newQueue(t, "once", p, Config{MaxActive: 4})

	type item struct {
		Work
		queued, ran atomic.Int64
	}
	items := make([]*item, 64)
	for i := range items {
		it := &item{}
		it.Func = func(w *Work, buf []byte) {
			assert.Len(t, buf, phys.PageSize)
			it.ran.Add(1)
		}
		items[i] = it
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 2000; i++ {
				it := items[(i*7+g)%len(items)]
				if q.Queue(&it.Work) {
					it.queued.Add(1)
				}
			}
		})
	}
	wg.Wait()
	q.Flush()
	requireCheck(t, q)
	var total int64
	for i, it := range items {
		assert.Equal(t, it.queued.Load(), it.ran.Load(), "work %d", i)
		assert.False(t, it.Pending())
		total += it.ran.Load()
	}
	s := q.Stats()
	assert.Equal(t, uint64(total), s.Processed)
	assert.Zero(t, s.Pending)
	assert.Zero(t, s.Running)
	assert.LessOrEqual(t, s.MaxWorkers, 4)
	q.Destroy()
	requireAllFree(t, p)
	requireNoLeaks(t, before)
}

func TestQueueOfPendingWorkReturnsFalse(t *testing.T) {
	p := newPool(t, 1, phys.Config{})
	q := newQueue(t, "pending", p, Config{MaxActive: 1})
	g := newGate()
	started := make(chan struct{})
	blocker := &Work{Func: func(*Work, []byte) { close(started); g.wait() }}
	var ran atomic.Int32
	w := &Work{Func: func(*Work, []byte) { ran.Add(1) }}

	require.True(t, q.Queue(blocker))
	require.NoError(t, recv(started, 5*time.Second))
	require.True(t, q.Queue(w))
	assert.True(t, w.Pending())
	assert.False(t, q.Queue(w), "already pending")
	assert.False(t, q.Queue(w), "still pending")
	assert.Equal(t, 1, q.Stats().Pending)
	requireCheck(t, q)

	flushed := startFlushWork(t, q, w)
	g.open()
	assert.True(t, <-flushed, "w was pending")
	assert.Equal(t, int32(1), ran.Load(), "two queueings while pending are one run")
	assert.False(t, w.Pending())
	assert.False(t, q.FlushWork(w), "w is idle")
}

// A work queued again while it runs runs again afterwards, never on two
// workers at once, even with idle workers to spare.
func TestNonReentrant(t *testing.T) {
	p := newPool(t, 1, phys.Config{})
	q := newQueue(t, "reentrant", p, Config{MaxActive: 4})
	g := newGate()
	started := make(chan struct{}, 2)
	var inside, runs atomic.Int32
	w := &Work{}
	w.Func = func(*Work, []byte) {
		if inside.Add(1) != 1 {
			t.Error("work runs on two workers at once")
		}
		started <- struct{}{}
		if runs.Add(1) == 1 {
			g.wait()
		}
		inside.Add(-1)
	}
	require.True(t, q.Queue(w))
	require.NoError(t, recv(started, 5*time.Second))
	require.True(t, q.Queue(w), "a running work may be queued again")
	// Another worker is created for it (the first is busy), takes it,
	// sees it running and hands it to the first.
	require.True(t, eventually(5*time.Second, func() bool {
		s := q.Stats()
		return s.Workers == 2 && s.Idle == 1
	}), "stats %+v", q.Stats())
	time.Sleep(20 * time.Millisecond)
	assert.Equal(t, int32(1), runs.Load(), "the second instance waits for the first")
	requireCheck(t, q)
	q.mu.Lock()
	assert.Equal(t, 1, w.runner.scheduled.n, "scheduled on the worker running it")
	q.mu.Unlock()

	flushed := startFlushWork(t, q, w)
	g.open()
	assert.True(t, <-flushed)
	assert.Equal(t, int32(2), runs.Load())
	requireCheck(t, q)
}

// Flush waits for everything queued before it and nothing queued after.
func TestFlush(t *testing.T) {
	p := newPool(t, 1, phys.Config{})
	q := newQueue(t, "flush", p, Config{MaxActive: 2})
	q.Flush() // nothing queued: returns at once

	g, late := newGate(), newGate()
	var ran atomic.Int32
	works := make([]*Work, 6)
	for i := range works {
		works[i] = &Work{Func: func(*Work, []byte) { g.wait(); ran.Add(1) }}
		require.True(t, q.Queue(works[i]))
	}
	flushed := make(chan struct{})
	go func() { q.Flush(); close(flushed) }()
	require.True(t, eventually(5*time.Second, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.flushers != nil
	}))
	lateRan := make(chan struct{})
	lateWork := &Work{Func: func(*Work, []byte) { late.wait(); close(lateRan) }}
	require.True(t, q.Queue(lateWork))
	assert.Error(t, recv(flushed, 20*time.Millisecond), "Flush returned with work pending")

	g.open()
	require.NoError(t, recv(flushed, 5*time.Second), "Flush waits for work queued after it")
	assert.Equal(t, int32(len(works)), ran.Load())
	assert.False(t, late.isOpen())
	select {
	case <-lateRan:
		t.Fatal("the late work ran before its gate opened")
	default:
	}
	late.open()
	q.Flush()
	require.NoError(t, recv(lateRan, time.Second))
	requireCheck(t, q)
}

func TestFlushWork(t *testing.T) {
	p := newPool(t, 1, phys.Config{})
	q := newQueue(t, "flushwork", p, Config{})
	g := newGate()
	started := make(chan struct{})
	var done atomic.Bool
	w := &Work{Func: func(*Work, []byte) { close(started); g.wait(); done.Store(true) }}
	assert.False(t, q.FlushWork(w), "never queued")
	require.True(t, q.Queue(w))
	require.NoError(t, recv(started, 5*time.Second))

	flushed := startFlushWork(t, q, w)
	select {
	case <-flushed:
		t.Fatal("FlushWork returned while the work runs")
	case <-time.After(20 * time.Millisecond):
	}
	g.open()
	assert.True(t, <-flushed)
	assert.True(t, done.Load(), "FlushWork returned before the work finished")
	assert.False(t, q.FlushWork(w))
}

// Concurrency never exceeds max_active on a plain queue; on a MemReclaim
// queue the rescuer may run one more.
func TestMaxActive(t *testing.T) {
	for _, flags := range []Flags{0, MemReclaim} {
		t.Run(flagsName(flags), func(t *testing.T) {
			p := newPool(t, 1, phys.Config{})
			q := newQueue(t, "maxactive", p, Config{Flags: flags, MaxActive: 3})
			var cur, peak atomic.Int32
			works := make([]*Work, 60)
			for i := range works {
				works[i] = &Work{Func: func(*Work, []byte) {
					n := cur.Add(1)
					for {
						m := peak.Load()
						if n <= m || peak.CompareAndSwap(m, n) {
							break
						}
					}
					time.Sleep(500 * time.Microsecond)
					cur.Add(-1)
				}}
			}
			var wg sync.WaitGroup
			for g := 0; g < 3; g++ {
				wg.Go(func() {
					for i := g; i < len(works); i += 3 {
						assert.True(t, q.Queue(works[i]))
					}
				})
			}
			wg.Wait()
			q.Flush()
			s := q.Stats()
			limit := int32(3)
			if flags&MemReclaim != 0 {
				limit++ // the rescuer is not a worker
			}
			assert.LessOrEqual(t, peak.Load(), limit, "stats %+v", s)
			assert.Equal(t, 3, s.MaxWorkers, "max_active workers are created for a backlog")
			assert.Equal(t, uint64(len(works)), s.Processed)
			requireCheck(t, q)
		})
	}
}

// Idle workers beyond the first exit after IdleTimeout and free their
// buffers; the last one stays for the next Queue.
func TestIdleWorkersExit(t *testing.T) {
	p := newPool(t, 1, phys.Config{})
	start := p.FreeFrames()
	q := newQueue(t, "idle", p, Config{MaxActive: 4, IdleTimeout: 300 * time.Millisecond})
	g := newGate()
	for i := 0; i < 4; i++ {
		require.True(t, q.Queue(&Work{Func: func(*Work, []byte) { g.wait() }}))
	}
	require.True(t, eventually(5*time.Second, func() bool { return q.Stats().Running == 4 }))
	assert.Equal(t, start-4, p.FreeFrames(), "four workers, four buffers")
	g.open()
	q.Flush()
	// Each worker goes idle just after its work retires; they stay until
	// the timeout.
	waitIdle(t, q, 4)

	waitIdle(t, q, 1)
	// A worker leaves the pool, then frees its buffer.
	assert.True(t, eventually(5*time.Second, func() bool { return p.FreeFrames() == start-1 }),
		"exited workers gave their buffers back: %d free, want %d", p.FreeFrames(), start-1)
	requireCheck(t, q)
	time.Sleep(400 * time.Millisecond)
	assert.Equal(t, 1, q.Stats().Workers, "the last idle worker stays")

	ran := make(chan struct{})
	require.True(t, q.Queue(&Work{Func: func(*Work, []byte) { close(ran) }}))
	require.NoError(t, recv(ran, 5*time.Second))
	assert.Equal(t, uint64(4), q.Stats().Created, "the idle worker ran it")
	q.Destroy()
	assert.Equal(t, start, p.FreeFrames())
	requireAllFree(t, p)
}

// Destroy waits for pending work, returns every buffer and leaves no
// goroutine; Queue afterwards returns false.
func TestDestroy(t *testing.T) {
	before := runtime.NumGoroutine()
	p := newPool(t, 1, phys.Config{})
	q, err := New("destroy", p, Config{Flags: MemReclaim, MaxActive: 2, BufferOrder: 2})
	require.NoError(t, err)
	g := newGate()
	var ran atomic.Int32
	for i := 0; i < 10; i++ {
		require.True(t, q.Queue(&Work{Func: func(*Work, []byte) { g.wait(); ran.Add(1) }}))
	}
	destroyed := make(chan struct{})
	go func() { q.Destroy(); close(destroyed) }()
	assert.Error(t, recv(destroyed, 50*time.Millisecond), "Destroy returned with work pending")
	g.open()
	require.NoError(t, recv(destroyed, 5*time.Second))
	assert.Equal(t, int32(10), ran.Load())

	w := &Work{Func: func(*Work, []byte) { t.Error("work ran on a destroyed queue") }}
	assert.False(t, q.Queue(w), "Queue after Destroy")
	assert.False(t, w.Pending())
	assert.False(t, q.FlushWork(w))
	q.Flush()
	q.Destroy() // again: returns at once
	requireAllFree(t, p)
	requireNoLeaks(t, before)

	// The refused work is free for another queue.
	q2 := newQueue(t, "after", p, Config{})
	w.Func = func(*Work, []byte) {}
	assert.True(t, q2.Queue(w))
	q2.Destroy()
	requireAllFree(t, p)
}

// Work may queue work, on its own queue or another, and flush another
// queue; Destroy drains chains of work queued by work.
func TestWorkQueuesWork(t *testing.T) {
	before := runtime.NumGoroutine()
	p := newPool(t, 1, phys.Config{})
	q := newQueue(t, "chain", p, Config{MaxActive: 2})
	other := newQueue(t, "other", p, Config{})
	var chain, leaf atomic.Int32
	leafWork := &Work{Func: func(*Work, []byte) { leaf.Add(1) }}
	w := &Work{}
	w.Func = func(w *Work, _ []byte) {
		other.Queue(leafWork)
		other.Flush()
		if chain.Add(1) < 100 {
			assert.True(t, q.Queue(w), "a running work re-queues itself")
		}
	}
	require.True(t, q.Queue(w))
	q.Destroy() // drains the whole chain
	assert.Equal(t, int32(100), chain.Load())
	assert.Positive(t, leaf.Load())
	other.Destroy()
	requireAllFree(t, p)
	requireNoLeaks(t, before)
}

func TestCancel(t *testing.T) {
	p := newPool(t, 1, phys.Config{})
	q := newQueue(t, "cancel", p, Config{MaxActive: 1})
	g := newGate()
	started := make(chan struct{}, 1)
	blocker := &Work{Func: func(*Work, []byte) { started <- struct{}{}; g.wait() }}
	var ran atomic.Int32
	w := &Work{Func: func(*Work, []byte) { ran.Add(1) }}

	assert.False(t, q.Cancel(w), "idle")
	require.True(t, q.Queue(blocker))
	require.NoError(t, recv(started, 5*time.Second))
	require.True(t, q.Queue(w))
	assert.True(t, q.Cancel(w))
	assert.False(t, w.Pending())
	assert.False(t, q.Cancel(w), "already cancelled")
	requireCheck(t, q)

	// A Flush waiting for a work that is then cancelled does not wait for
	// it.
	require.True(t, q.Queue(w))
	flushed := make(chan struct{})
	go func() { q.FlushWork(w); close(flushed) }()
	require.True(t, eventually(5*time.Second, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.flushers != nil
	}))
	assert.True(t, q.CancelSync(w))
	require.NoError(t, recv(flushed, 5*time.Second))

	// CancelSync of a running work waits for it and refuses to queue it
	// meanwhile.
	g.open()
	q.Flush()
	g2 := newGate()
	blocker.Func = func(*Work, []byte) { started <- struct{}{}; g2.wait() }
	require.True(t, q.Queue(blocker))
	require.NoError(t, recv(started, 5*time.Second))
	cancelled := make(chan bool)
	go func() { cancelled <- q.CancelSync(blocker) }()
	require.True(t, eventually(5*time.Second, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return blocker.canceling > 0
	}))
	assert.False(t, q.Queue(blocker), "refused during CancelSync")
	select {
	case <-cancelled:
		t.Fatal("CancelSync returned while the work runs")
	case <-time.After(20 * time.Millisecond):
	}
	g2.open()
	assert.False(t, <-cancelled, "it was running, not pending")
	assert.True(t, q.Queue(blocker), "idle again after CancelSync")
	q.Flush()
	assert.Zero(t, ran.Load(), "cancelled work never ran")
	requireCheck(t, q)
}

// A Work belongs to one queue while it is pending or running there, and
// may move to another once idle.
func TestWorkOnTwoQueues(t *testing.T) {
	p := newPool(t, 1, phys.Config{})
	q1 := newQueue(t, "q1", p, Config{})
	q2 := newQueue(t, "q2", p, Config{})
	g := newGate()
	w := &Work{Func: func(*Work, []byte) { g.wait() }}
	require.True(t, q1.Queue(w))
	assert.Panics(t, func() { q2.Queue(w) })
	assert.False(t, q2.FlushWork(w), "not q2's")
	assert.False(t, q2.Cancel(w), "not q2's")
	g.open()
	q1.Flush()
	assert.True(t, q2.Queue(w))
	q2.Flush()
	assert.Panics(t, func() { q1.Queue(&Work{}) }, "no Func")
}

// With an idle worker waiting, Queue allocates nothing, from the Go heap
// or the pool.
func TestQueueHotPathAllocatesNothing(t *testing.T) {
	for _, flags := range []Flags{0, MemReclaim} {
		t.Run(flagsName(flags), func(t *testing.T) {
			p := newPool(t, 1, phys.Config{})
			q := newQueue(t, "hot", p, Config{Flags: flags, MaxActive: 1})
			done := make(chan struct{}, 1)
			w := &Work{Func: func(*Work, []byte) { done <- struct{}{} }}
			require.True(t, q.Queue(w))
			<-done
			waitIdle(t, q, 1)
			frames, pgalloc := p.FreeFrames(), p.Stats().PgAlloc
			allocs := testing.AllocsPerRun(1000, func() {
				for q.Stats().Idle != 1 {
					runtime.Gosched()
				}
				if !q.Queue(w) {
					panic("work still pending")
				}
				<-done
			})
			assert.Zero(t, allocs, "Go heap allocations per queue and run")
			assert.Equal(t, frames, p.FreeFrames())
			assert.Equal(t, pgalloc, p.Stats().PgAlloc, "no frame allocated")
			s := q.Stats()
			assert.Equal(t, uint64(1), s.Created)
			assert.Zero(t, s.RescuerRuns)
		})
	}
}
