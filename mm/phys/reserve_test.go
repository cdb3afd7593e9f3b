package phys

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// reservePool is a 4 MiB pool with min at 128 frames (512 KiB): low 160,
// high 192, and the atomic limit at 3/8 of min, 48 frames.
func reservePool(t *testing.T, cfg Config) *Pool {
	t.Helper()
	cfg.Mem = make([]byte, 4<<20)
	cfg.Base = testBase
	cfg.MinFreeKbytes = 512
	p, err := New(cfg)
	require.NoError(t, err)
	require.Equal(t, Watermarks{Min: 128, Low: 160, High: 192}, p.Watermarks())
	return p
}

// fillTo allocates single frames in ctx until the pool refuses, and
// returns them.
func fillTo(t *testing.T, p *Pool, ctx Context) []PFN {
	t.Helper()
	var got []PFN
	for {
		f, err := p.AllocPage(ctx)
		if err != nil {
			require.ErrorIs(t, err, ErrNoMemory)
			return got
		}
		got = append(got, f)
	}
}

func freeAll(t *testing.T, p *Pool, fs []PFN) {
	t.Helper()
	for _, f := range fs {
		require.NoError(t, p.Free(f, 0))
	}
}

func TestReserveSemantics(t *testing.T) {
	p := reservePool(t, Config{})

	// Ordinary allocations stop at min.
	ordinary := fillTo(t, p, Kernel)
	require.Equal(t, uint64(128), p.FreeFrames(), "ordinary allocations must leave min free")
	_, err := p.AllocPage(Kernel)
	var ae *AllocError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, 0, ae.Order)
	assert.Equal(t, Kernel, ae.Ctx)
	assert.Contains(t, err.Error(), "order-0 allocation (DirectReclaim|StartIO) failed: no reclaimer installed")

	// NoMemalloc forbids the reserve even to a memalloc caller.
	_, err = p.AllocPage(Memalloc | NoMemalloc)
	require.ErrorIs(t, err, ErrNoMemory)

	// Atomic allocations dip to 3/8 of min, unmarked.
	atomics := fillTo(t, p, Atomic)
	assert.Len(t, atomics, 128-48)
	assert.Equal(t, uint64(48), p.FreeFrames())
	for _, f := range atomics {
		assert.False(t, p.Page(f).Pfmemalloc(), "%v: atomic frames are not from the reserve", f)
	}

	// Memalloc takes everything, and every frame it gets is marked.
	reserve := fillTo(t, p, Memalloc)
	assert.Len(t, reserve, 48)
	assert.Zero(t, p.FreeFrames())
	for _, f := range reserve {
		assert.True(t, p.Page(f).Pfmemalloc(), "%v: a frame from the reserve must be marked", f)
	}
	_, err = p.AllocPage(Memalloc)
	require.ErrorIs(t, err, ErrNoMemory)

	s := p.Stats()
	assert.Equal(t, uint64(48), s.NrPfmemalloc)
	assert.Equal(t, uint64(48), s.PfmemallocAllocs)
	assert.Equal(t, uint64(128), s.ReserveHighWater)
	require.NoError(t, p.Check())

	// Frees give the reserve back; the mark leaves with the frame.
	freeAll(t, p, reserve)
	assert.Zero(t, p.Stats().NrPfmemalloc)
	assert.Equal(t, uint64(48), p.FreeFrames())
	_, err = p.AllocPage(Atomic)
	require.ErrorIs(t, err, ErrNoMemory, "back at the atomic limit")
	freeAll(t, p, atomics[:1])
	f, err := p.AllocPage(Atomic)
	require.NoError(t, err)
	assert.False(t, p.Page(f).Pfmemalloc())
	freeAll(t, p, append(append(atomics[1:], ordinary...), f))
	require.NoError(t, p.Check())
	assert.Equal(t, uint64(p.Frames()), p.FreeFrames())
}

// A memalloc caller above min gets ordinary, unmarked frames: the mark
// means "only because of the reserve".
func TestMemallocAboveMinIsUnmarked(t *testing.T) {
	p := reservePool(t, Config{})
	f, err := p.AllocPage(Memalloc)
	require.NoError(t, err)
	assert.False(t, p.Page(f).Pfmemalloc())
	assert.Zero(t, p.Stats().PfmemallocAllocs)
}

// An ordinary allocation at min reclaims, and succeeds when reclaim frees
// something.
type freeingReclaimer struct {
	p     *Pool
	stash []PFN
	calls int
}

func (r *freeingReclaimer) Reclaim(order int, ctx Context) int {
	r.calls++
	if len(r.stash) == 0 {
		return 0
	}
	f := r.stash[len(r.stash)-1]
	r.stash = r.stash[:len(r.stash)-1]
	if err := r.p.Free(f, 0); err != nil {
		panic(err)
	}
	return 1
}

func TestDirectReclaimAtMin(t *testing.T) {
	p := reservePool(t, Config{})
	held := fillTo(t, p, Kernel)
	r := &freeingReclaimer{p: p, stash: held[:2]}
	p.SetReclaimer(r)
	var wakes atomic.Int32
	p.SetKswapd(func(int) { wakes.Add(1) })

	_, err := p.AllocPage(Kernel)
	require.NoError(t, err, "reclaim freed a frame; the allocation must get it")
	assert.Equal(t, 1, r.calls)
	assert.Equal(t, uint64(1), p.Stats().AllocStalls)
	assert.Positive(t, wakes.Load(), "the slow path wakes kswapd")

	// Callers that may not reclaim do not.
	_, err = p.AllocPage(Nowait)
	require.ErrorIs(t, err, ErrNoMemory)
	_, err = p.AllocPage(Atomic | NoMemalloc)
	require.NoError(t, err, "atomic still has its own margin")
	assert.Equal(t, 1, r.calls)

	// A reclaimer that never makes progress: bounded retries, then an
	// error saying so.
	r.stash = nil
	_, err = p.Alloc(0, Kernel)
	require.ErrorIs(t, err, ErrNoMemory)
	assert.Contains(t, err.Error(), "no progress after direct reclaim")
	assert.Equal(t, 1+16, r.calls, "the first allocation's one round, then MaxReclaimRetries rounds")
}

// Direct reclaimers are throttled at half the reserve and resume when
// kswapd has refilled it above min.
func TestThrottleUntilRefilled(t *testing.T) {
	p := reservePool(t, Config{ThrottleTimeout: time.Minute})
	held := fillTo(t, p, Kernel)
	held = append(held, fillTo(t, p, Atomic)...) // 48 free: below min/2 = 64
	require.Equal(t, uint64(48), p.FreeFrames())

	var reclaims atomic.Int32
	p.SetReclaimer(reclaimFunc(func(int, Context) int { reclaims.Add(1); return 0 }))
	woken := make(chan struct{}, 16)
	p.SetKswapd(func(int) {
		select {
		case woken <- struct{}{}:
		default:
		}
	})

	done := make(chan error, 1)
	go func() {
		_, err := p.AllocPage(Kernel)
		done <- err
	}()

	deadline := time.After(10 * time.Second)
	for p.Stats().Throttled == 0 {
		select {
		case err := <-done:
			t.Fatalf("allocation returned (%v) instead of being throttled", err)
		case <-deadline:
			t.Fatal("direct reclaimer was not throttled within 10s")
		case <-time.After(time.Millisecond):
		}
	}
	assert.Zero(t, reclaims.Load(), "a throttled reclaimer must not reclaim yet")

	// Memalloc and atomic callers are not throttled meanwhile.
	f, err := p.AllocPage(Memalloc)
	require.NoError(t, err)
	assert.True(t, p.Page(f).Pfmemalloc())
	require.NoError(t, p.Free(f, 0))
	assert.Equal(t, uint64(1), p.Stats().Throttled)

	// Play kswapd: free until free memory is above min.
	select {
	case <-woken:
	case <-deadline:
		t.Fatal("the throttled reclaimer did not wake kswapd")
	}
	start := time.Now()
	for p.FreeFrames() <= 128 {
		require.NoError(t, p.Free(held[len(held)-1], 0))
		held = held[:len(held)-1]
	}
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-deadline:
		t.Fatal("throttled reclaimer still waiting 10s after the reserve was refilled")
	}
	assert.Less(t, time.Since(start), 10*time.Second)
	freeAll(t, p, held)
	require.NoError(t, p.Check())
}

// Without kswapd a throttled reclaimer waits only ThrottleTimeout per
// round, and the allocation fails after the bounded retries.
func TestThrottleIsBounded(t *testing.T) {
	p := reservePool(t, Config{ThrottleTimeout: 20 * time.Millisecond, MaxReclaimRetries: 3})
	fillTo(t, p, Kernel)
	fillTo(t, p, Atomic)
	p.SetReclaimer(reclaimFunc(func(int, Context) int { return 0 }))

	done := make(chan error, 1)
	go func() {
		_, err := p.AllocPage(Kernel)
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrNoMemory)
	case <-time.After(10 * time.Second):
		t.Fatal("allocation blocked for 10s with a 20ms throttle bound")
	}
	assert.Equal(t, uint64(3), p.Stats().Throttled)
}

type reclaimFunc func(order int, ctx Context) int

func (f reclaimFunc) Reclaim(order int, ctx Context) int { return f(order, ctx) }

// TestConcurrentPressure runs allocators of every kind, frees, a kswapd
// goroutine and direct reclaim against a small pool at once; no caller
// may block for ever and the invariants must hold after.
func TestConcurrentPressure(t *testing.T) {
	cfg := Config{Mem: make([]byte, 8<<20), Base: testBase, ThrottleTimeout: 5 * time.Millisecond}
	p, err := New(cfg)
	require.NoError(t, err)

	// The stash holds frames anyone may free: kswapd and direct reclaim
	// give them back.
	var mu sync.Mutex
	var stash []PFN
	stashPut := func(f PFN) { mu.Lock(); stash = append(stash, f); mu.Unlock() }
	stashTake := func() (PFN, bool) {
		mu.Lock()
		defer mu.Unlock()
		if len(stash) == 0 {
			return 0, false
		}
		f := stash[len(stash)-1]
		stash = stash[:len(stash)-1]
		return f, true
	}
	release := func(f PFN) {
		if err := p.Put(f); err != nil {
			t.Error(err)
		}
	}
	p.SetReclaimer(reclaimFunc(func(order int, ctx Context) int {
		n := 0
		for ; n < 1<<order+1; n++ {
			f, ok := stashTake()
			if !ok {
				break
			}
			release(f)
		}
		return n
	}))
	kick := make(chan struct{}, 1)
	p.SetKswapd(func(int) {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	stop := make(chan struct{})
	var kswapd sync.WaitGroup
	kswapd.Add(1)
	go func() {
		defer kswapd.Done()
		for {
			select {
			case <-stop:
				return
			case <-kick:
			}
			for !p.WatermarkOK(0, p.Watermarks().High) {
				f, ok := stashTake()
				if !ok {
					break
				}
				release(f)
			}
		}
	}()

	var wg sync.WaitGroup
	var allocs, failures atomic.Int64
	ctxs := []Context{Kernel, User, Atomic, Memalloc, NoIO, HugeUser, Kernel | Compound}
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			var mine []PFN
			for range 4000 {
				ctx := ctxs[rng.IntN(len(ctxs))]
				order := []int{0, 0, 0, 1, 3, 8}[rng.IntN(6)]
				f, err := p.Alloc(order, ctx)
				switch {
				case err == nil:
					allocs.Add(1)
					if rng.IntN(2) == 0 {
						stashPut(f)
					} else {
						mine = append(mine, f)
					}
				case errors.Is(err, ErrNoMemory):
					failures.Add(1)
				default:
					t.Error(err)
					return
				}
				if len(mine) > 0 && rng.IntN(3) == 0 {
					release(mine[0])
					mine = mine[1:]
				}
			}
			for _, f := range mine {
				release(f)
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(2 * time.Minute):
		t.Fatal("allocators still running after 2 minutes: something blocked")
	}
	close(stop)
	kswapd.Wait()
	for f, ok := stashTake(); ok; f, ok = stashTake() {
		release(f)
	}
	require.NoError(t, p.Check())
	assert.Equal(t, uint64(p.Frames()), p.FreeFrames())
	t.Logf("%d allocations, %d failures, stats %+v", allocs.Load(), failures.Load(), p.Stats())
}
