package blk_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/mm/phys"
)

const roPage = phys.PageSize

func roPool(t testing.TB, size int) *phys.Pool {
	t.Helper()
	p, err := phys.New(phys.Config{Mem: make([]byte, size), Base: 0x80000000})
	require.NoError(t, err)
	return p
}

// roRAM makes a RAM device of size bytes filled with seeded random bytes and
// returns it with a copy of its contents.
func roRAM(t testing.TB, size int64, bs int, seed int64) (*blk.RAM, []byte) {
	t.Helper()
	dev, err := blk.NewRAM(blk.RAMConfig{Name: "ram", Size: size, BlockSize: bs})
	require.NoError(t, err)
	want := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(want)
	require.NoError(t, dev.WriteAt(want, 0, 0))
	return dev, want
}

// roShuffle is fault injection: a device that holds every ReadAt and lets
// the held calls go in a random (seeded) order, as a server that reorders
// its replies, or several connections, would. A call goes as soon as depth
// calls are held, or otherwise after a tick with nothing else to do; the data
// comes from the device underneath. Reads of the offsets in fail fail with
// ErrIO.
type roShuffle struct {
	blk.Device
	depth int
	fail  map[int64]bool // read-only once running

	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	rng      *rand.Rand
	pending  []roHeld
	stopped  bool
	released int
	inverted int   // released before a lower offset that was called earlier
	top      int64 // highest offset released
}

type roHeld struct {
	off int64
	go_ chan struct{}
}

func newRoShuffle(t testing.TB, dev blk.Device, depth int, seed int64, fail map[int64]bool) *roShuffle {
	d := &roShuffle{
		Device: dev,
		depth:  max(depth, 1),
		fail:   fail,
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		rng:    rand.New(rand.NewSource(seed)),
		top:    -1,
	}
	go d.run()
	t.Cleanup(d.Stop)
	return d
}

func (d *roShuffle) ReadAt(p []byte, off int64) error {
	h := roHeld{off, make(chan struct{})}
	d.mu.Lock()
	if !d.stopped {
		d.pending = append(d.pending, h)
		d.mu.Unlock()
		select {
		case d.kick <- struct{}{}:
		default:
		}
		<-h.go_
	} else {
		d.mu.Unlock()
	}
	if d.fail[off] {
		return &blk.RequestError{Device: "shuffle", Op: blk.OpRead, Off: off, Len: int64(len(p)), Err: blk.ErrIO}
	}
	return d.Device.ReadAt(p, off)
}

func (d *roShuffle) run() {
	defer close(d.done)
	tick := time.NewTicker(50 * time.Microsecond)
	defer tick.Stop()
	for {
		idle := false
		select {
		case <-d.stop:
			d.mu.Lock()
			d.stopped = true
			for _, h := range d.pending {
				close(h.go_)
			}
			d.pending = nil
			d.mu.Unlock()
			return
		case <-d.kick:
		case <-tick.C:
			idle = true
		}
		d.mu.Lock()
		for len(d.pending) >= d.depth || idle && len(d.pending) > 0 {
			idle = false
			k := d.rng.Intn(len(d.pending))
			h := d.pending[k]
			d.pending[k] = d.pending[len(d.pending)-1]
			d.pending = d.pending[:len(d.pending)-1]
			d.released++
			if h.off < d.top {
				d.inverted++
			}
			d.top = max(d.top, h.off)
			close(h.go_)
		}
		d.mu.Unlock()
	}
}

// Stop lets every held call go and makes later ones pass straight through.
func (d *roShuffle) Stop() {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
}

func (d *roShuffle) counts() (released, inverted int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.released, d.inverted
}

// roGate is a device whose reads wait until the test lets them go, one by
// one: it makes the interleavings the shuffle only makes likely.
type roGate struct {
	blk.Device
	mu      sync.Mutex
	cond    sync.Cond
	waiting map[int64]int // calls held, by offset
	passes  map[int64]int // calls allowed through, by offset
	all     bool          // every call goes through
}

func newRoGate(dev blk.Device) *roGate {
	g := &roGate{Device: dev, waiting: map[int64]int{}, passes: map[int64]int{}}
	g.cond.L = &g.mu
	return g
}

func (g *roGate) ReadAt(p []byte, off int64) error {
	g.mu.Lock()
	g.waiting[off]++
	for !g.all && g.passes[off] == 0 {
		g.cond.Wait()
	}
	if !g.all {
		g.passes[off]--
	}
	g.waiting[off]--
	g.mu.Unlock()
	return g.Device.ReadAt(p, off)
}

// release waits for a read of off to be held and lets it go.
func (g *roGate) release(t *testing.T, off int64) {
	t.Helper()
	g.await(t, off)
	g.allow(off)
}

// allow lets the next read of off go, now or when it comes.
func (g *roGate) allow(off int64) {
	g.mu.Lock()
	g.passes[off]++
	g.cond.Broadcast()
	g.mu.Unlock()
}

// open lets every read go from now on.
func (g *roGate) open() {
	g.mu.Lock()
	g.all = true
	g.cond.Broadcast()
	g.mu.Unlock()
}

// await waits for a read of off to be held.
func (g *roGate) await(t *testing.T, off int64) {
	t.Helper()
	roWaitFor(t, fmt.Sprintf("a read at %d", off), func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.waiting[off] > g.passes[off]
	})
}

func roWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Microsecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// roHog takes every frame the pool will give, its reserve included.
func roHog(pool *phys.Pool) []phys.PFN {
	var hog []phys.PFN
	for {
		pfn, err := pool.AllocPage(phys.Memalloc)
		if err != nil {
			return hog
		}
		hog = append(hog, pfn)
	}
}

// roTrace collects prune events.
type roTrace struct {
	mu     sync.Mutex
	events []blk.PruneEvent
}

func (tr *roTrace) hook(ev blk.PruneEvent) {
	tr.mu.Lock()
	tr.events = append(tr.events, ev)
	tr.mu.Unlock()
}

func (tr *roTrace) get() []blk.PruneEvent {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]blk.PruneEvent(nil), tr.events...)
}

// roCheckEvents checks the pruning rule on every pass: blocks go from the
// far end down (each pruned offset above every buffered block kept), never
// the next-needed block (nor the block a frame was pruned for), and the pass
// stops as soon as the charge is within its limit, or when nothing above the
// next-needed block is left to prune. It returns the blocks pruned.
func roCheckEvents(t *testing.T, events []blk.PruneEvent) (pruned int, byReason map[blk.PruneReason]int) {
	t.Helper()
	byReason = map[blk.PruneReason]int{}
	for k, ev := range events {
		byReason[ev.Reason]++
		pruned += len(ev.Pruned)
		if !assert.NotEmpty(t, ev.Pruned, "event %d %+v", k, ev) {
			continue
		}
		floor := max(ev.Next, ev.For)
		for x, off := range ev.Pruned {
			if x > 0 {
				assert.Less(t, off, ev.Pruned[x-1], "event %d: not from the top down: %+v", k, ev)
			}
			assert.Greater(t, off, ev.Next, "event %d took the next-needed block: %+v", k, ev)
			assert.Greater(t, off, floor, "event %d pruned below the block it made room for: %+v", k, ev)
			assert.Greater(t, off, ev.Kept, "event %d pruned below a kept block: %+v", k, ev)
		}
		assert.GreaterOrEqual(t, ev.Charge, ev.Limit, "event %d pruned past its limit: %+v", k, ev)
		if ev.Charge > ev.Limit {
			// Stopped short only for want of candidates.
			assert.LessOrEqual(t, ev.Kept, floor, "event %d stopped over its limit with blocks to prune: %+v", k, ev)
		}
		if ev.Reason == blk.PrunePool {
			assert.Len(t, ev.Pruned, 1, "event %d: a refused frame costs one block: %+v", k, ev)
		}
	}
	return pruned, byReason
}

// roConsume reads r to the end, checking that block k arrives k-th with the
// right bytes (want is the device's contents; fail lists the offsets that
// must come back as read errors). each, if set, runs after every block.
func roConsume(t *testing.T, r *blk.Reorder, start, end int64, want []byte, fail map[int64]bool, each func(k int)) int {
	t.Helper()
	k := 0
	for off := start; ; k++ {
		got, data, err := r.Next()
		if off == end {
			require.ErrorIs(t, err, io.EOF, "block %d", k)
			require.Equal(t, end, got)
			return k
		}
		require.Equal(t, off, got, "block %d out of order", k)
		n := min(int64(roPage), end-off)
		if fail[off] {
			require.ErrorIs(t, err, blk.ErrIO, "block %d", k)
			var re *blk.RequestError
			require.ErrorAs(t, err, &re)
			require.Equal(t, off, re.Off)
			require.Nil(t, data)
		} else {
			require.NoError(t, err, "block %d", k)
			require.Len(t, data, int(n))
			if !bytes.Equal(want[off:off+n], data) {
				t.Fatalf("block %d at %d: wrong bytes", k, off)
			}
		}
		off += n
		if each != nil {
			each(k)
		}
	}
}

func roCloseAndCheckPool(t *testing.T, r *blk.Reorder, pool *phys.Pool, free0 uint64) {
	t.Helper()
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "Close twice")
	assert.Equal(t, free0, pool.FreeFrames(), "frames not given back")
	assert.NoError(t, pool.Check())
}

// The main acceptance test: a window wider than the budget, replies
// shuffled, and a shrinker that every so often takes the budget down under
// what is already committed. Every block arrives once, in order, intact;
// every prune pass follows the rule; the pool gets every frame back.
func TestReorderOutOfOrderOverBudget(t *testing.T) {
	const (
		blocks = 4096
		window = 16
		budget = 6
	)
	pool := roPool(t, 4<<20)
	free0 := pool.FreeFrames()
	dev, want := roRAM(t, blocks*roPage, roPage, 1)
	sh := newRoShuffle(t, dev, 4, 2, nil)
	var tr roTrace
	r, err := blk.NewReorder(sh, 0, dev.Size(), blk.ReorderConfig{
		Window: window, Budget: budget, Pool: pool, Trace: tr.hook,
	})
	require.NoError(t, err)

	rng := rand.New(rand.NewSource(3))
	t0 := time.Now()
	n := roConsume(t, r, 0, dev.Size(), want, nil, func(k int) {
		// Memory pressure for a quarter of the stream: the budget
		// drops to 1–3 frames for 32 blocks out of every 128.
		switch k % 128 {
		case 64:
			r.SetBudget(1 + rng.Intn(3))
		case 96:
			r.SetBudget(budget)
		}
	})
	elapsed := time.Since(t0)
	require.Equal(t, blocks, n)

	st := r.Stats()
	events := tr.get()
	released, inverted := sh.counts()
	pruned, byReason := roCheckEvents(t, events)
	t.Logf("%d blocks in %v; %d replies, %d out of order", n, elapsed, released, inverted)
	t.Logf("reads %d, refetches %d, pruned %d in %d prune events %v; max held %d, max in flight %d",
		st.Reads, st.Refetches, st.Pruned, st.PruneEvents, byReason, st.MaxHeld, st.MaxInFlight)

	assert.Greater(t, inverted, 0, "the shuffle reordered nothing")
	assert.Greater(t, st.Pruned, uint64(0), "pressure pruned nothing: the rule went untested")
	assert.Equal(t, uint64(pruned), st.Pruned)
	assert.Equal(t, uint64(len(events)), st.PruneEvents)
	// Every pruned block was read again, once per prune.
	assert.Equal(t, st.Pruned, st.Refetches)
	assert.Equal(t, uint64(blocks)+st.Refetches, st.Reads)
	assert.LessOrEqual(t, st.MaxInFlight, budget+1)
	assert.LessOrEqual(t, st.MaxHeld, budget+1) // +1: the next block, over budget
	roCloseAndCheckPool(t, r, pool, free0)
}

// A budget at least the window never prunes: pruning is for pressure, and a
// constant budget is none. Neither is a budget below the window: the budget
// clamps the reads in flight instead of reading blocks only to drop them.
func TestReorderNoPressureNoRefetch(t *testing.T) {
	for _, c := range []struct{ window, budget int }{
		{1, 1}, {4, 8}, {8, 8}, {16, 32}, {16, 6}, {3, 1},
	} {
		t.Run(fmt.Sprintf("W=%d,B=%d", c.window, c.budget), func(t *testing.T) {
			const blocks = 1024
			pool := roPool(t, 4<<20)
			free0 := pool.FreeFrames()
			dev, want := roRAM(t, blocks*roPage, 512, int64(c.window))
			sh := newRoShuffle(t, dev, min(c.window, c.budget)/2+1, int64(c.budget), nil)
			var tr roTrace
			r, err := blk.NewReorder(sh, 0, dev.Size(), blk.ReorderConfig{
				Window: c.window, Budget: c.budget, Pool: pool, Trace: tr.hook,
			})
			require.NoError(t, err)
			require.Equal(t, blocks, roConsume(t, r, 0, dev.Size(), want, nil, nil))
			st := r.Stats()
			t.Logf("reads %d, refetches %d, max held %d, max in flight %d", st.Reads, st.Refetches, st.MaxHeld, st.MaxInFlight)
			assert.Zero(t, st.Refetches)
			assert.Zero(t, st.Pruned)
			assert.Empty(t, tr.get())
			assert.Equal(t, uint64(blocks), st.Reads)
			assert.LessOrEqual(t, st.MaxHeld, c.budget)
			assert.LessOrEqual(t, st.MaxInFlight, min(c.window, c.budget))
			roCloseAndCheckPool(t, r, pool, free0)
		})
	}
}

// The budget shrinks mid-stream under a full queue (32 → 2), then grows
// again (→ 16, → 128): the shrink prunes from the top at once, what was in
// flight is pruned as it lands, the charge comes down to the budget, the
// queue fills a budget larger than it started with, and the stream carries
// on in order.
func TestReorderSetBudget(t *testing.T) {
	const blocks = 2048
	pool := roPool(t, 4<<20)
	free0 := pool.FreeFrames()
	dev, want := roRAM(t, blocks*roPage, roPage, 4)
	sh := newRoShuffle(t, dev, 8, 5, nil)
	var tr roTrace
	r, err := blk.NewReorder(sh, 0, dev.Size(), blk.ReorderConfig{
		Window: 16, Budget: 32, Pool: pool, Trace: tr.hook,
	})
	require.NoError(t, err)

	var atShrink, beforeGrow blk.ReorderStats
	n := roConsume(t, r, 0, dev.Size(), want, nil, func(k int) {
		switch k {
		case 600:
			// Let the queue fill up to its budget first.
			time.Sleep(5 * time.Millisecond)
			atShrink = r.Stats()
			r.SetBudget(2)
		case 1200:
			beforeGrow = r.Stats()
			r.SetBudget(16)
		case 1600:
			// A budget far above the one the queue started with:
			// the out-of-order queue grows to fill it.
			r.SetBudget(128)
			roWaitFor(t, "the queue to fill 100 frames", func() bool { return r.Stats().Held >= 100 })
		}
	})
	require.Equal(t, blocks, n)
	st := r.Stats()
	events := tr.get()
	pruned, byReason := roCheckEvents(t, events)
	t.Logf("at the shrink: held %d (%d buffered, %d in flight); before growing: held %d",
		atShrink.Held, atShrink.Buffered, atShrink.InFlight, beforeGrow.Held)
	t.Logf("refetches %d, pruned %d in %d prune events %v", st.Refetches, st.Pruned, st.PruneEvents, byReason)

	assert.Greater(t, atShrink.Held, 2)
	require.NotZero(t, byReason[blk.PruneBudget], "SetBudget(2) under a full queue pruned nothing")
	for _, ev := range events {
		if ev.Reason == blk.PruneBudget {
			assert.Equal(t, 2, ev.Limit)
			break
		}
	}
	assert.Equal(t, 2, beforeGrow.Budget)
	assert.LessOrEqual(t, beforeGrow.Held, 3, "the charge stayed over the budget (+1 for the next block)")
	assert.Equal(t, 128, st.Budget)
	assert.GreaterOrEqual(t, st.MaxHeld, 100)
	assert.Equal(t, uint64(pruned), st.Pruned)
	assert.Equal(t, st.Pruned, st.Refetches)
	roCloseAndCheckPool(t, r, pool, free0)
}

// The pool runs dry mid-stream: a hog takes every frame it can, reserve
// included. The queue keeps going on the frames it holds, recycling the
// consumer's, and grows again once the hog gives the memory back.
func TestReorderPoolPressure(t *testing.T) {
	const blocks = 2048
	pool := roPool(t, 4<<20)
	free0 := pool.FreeFrames()
	dev, want := roRAM(t, blocks*roPage, roPage, 6)
	sh := newRoShuffle(t, dev, 4, 7, nil)
	var tr roTrace
	r, err := blk.NewReorder(sh, 0, dev.Size(), blk.ReorderConfig{
		Window: 8, Budget: 16, Pool: pool, Trace: tr.hook,
	})
	require.NoError(t, err)

	var hog []phys.PFN
	var during blk.ReorderStats
	var hogTime time.Duration
	var t0 time.Time
	n := roConsume(t, r, 0, dev.Size(), want, nil, func(k int) {
		switch k {
		case 400:
			hog = roHog(pool)
			t0 = time.Now()
		case 1200:
			hogTime = time.Since(t0)
			during = r.Stats()
			for _, pfn := range hog {
				require.NoError(t, pool.Put(pfn))
			}
		}
	})
	require.Equal(t, blocks, n)
	st := r.Stats()
	pruned, byReason := roCheckEvents(t, tr.get())
	t.Logf("hog took %d of %d frames; 800 blocks read meanwhile in %v", len(hog), pool.Frames(), hogTime)
	t.Logf("while hogged: %d allocation failures, held %d, pressure %v; at the end: pruned %d %v, refetches %d, pressure %v",
		during.AllocFailures, during.Held, during.Pressure, st.Pruned, byReason, st.Refetches, st.Pressure)

	assert.NotZero(t, during.AllocFailures)
	assert.True(t, during.Pressure)
	assert.False(t, st.Pressure, "pressure not cleared once the pool recovered")
	assert.Equal(t, uint64(pruned), st.Pruned)
	assert.Equal(t, st.Pruned, st.Refetches)
	roCloseAndCheckPool(t, r, pool, free0)
}

// The next-needed block claims a frame at a full budget: room is made by
// pruning the top of the out-of-order queue, and the frame goes to it.
func TestReorderPruneRoom(t *testing.T) {
	pool := roPool(t, 4<<20)
	free0 := pool.FreeFrames()
	dev, want := roRAM(t, 8*roPage, roPage, 15)
	g := newRoGate(dev)
	var tr roTrace
	r, err := blk.NewReorder(g, 0, dev.Size(), blk.ReorderConfig{Window: 1, Budget: 3, Pool: pool, Trace: tr.hook})
	require.NoError(t, err)

	// One reader: 0 and 1 land, 2 is in flight.
	g.release(t, 0)
	g.release(t, roPage)
	g.await(t, 2*roPage)
	// The top buffered block goes, not 0, which the consumer needs next.
	r.SetBudget(2)
	require.Equal(t, []blk.PruneEvent{{
		Reason: blk.PruneBudget, Next: 0, For: -1, Pruned: []int64{roPage}, Kept: 0, Charge: 2, Limit: 2,
	}}, tr.get())
	off, _, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, int64(0), off)
	// 1, now needed next, has no frame; 2 lands and is kept (the budget,
	// now 1, is only reached); then the reader claims 1 over budget and
	// takes 2's frame.
	r.SetBudget(1)
	g.release(t, 2*roPage)
	g.await(t, roPage)
	require.Equal(t, blk.PruneEvent{
		Reason: blk.PruneRoom, Next: roPage, For: roPage, Pruned: []int64{2 * roPage}, Kept: -1, Charge: 1, Limit: 1,
	}, tr.get()[1])

	g.open()
	require.Equal(t, 7, roConsume(t, r, roPage, dev.Size(), want, nil, nil))
	st := r.Stats()
	assert.Equal(t, uint64(2), st.Refetches)
	roCheckEvents(t, tr.get())
	roCloseAndCheckPool(t, r, pool, free0)
}

// The pool runs dry while the next-needed block has no frame. First a block
// at the top of the out-of-order queue gives up its frame (PrunePool). With
// nothing left to prune, the block waits, retrying the pool, until the
// consumer's frame comes back. Close ends a wait that nothing would end.
func TestReorderPoolStarved(t *testing.T) {
	pool := roPool(t, 4<<20)
	free0 := pool.FreeFrames()
	dev, want := roRAM(t, 8*roPage, roPage, 16)
	g := newRoGate(dev)
	var tr roTrace
	r, err := blk.NewReorder(g, 0, dev.Size(), blk.ReorderConfig{Window: 1, Budget: 3, Pool: pool, Trace: tr.hook})
	require.NoError(t, err)
	check := func(k int, off int64, data []byte, err error) {
		t.Helper()
		require.NoError(t, err)
		require.Equal(t, int64(k)*roPage, off)
		require.Equal(t, want[off:off+roPage], data)
	}

	// 0 is buffered, 1 pruned, 2 in flight.
	g.release(t, 0)
	g.release(t, 1*roPage)
	g.await(t, 2*roPage)
	r.SetBudget(2)
	off, data, err := r.Next()
	check(0, off, data, err)

	hog := roHog(pool)
	// 2 lands; 1 is needed next and the pool refuses it a frame: 2's
	// frame goes to it.
	g.release(t, 2*roPage)
	g.await(t, 1*roPage)
	require.Len(t, tr.get(), 2)
	require.Equal(t, blk.PruneEvent{
		Reason: blk.PrunePool, Next: roPage, For: roPage, Pruned: []int64{2 * roPage}, Kept: -1, Charge: 1, Limit: 1,
	}, tr.get()[1])
	assert.True(t, r.Stats().Pressure)

	// With a budget of 1 and nothing to prune, 2 waits for the frame the
	// consumer holds, retrying the pool meanwhile.
	r.SetBudget(1)
	g.release(t, 1*roPage)
	off, data, err = r.Next()
	check(1, off, data, err)
	failures := r.Stats().AllocFailures
	roWaitFor(t, "retries of the pool", func() bool { return r.Stats().AllocFailures >= failures+3 })
	g.allow(2 * roPage)
	off, data, err = r.Next() // gives 1's frame to 2
	check(2, off, data, err)

	// 3 waits in turn; Close ends its wait.
	failures = r.Stats().AllocFailures
	roWaitFor(t, "3 to be refused a frame", func() bool { return r.Stats().AllocFailures > failures })
	st := r.Stats()
	require.NoError(t, r.Close())
	t.Logf("allocation failures %d, prune events %d, refetches %d", st.AllocFailures, st.PruneEvents, st.Refetches)
	assert.Zero(t, st.Held, "3 holds no frame while it waits")
	for _, pfn := range hog {
		require.NoError(t, pool.Put(pfn))
	}
	assert.Equal(t, free0, pool.FreeFrames())
	assert.NoError(t, pool.Check())
}

// The next-needed block waits for a frame with the pool dry and a read in
// flight above it; when that read lands, its frame goes to the waiting block.
func TestReorderPoolStarvedLanding(t *testing.T) {
	pool := roPool(t, 4<<20)
	free0 := pool.FreeFrames()
	dev, want := roRAM(t, 8*roPage, roPage, 17)
	g := newRoGate(dev)
	var tr roTrace
	r, err := blk.NewReorder(g, 0, dev.Size(), blk.ReorderConfig{Window: 2, Budget: 3, Pool: pool, Trace: tr.hook})
	require.NoError(t, err)

	// 0 in flight, 1 pruned, 2 in flight.
	g.await(t, 0)
	g.release(t, roPage)
	g.await(t, 2*roPage)
	r.SetBudget(2)
	require.Len(t, tr.get(), 1)

	hog := roHog(pool)
	g.release(t, 0)
	off, _, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, int64(0), off)
	// 1 is needed next; the pool refuses it and nothing is buffered
	// above it.
	roWaitFor(t, "1 to wait for a frame", func() bool { return r.Stats().AllocFailures >= 2 })
	g.release(t, 2*roPage)
	g.await(t, roPage)
	require.Len(t, tr.get(), 2)
	require.Equal(t, blk.PruneEvent{
		Reason: blk.PrunePool, Next: roPage, For: roPage, Pruned: []int64{2 * roPage}, Kept: -1, Charge: 1, Limit: 1,
	}, tr.get()[1])

	for _, pfn := range hog {
		require.NoError(t, pool.Put(pfn))
	}
	g.open()
	require.Equal(t, 7, roConsume(t, r, roPage, dev.Size(), want, nil, nil))
	roCheckEvents(t, tr.get())
	roCloseAndCheckPool(t, r, pool, free0)
}

// roReclaimer is direct reclaim that frees nothing; armed, its first call
// holds the allocation that made it until proceed is closed.
type roReclaimer struct {
	armed            atomic.Bool
	once             sync.Once
	entered, proceed chan struct{}
}

func (c *roReclaimer) Reclaim(int, phys.Context) int {
	if c.armed.Load() {
		c.once.Do(func() {
			close(c.entered)
			<-c.proceed
		})
	}
	return 0
}

// The consumer gives its frame back while the reader of the next block is
// still inside the allocator, about to learn that the pool is dry: the
// queue must keep that frame, its last, or it has nothing to read into.
func TestReorderKeepsLastFrame(t *testing.T) {
	pool, err := phys.New(phys.Config{
		Mem: make([]byte, 4<<20), Base: 0x80000000,
		ThrottleTimeout: time.Millisecond, MaxReclaimRetries: 1,
	})
	require.NoError(t, err)
	rc := &roReclaimer{entered: make(chan struct{}), proceed: make(chan struct{})}
	pool.SetReclaimer(rc)
	free0 := pool.FreeFrames()
	dev, want := roRAM(t, 4*roPage, roPage, 18)
	g := newRoGate(dev)
	r, err := blk.NewReorder(g, 0, dev.Size(), blk.ReorderConfig{Window: 1, Budget: 1, Pool: pool})
	require.NoError(t, err)

	g.release(t, 0)
	hog := roHog(pool)
	rc.armed.Store(true)
	off, _, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, int64(0), off)
	// 1's reader asks the dry pool and waits in reclaim.
	select {
	case <-rc.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("1's reader never reached the allocator's slow path")
	}
	g.allow(roPage)
	type result struct {
		off  int64
		data []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		off, data, err := r.Next()
		got <- result{off, bytes.Clone(data), err}
	}()
	roWaitFor(t, "0's frame to be given back", func() bool { return r.Stats().Held == 1 || pool.FreeFrames() > 0 })
	assert.Equal(t, 1, r.Stats().Held, "the queue gave its last frame to a dry pool")
	close(rc.proceed)
	select {
	case res := <-got:
		require.NoError(t, res.err)
		require.Equal(t, int64(roPage), res.off)
		require.Equal(t, want[roPage:2*roPage], res.data)
	case <-time.After(10 * time.Second):
		t.Fatal("no progress with the pool dry")
	}
	g.open()
	require.Equal(t, 2, roConsume(t, r, 2*roPage, dev.Size(), want, nil, nil))
	require.NoError(t, r.Close())
	for _, pfn := range hog {
		require.NoError(t, pool.Put(pfn))
	}
	assert.Equal(t, free0, pool.FreeFrames())
	assert.NoError(t, pool.Check())
}

// A failed read comes back in its turn, with its offset, after every block
// before it, and the stream goes on after it.
func TestReorderReadErrors(t *testing.T) {
	const blocks = 100
	pool := roPool(t, 4<<20)
	free0 := pool.FreeFrames()
	dev, want := roRAM(t, blocks*roPage, roPage, 8)
	fail := map[int64]bool{37 * roPage: true, 38 * roPage: true, 99 * roPage: true}
	sh := newRoShuffle(t, dev, 3, 9, fail)
	r, err := blk.NewReorder(sh, 0, dev.Size(), blk.ReorderConfig{Window: 4, Budget: 4, Pool: pool})
	require.NoError(t, err)
	require.Equal(t, blocks, roConsume(t, r, 0, dev.Size(), want, fail, nil))
	assert.Equal(t, uint64(3), r.Stats().ReadErrors)
	roCloseAndCheckPool(t, r, pool, free0)
}

// Close in the middle of a stream waits for the reads in flight and gives
// every frame back; Next then fails.
func TestReorderCloseMidStream(t *testing.T) {
	pool := roPool(t, 4<<20)
	free0 := pool.FreeFrames()
	dev, _ := roRAM(t, 256*roPage, roPage, 10)
	sh := newRoShuffle(t, dev, 8, 11, nil)
	r, err := blk.NewReorder(sh, 0, dev.Size(), blk.ReorderConfig{Window: 8, Budget: 12, Pool: pool})
	require.NoError(t, err)
	for range 10 {
		_, _, err := r.Next()
		require.NoError(t, err)
	}
	roCloseAndCheckPool(t, r, pool, free0)
	_, _, err = r.Next()
	assert.ErrorIs(t, err, blk.ErrClosed)
}

// A budget of 0 is a budget of 1: one frame, recycled from block to block.
func TestReorderBudgetZero(t *testing.T) {
	pool := roPool(t, 4<<20)
	free0 := pool.FreeFrames()
	dev, want := roRAM(t, 64*roPage, roPage, 12)
	r, err := blk.NewReorder(dev, 0, dev.Size(), blk.ReorderConfig{Window: 4, Pool: pool})
	require.NoError(t, err)
	assert.Equal(t, 1, r.Stats().Budget)
	require.Equal(t, 64, roConsume(t, r, 0, dev.Size(), want, nil, func(int) { r.SetBudget(0) }))
	st := r.Stats()
	assert.Equal(t, 1, st.Budget)
	assert.Equal(t, 1, st.MaxHeld)
	assert.Zero(t, st.Refetches)
	roCloseAndCheckPool(t, r, pool, free0)
}

type roBigBlocks struct{ blk.Device }

func (roBigBlocks) BlockSize() int { return 2 * roPage }

func TestReorderConfigErrors(t *testing.T) {
	pool := roPool(t, 4<<20)
	dev, _ := roRAM(t, 16*roPage, 512, 13)
	for name, c := range map[string]struct {
		dev        blk.Device
		start, end int64
		cfg        blk.ReorderConfig
	}{
		"no pool":        {dev, 0, 4096, blk.ReorderConfig{Window: 1}},
		"no window":      {dev, 0, 4096, blk.ReorderConfig{Pool: pool}},
		"budget":         {dev, 0, 4096, blk.ReorderConfig{Window: 1, Budget: -1, Pool: pool}},
		"misaligned":     {dev, 100, 4096, blk.ReorderConfig{Window: 1, Pool: pool}},
		"past the end":   {dev, 0, dev.Size() + 512, blk.ReorderConfig{Window: 1, Pool: pool}},
		"backwards":      {dev, 4096, 0, blk.ReorderConfig{Window: 1, Pool: pool}},
		"big block size": {roBigBlocks{dev}, 0, 8192, blk.ReorderConfig{Window: 1, Pool: pool}},
	} {
		_, err := blk.NewReorder(c.dev, c.start, c.end, c.cfg)
		assert.Error(t, err, name)
	}
	// An empty range is at its end at once.
	r, err := blk.NewReorder(dev, 4096, 4096, blk.ReorderConfig{Window: 2, Pool: pool})
	require.NoError(t, err)
	_, _, err = r.Next()
	assert.ErrorIs(t, err, io.EOF)
	require.NoError(t, r.Close())
}

// roProperty runs one random configuration: window, budget, block size,
// range (with a short last block), shuffle depth and seed, failing blocks,
// and a shrinker moving the budget at random from another goroutine.
func roProperty(t *testing.T, seed int64) {
	rng := rand.New(rand.NewSource(seed))
	bs := []int{512, 1024, 4096}[rng.Intn(3)]
	size := int64(rng.Intn(160)+1) * roPage
	dev, want := roRAM(t, size, bs, seed)
	start := int64(rng.Intn(int(size/int64(bs)))) * int64(bs)
	end := start + int64(rng.Intn(int((size-start)/int64(bs))+1))*int64(bs)
	fail := map[int64]bool{}
	for off := start; off < end; off += roPage {
		if rng.Intn(40) == 0 {
			fail[off] = true
		}
	}
	window, budget := rng.Intn(20)+1, rng.Intn(25)
	pool := roPool(t, 4<<20)
	free0 := pool.FreeFrames()
	sh := newRoShuffle(t, dev, rng.Intn(6)+1, rng.Int63(), fail)
	var tr roTrace
	r, err := blk.NewReorder(sh, start, end, blk.ReorderConfig{Window: window, Budget: budget, Pool: pool, Trace: tr.hook})
	require.NoError(t, err)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		shrink := rand.New(rand.NewSource(seed + 1))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(shrink.Intn(300)) * time.Microsecond):
				r.SetBudget(shrink.Intn(3*budget + 10))
			}
		}
	})
	blocks := roConsume(t, r, start, end, want, fail, nil)
	close(stop)
	wg.Wait()
	st := r.Stats()
	pruned, _ := roCheckEvents(t, tr.get())
	assert.Equal(t, (end-start+roPage-1)/roPage, int64(blocks))
	assert.Equal(t, uint64(pruned), st.Pruned)
	assert.Equal(t, st.Pruned, st.Refetches)
	assert.Equal(t, uint64(blocks)+st.Refetches, st.Reads)
	assert.LessOrEqual(t, st.MaxInFlight, window)
	roCloseAndCheckPool(t, r, pool, free0)
}

func TestReorderProperty(t *testing.T) {
	n := 24
	if testing.Short() {
		n = 6
	}
	for seed := range int64(n) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { roProperty(t, seed) })
	}
}

func FuzzReorder(f *testing.F) {
	for _, seed := range []int64{100, 101, 102, 103} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seed int64) { roProperty(t, seed) })
}

// BenchmarkReorder measures the queue's own overhead over a RAM device that
// completes every read at once. One op is a pass over 8 MiB: NewReorder,
// Next until io.EOF, Close; sub-benchmarks vary the window W (reads in
// flight) and the budget B (frames). Reports MB/s of blocks delivered;
// B/op and allocs/op are per 8 MiB pass.
func BenchmarkReorder(b *testing.B) {
	const size = 8 << 20
	for _, c := range []struct{ window, budget int }{{1, 1}, {4, 8}, {16, 6}, {16, 32}} {
		b.Run(fmt.Sprintf("W=%d,B=%d", c.window, c.budget), func(b *testing.B) {
			pool := roPool(b, 4<<20)
			dev, _ := roRAM(b, size, roPage, 14)
			pass := func() (bytes int64) {
				r, err := blk.NewReorder(dev, 0, size, blk.ReorderConfig{Window: c.window, Budget: c.budget, Pool: pool})
				if err != nil {
					b.Fatal(err)
				}
				for {
					_, data, err := r.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					bytes += int64(len(data))
				}
				if err := r.Close(); err != nil {
					b.Fatal(err)
				}
				return bytes
			}
			pass() // warm-up: the host faults the pool's frames in
			var bytes int64
			for b.Loop() {
				bytes += pass()
			}
			b.ReportMetric(float64(bytes)/1e6/b.Elapsed().Seconds(), "MB/s")
			b.ReportMetric(0, "ns/op") // an 8 MiB pass
		})
	}
}
