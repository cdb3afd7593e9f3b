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

// watchdog is how long the commit may take before the test calls it
// stalled. On a healthy queue it runs in microseconds.
const watchdog = 500 * time.Millisecond

// journalReclaimer is direct reclaim that, like the reclaim in the bcache
// deadlock, can free nothing until the journal is written: Reclaim blocks
// until the commit work has completed (or the test breaks the cycle from
// outside), then frees the frames a hog took.
type journalReclaimer struct {
	p         *phys.Pool
	committed <-chan struct{}
	abort     <-chan struct{}

	entered   chan struct{} // closed when reclaim first runs
	enterOnce sync.Once
	calls     atomic.Int32

	mu  sync.Mutex
	hog []phys.PFN
}

func (r *journalReclaimer) Reclaim(order int, ctx phys.Context) int {
	r.calls.Add(1)
	r.enterOnce.Do(func() { close(r.entered) })
	select {
	case <-r.committed: // the journal is on disk: dirty data may go
	case <-r.abort:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.hog)
	for _, f := range r.hog {
		if err := r.p.Free(f, 0); err != nil {
			panic(err)
		}
	}
	r.hog = nil
	return n
}

// journalSetup is the bcache situation: a journal queue, a pool with
// nothing free, and reclaim that waits for the journal's commit.
type journalSetup struct {
	p         *phys.Pool
	q         *Queue
	r         *journalReclaimer
	commit    *Work
	committed chan struct{}
	abort     *gate
}

func newJournalSetup(t *testing.T, flags Flags) *journalSetup {
	// Throttling would only delay direct reclaim by a second; the
	// deadlock is in reclaim itself.
	p := newPool(t, 1, phys.Config{ThrottleTimeout: time.Millisecond})
	// The queue exists before memory runs out, as bcache's do; a
	// MemReclaim queue's rescuer buffer is allocated here. The mayday
	// timer is kept out of the way so that the rescuer can only be
	// summoned by the manager, when it fails to allocate a worker's
	// buffer without waiting (TestMaydayTimeoutRescuesBlockedWorkers
	// covers the timer).
	q := newQueue(t, "journal", p, Config{Flags: flags, MaydayTimeout: time.Hour})
	s := &journalSetup{p: p, q: q, committed: make(chan struct{}), abort: newGate()}
	// Whatever happens, leave nothing blocked in reclaim. (Cleanups run
	// last-added first: this one before the queue's Destroy.)
	t.Cleanup(s.abort.open)
	s.r = &journalReclaimer{p: p, committed: s.committed, abort: s.abort.ch, entered: make(chan struct{})}
	s.r.hog = exhaust(t, p)
	p.SetReclaimer(s.r)
	s.commit = &Work{Func: func(_ *Work, buf []byte) {
		// The journal builds its commit block in the worker's buffer.
		copy(buf, "jset commit")
		close(s.committed)
	}}
	return s
}

// The bcache deadlock, for real: the journal's commit is queued on a
// plain queue (system_wq) with no idle worker and no free memory. The
// manager's no-wait allocation fails, its fallback enters direct reclaim,
// reclaim waits for the commit, and the commit waits for the worker the
// manager is trying to create. Nothing runs it.
func TestPlainQueueDeadlocksWhenReclaimWaitsForIt(t *testing.T) {
	before := runtime.NumGoroutine()
	s := newJournalSetup(t, 0)
	require.True(t, s.q.Queue(s.commit))

	select {
	case <-s.committed:
		t.Fatalf("the commit ran on a plain queue with no memory for a worker: the deadlock was not reproduced, so this test proves nothing (stats %+v)", s.q.Stats())
	case <-time.After(watchdog):
	}
	select {
	case <-s.r.entered:
	default:
		t.Fatalf("the commit stalled, but not because the manager is in reclaim (stats %+v)", s.q.Stats())
	}
	st := s.q.Stats()
	t.Logf("plain queue: commit stalled as expected: after %v the manager is blocked in direct reclaim (%d calls), which waits for the commit, which waits for a worker; stats %+v",
		watchdog, s.r.calls.Load(), st)
	assert.Zero(t, st.Workers, "no worker exists")
	assert.Equal(t, 1, st.Pending, "the commit is still pending")
	assert.Zero(t, st.Processed)
	assert.GreaterOrEqual(t, st.CreateFailures, uint64(1), "the no-wait attempt failed")
	assert.Zero(t, st.Maydays, "a plain queue has no rescuer to call")
	requireCheck(t, s.q)

	// Break the cycle from outside, as nothing inside can: reclaim frees
	// memory without the commit, the manager's allocation succeeds, and
	// the new worker runs the commit.
	s.abort.open()
	require.NoError(t, recv(s.committed, 10*time.Second), "the commit must run once memory is back")
	s.q.Destroy()
	requireAllFree(t, s.p)
	requireNoLeaks(t, before)
}

// The fix: the same commit on a MemReclaim queue. The manager's no-wait
// allocation fails, it sends a mayday, and the rescuer, whose buffer was
// allocated by New, runs the commit; reclaim then frees memory and the
// manager's worker is created after all.
func TestMemReclaimQueueRescuesWhenReclaimWaitsForIt(t *testing.T) {
	before := runtime.NumGoroutine()
	s := newJournalSetup(t, MemReclaim)
	require.True(t, s.q.Queue(s.commit))

	// Nothing but the rescuer can run it: the manager's fallback
	// allocation waits in reclaim for this very commit. The deadline is
	// generous only so that a loaded machine cannot fail the test; the
	// rescuer runs it at once.
	if err := recv(s.committed, 20*watchdog); err != nil {
		t.Fatalf("the commit stalled on a MemReclaim queue: the rescuer did not run it (stats %+v)", s.q.Stats())
	}
	require.True(t, eventually(5*time.Second, func() bool { return s.q.Stats().Workers == 1 }),
		"once reclaim has freed memory the manager's worker exists (stats %+v)", s.q.Stats())
	st := s.q.Stats()
	t.Logf("MemReclaim queue: commit ran on the rescuer; stats %+v", st)
	assert.GreaterOrEqual(t, st.RescuerRuns, uint64(1), "the rescuer ran the commit")
	assert.GreaterOrEqual(t, st.CreateFailures, uint64(1), "no worker could be created without waiting")
	assert.GreaterOrEqual(t, st.Maydays, uint64(1))
	assert.Equal(t, uint64(1), st.Processed)
	assert.False(t, s.abort.isOpen(), "nothing outside broke the cycle")
	requireCheck(t, s.q)

	s.q.Destroy()
	requireAllFree(t, s.p)
	requireNoLeaks(t, before)
}

// The mayday timer: with max_active workers all blocked on work queued
// behind them, a MemReclaim queue's rescuer runs that work after
// MaydayTimeout, though memory is plentiful; a plain queue waits for ever.
func TestMaydayTimeoutRescuesBlockedWorkers(t *testing.T) {
	for _, flags := range []Flags{0, MemReclaim} {
		t.Run(flagsName(flags), func(t *testing.T) {
			before := runtime.NumGoroutine()
			p := newPool(t, 1, phys.Config{})
			q := newQueue(t, "mayday", p, Config{Flags: flags, MaxActive: 1, MaydayTimeout: 20 * time.Millisecond})
			escape := newGate()
			t.Cleanup(escape.open)
			xDone := make(chan struct{})
			x := &Work{Func: func(*Work, []byte) { close(xDone) }}
			blocker := &Work{Func: func(*Work, []byte) {
				q.Queue(x)
				select { // the only worker waits for work queued behind it
				case <-xDone:
				case <-escape.ch:
				}
			}}
			require.True(t, q.Queue(blocker))
			err := recv(xDone, watchdog)
			st := q.Stats()
			if flags&MemReclaim == 0 {
				require.Error(t, err, "a plain queue cannot run x: its one worker waits for x")
				t.Logf("plain queue: x stalled as expected behind its blocked worker; stats %+v", st)
				assert.Equal(t, 1, st.Pending)
				escape.open()
				q.Flush()
			} else {
				require.NoError(t, err, "the rescuer must run x (stats %+v)", st)
				q.Flush()
				st = q.Stats()
				assert.Equal(t, uint64(1), st.RescuerRuns)
				assert.GreaterOrEqual(t, st.Maydays, uint64(1))
				assert.Zero(t, st.CreateFailures, "memory was never short")
			}
			assert.Equal(t, 1, st.MaxWorkers)
			requireCheck(t, q)
			q.Destroy()
			requireAllFree(t, p)
			requireNoLeaks(t, before)
		})
	}
}

// The mayday timer's own rule, with no race in how it is armed: work that
// stays at the head of the pending list for a whole MaydayTimeout summons
// the rescuer. In the test above the timer may first be armed on the
// blocker, before its worker takes it, and then fire on x; here the only
// worker is busy and the timer has stopped watching the empty list before
// x is queued, so it is armed on x itself and must fire on x.
func TestMaydayRescuesWorkStuckAtTheHead(t *testing.T) {
	before := runtime.NumGoroutine()
	p := newPool(t, 1, phys.Config{})
	q := newQueue(t, "stuck", p, Config{Flags: MemReclaim, MaxActive: 1, MaydayTimeout: 20 * time.Millisecond})
	escape := newGate()
	t.Cleanup(escape.open)
	started, xDone := make(chan struct{}), make(chan struct{})
	require.True(t, q.Queue(&Work{Func: func(*Work, []byte) {
		close(started)
		select { // the only worker waits for x
		case <-xDone:
		case <-escape.ch:
		}
	}}))
	require.NoError(t, recv(started, watchdog))
	// The list is empty: within a MaydayTimeout the timer finds no head
	// and stops watching.
	stopped := time.Now().Add(watchdog)
	for watching(q) {
		require.False(t, time.Now().After(stopped), "the rescuer still watches an empty list after %v", watchdog)
		time.Sleep(time.Millisecond)
	}

	require.True(t, q.Queue(&Work{Func: func(*Work, []byte) { close(xDone) }}))
	require.NoError(t, recv(xDone, watchdog), "x stayed at the head for %v and the rescuer never ran it (stats %+v)", watchdog, q.Stats())
	q.Flush()
	st := q.Stats()
	assert.Equal(t, uint64(1), st.RescuerRuns)
	assert.GreaterOrEqual(t, st.Maydays, uint64(1))
	requireCheck(t, q)
	q.Destroy()
	requireAllFree(t, p)
	requireNoLeaks(t, before)
}

func watching(q *Queue) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.watching
}

// While the manager waits in reclaim for a worker's buffer, a worker that
// has since gone idle still takes new work: a worker that might never be
// created must not hold up one that exists.
func TestIdleWorkerRunsWorkWhileManagerWaits(t *testing.T) {
	before := runtime.NumGoroutine()
	p := newPool(t, 1, phys.Config{ThrottleTimeout: time.Millisecond})
	q := newQueue(t, "busy", p, Config{MaxActive: 2})
	g := newGate()
	started := make(chan struct{})
	require.True(t, q.Queue(&Work{Func: func(*Work, []byte) { close(started); g.wait() }}))
	require.NoError(t, recv(started, 5*time.Second))

	abort := newGate()
	t.Cleanup(abort.open)
	r := &journalReclaimer{p: p, committed: make(chan struct{}), abort: abort.ch, entered: make(chan struct{})}
	r.hog = exhaust(t, p)
	p.SetReclaimer(r)

	// The only worker is busy: the manager goes for a second and ends up
	// waiting in reclaim.
	xDone := make(chan struct{})
	require.True(t, q.Queue(&Work{Func: func(*Work, []byte) { close(xDone) }}))
	require.NoError(t, recv(r.entered, 5*time.Second))
	// The busy worker finishes, runs x, and goes idle.
	g.open()
	require.NoError(t, recv(xDone, 5*time.Second))
	require.True(t, eventually(5*time.Second, func() bool { return q.Stats().Idle == 1 }))

	yDone := make(chan struct{})
	require.True(t, q.Queue(&Work{Func: func(*Work, []byte) { close(yDone) }}))
	require.NoError(t, recv(yDone, watchdog), "the idle worker must take new work while the manager waits (stats %+v)", q.Stats())
	select {
	case <-abort.ch:
		t.Fatal("reclaim was released early")
	default:
	}
	st := q.Stats()
	assert.Equal(t, 1, st.Workers)
	assert.Equal(t, uint64(1), st.Created, "the second worker is still being created")
	requireCheck(t, q)

	abort.open()
	q.Destroy()
	requireAllFree(t, p)
	requireNoLeaks(t, before)
}
