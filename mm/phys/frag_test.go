package phys

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// fragmentation runs a churn workload like a small system's: tasks fault
// in bursts of movable frames and exit, the kernel allocates unmovable
// frames a few at a time and keeps most of them, a cache takes
// reclaimable frames and drops its oldest. It stops with the pool over
// half full and returns the fraction of free memory that is in free
// blocks of order 8 (1 MiB huge pages) or more, and the fraction of the
// pool in use.
func fragmentation(t *testing.T, grouping bool, seed uint64) (huge, used float64) {
	p, err := New(Config{Mem: make([]byte, 64<<20), Base: testBase, NoGrouping: !grouping})
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(seed, 0xf4a9))

	alloc := func(ctx Context) PFN {
		f, err := p.AllocPage(ctx)
		require.NoError(t, err)
		return f
	}
	var tasks [][]PFN
	var kernel, cache []PFN
	frames := p.Frames()

	inUse := func() int { return frames - int(p.FreeFrames()) }
	// Memory use swings between nearly full and a little over half full,
	// as a system under pressure does, so that the churn sweeps the whole
	// pool instead of recycling the same few blocks.
	for cycle := 0; cycle < 12; cycle++ {
		for inUse() < frames*95/100 {
			// A task starts and faults in its working set.
			task := make([]PFN, 32+rng.IntN(480))
			for k := range task {
				task[k] = alloc(Nowait | MovableAlloc)
				// The kernel allocates as the task runs (page tables,
				// buffers), and most of it outlives the task; a cache
				// fills beside it.
				if rng.IntN(64) == 0 {
					kernel = append(kernel, alloc(Nowait))
				}
				if rng.IntN(16) == 0 {
					cache = append(cache, alloc(Nowait|ReclaimableAlloc))
				}
			}
			tasks = append(tasks, task)
		}
		for inUse() > frames*55/100 && len(tasks) > 0 {
			k := rng.IntN(len(tasks))
			for _, f := range tasks[k] {
				require.NoError(t, p.Free(f, 0))
			}
			tasks = append(tasks[:k], tasks[k+1:]...)
			for len(kernel) > 0 && rng.IntN(4) == 0 {
				k := rng.IntN(len(kernel))
				require.NoError(t, p.Free(kernel[k], 0))
				kernel = append(kernel[:k], kernel[k+1:]...)
			}
			for n := len(cache) / 8; n > 0; n-- {
				require.NoError(t, p.Free(cache[0], 0))
				cache = cache[1:]
			}
		}
	}
	require.NoError(t, p.Check())
	p.drainPageset()

	s := p.snapshot()
	var inHuge uint64
	for o := HugeOrder; o <= MaxOrder; o++ {
		inHuge += s.nrFree[o] << o
	}
	free := s.free
	return float64(inHuge) / float64(free), 1 - float64(free)/float64(frames)
}

// TestFragmentation: grouping by mobility keeps free memory in huge
// pages after churn; without it, the same workload leaves little.
func TestFragmentation(t *testing.T) {
	var with, without float64
	const runs = 8
	for seed := range uint64(runs) {
		h, used := fragmentation(t, true, seed)
		require.GreaterOrEqual(t, used, 0.5, "the workload must leave the pool at least half full")
		with += h / runs
		h2, used := fragmentation(t, false, seed)
		require.GreaterOrEqual(t, used, 0.5)
		without += h2 / runs
		require.GreaterOrEqual(t, h, h2, "seed %d: grouping left less free memory in huge pages than no grouping", seed)
	}
	t.Logf("fragmentation: free memory in order>=%d blocks after churn: %.1f%% with grouping by mobility, %.1f%% without (mean of %d runs, 64 MiB pool, over 50%% in use)",
		HugeOrder, 100*with, 100*without, runs)
	require.Greater(t, with, 1.5*without, "grouping must leave measurably more free memory in huge pages")
}
