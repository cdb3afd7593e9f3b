package workqueue

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"yolk/mm/phys"
)

// testBase is the pool's physical base: the image's DDR starts here.
const testBase = 0x80000000

// newPool returns a pool of mib MiB with the rest of cfg as given.
func newPool(t testing.TB, mib int, cfg phys.Config) *phys.Pool {
	t.Helper()
	cfg.Mem = make([]byte, mib<<20)
	cfg.Base = testBase
	p, err := phys.New(cfg)
	require.NoError(t, err)
	return p
}

// newQueue creates a queue and destroys it when the test ends, so that a
// failing test leaves no goroutines behind (Destroy is idempotent).
func newQueue(t testing.TB, name string, p *phys.Pool, cfg Config) *Queue {
	t.Helper()
	q, err := New(name, p, cfg)
	require.NoError(t, err)
	t.Cleanup(q.Destroy)
	return q
}

// exhaust allocates every free frame of p, reserve included, and returns
// them.
func exhaust(t testing.TB, p *phys.Pool) []phys.PFN {
	t.Helper()
	var got []phys.PFN
	for {
		f, err := p.AllocPage(phys.Memalloc)
		if err != nil {
			require.ErrorIs(t, err, phys.ErrNoMemory)
			require.Zero(t, p.FreeFrames())
			return got
		}
		got = append(got, f)
	}
}

// requireAllFree checks that every frame of p is free and its invariants
// hold: whatever the queues took has come back.
func requireAllFree(t testing.TB, p *phys.Pool) {
	t.Helper()
	require.Equal(t, uint64(p.Frames()), p.FreeFrames(), "frames leaked")
	require.NoError(t, p.Check())
}

// requireNoLeaks waits for the goroutine count to come back to before and
// checks that no goroutine is running any of a Queue's methods: after
// Destroy there must be no worker, manager or rescuer left.
func requireNoLeaks(t testing.TB, before int) {
	t.Helper()
	var stacks string
	ok := eventually(2*time.Second, func() bool {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		return runtime.NumGoroutine() <= before && !strings.Contains(stacks, "workqueue.(*Queue).")
	})
	require.True(t, ok, "goroutines leaked (%d now, %d before):\n%s", runtime.NumGoroutine(), before, stacks)
}

// eventually polls cond until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// requireCheck runs the queue's invariant check.
func requireCheck(t testing.TB, q *Queue) {
	t.Helper()
	require.NoError(t, q.check())
}

// waitIdle waits until q has n workers and all of them are idle.
func waitIdle(t testing.TB, q *Queue, n int) {
	t.Helper()
	require.True(t, eventually(5*time.Second, func() bool {
		s := q.Stats()
		return s.Workers == n && s.Idle == n
	}), "want %d idle workers, have %+v", n, q.Stats())
}

// gate is a channel work functions block on until the test opens it.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate() *gate  { return &gate{ch: make(chan struct{})} }
func (g *gate) wait() { <-g.ch }
func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }
func (g *gate) isOpen() bool {
	select {
	case <-g.ch:
		return true
	default:
		return false
	}
}

// recv waits for ch for at most d.
func recv(ch <-chan struct{}, d time.Duration) error {
	select {
	case <-ch:
		return nil
	case <-time.After(d):
		return errors.New("timed out")
	}
}

// flagsName names a subtest after a queue's flags.
func flagsName(f Flags) string {
	if f == 0 {
		return "plain"
	}
	return f.String()
}

// startFlushWork calls q.FlushWork(w) on a goroutine of its own and
// returns its result's channel once the flush is waiting, so that the test
// can let the work finish knowing the flush saw it in flight.
func startFlushWork(t testing.TB, q *Queue, w *Work) <-chan bool {
	t.Helper()
	q.mu.Lock()
	n := 0
	for f := q.flushers; f != nil; f = f.next {
		n++
	}
	q.mu.Unlock()
	res := make(chan bool, 1)
	go func() { res <- q.FlushWork(w) }()
	require.True(t, eventually(5*time.Second, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		m := 0
		for f := q.flushers; f != nil; f = f.next {
			m++
		}
		return m > n
	}), "FlushWork did not start waiting")
	return res
}
