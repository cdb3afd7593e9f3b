package journal

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/phys"
	"yolk/runtime/workqueue"
)

// The journal's commit on a queue that cannot get a new worker: Linux's
// bcache deadlock (journal_write on system_wq), with the real journal. The
// queue's one worker is busy with other work; the pool has nothing free;
// direct reclaim can free nothing until the journal commit is durable. A
// new worker's buffer needs reclaim, reclaim needs the commit, the commit
// needs a worker.

const watchdog = 500 * time.Millisecond

type commitReclaimer struct {
	pool      *phys.Pool
	committed <-chan struct{}
	abort     <-chan struct{}
	entered   chan struct{}
	once      sync.Once

	mu  sync.Mutex
	hog []phys.PFN
}

func (r *commitReclaimer) Reclaim(order int, ctx phys.Context) int {
	r.once.Do(func() { close(r.entered) })
	select {
	case <-r.committed:
	case <-r.abort:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.hog)
	for _, f := range r.hog {
		if err := r.pool.Put(f); err != nil {
			panic(err)
		}
	}
	r.hog = nil
	return n
}

type stallResult struct {
	stalled bool
	stats   workqueue.Stats
}

func commitUnderReclaim(t *testing.T, flags workqueue.Flags) stallResult {
	pool, err := phys.New(phys.Config{Mem: make([]byte, 16<<20), Base: 0x80000000, ThrottleTimeout: time.Millisecond})
	require.NoError(t, err)
	q, err := workqueue.New("jbd2/test", pool, workqueue.Config{Flags: flags, MaxActive: 8, MaydayTimeout: time.Hour})
	require.NoError(t, err)
	defer q.Destroy()
	dev, _ := newDevice(t, 256, 64, 8)
	j, err := Open(dev, 0, testBS, Config{Pool: pool, Queue: q})
	require.NoError(t, err)

	// Every worker the queue has (the one recovery ran on, and any the
	// manager made meanwhile) is busy elsewhere before memory runs out, so
	// the commit needs a new one.
	release := make(chan struct{})
	var others []*workqueue.Work
	for {
		st := q.Stats()
		if st.Idle == 0 && st.Pending == 0 {
			// Settled: no worker on its way either.
			time.Sleep(20 * time.Millisecond)
			if q.Stats() == st {
				break
			}
			continue
		}
		require.Less(t, len(others), 4, "workers keep appearing: %+v", st)
		busy := make(chan struct{})
		w := &workqueue.Work{Func: func(*workqueue.Work, []byte) { close(busy); <-release }}
		others = append(others, w)
		require.True(t, q.Queue(w))
		<-busy
	}

	committed, abort := make(chan struct{}), make(chan struct{})
	r := &commitReclaimer{pool: pool, committed: committed, abort: abort, entered: make(chan struct{})}
	for {
		f, err := pool.AllocPage(phys.Nowait | phys.Memalloc)
		if err != nil {
			break
		}
		r.hog = append(r.hog, f)
	}
	pool.SetReclaimer(r)

	done := make(chan error, 1)
	go func() {
		h, err := j.Begin(1)
		if err == nil {
			err = h.Add(100, block(100, 1))
		}
		if err == nil {
			err = h.Commit()
		}
		close(committed)
		done <- err
	}()
	res := stallResult{}
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(watchdog):
		res.stalled = true
		select {
		case <-r.entered:
		default:
			t.Fatalf("the commit stalled, but not in reclaim (stats %+v)", q.Stats())
		}
		// Break the cycle from outside: reclaim frees memory without
		// the commit, a worker is created and runs it.
		close(abort)
		require.NoError(t, <-done)
	}
	// The commit work acknowledges before it returns: wait for it, and
	// for the other work, before reading the counters.
	close(release)
	q.Flush()
	res.stats = q.Stats()
	require.NoError(t, j.Close())
	assert.Equal(t, block(100, 1), readBlock(t, dev, 100))
	return res
}

func TestCommitStallsOnAPlainQueue(t *testing.T) {
	res := commitUnderReclaim(t, 0)
	require.True(t, res.stalled, "a plain queue ran the commit with no memory for a worker: the deadlock was not reproduced, so this test proves nothing")
	t.Logf("plain queue: journal commit stalled as expected: no commit after %v; the manager was in direct reclaim, which waited for the commit (stats %+v)", watchdog, res.stats)
}

func TestCommitCompletesOnAMemReclaimQueue(t *testing.T) {
	res := commitUnderReclaim(t, workqueue.MemReclaim)
	require.False(t, res.stalled, "the rescuer did not run the commit")
	assert.GreaterOrEqual(t, res.stats.RescuerRuns, uint64(1))
	assert.GreaterOrEqual(t, res.stats.CreateFailures, uint64(1))
	t.Logf("MemReclaim queue: the rescuer ran the journal commit (stats %+v)", res.stats)
}
