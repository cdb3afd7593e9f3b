package vmtest

import (
	"fmt"
	"math/rand"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"yolk/mm"
	"yolk/mm/phys"
)

func newManager(t testing.TB, poolMiB int) (*mm.Manager, *RAMSwap, *phys.Pool) {
	t.Helper()
	pool, err := phys.New(phys.Config{Mem: make([]byte, poolMiB<<20), Base: 0x80000000})
	require.NoError(t, err)
	swap := NewRAMSwap(pool)
	mgr, err := mm.New(mm.Config{Pool: pool, Swap: swap, VerifyZeroed: true})
	require.NoError(t, err)
	return mgr, swap, pool
}

// finish checks that nothing leaked: every frame is back in the pool once
// the manager is closed.
func finish(t testing.TB, mgr *mm.Manager, pool *phys.Pool) {
	t.Helper()
	require.NoError(t, mgr.Close())
	require.NoError(t, pool.Check())
	require.Equal(t, uint64(pool.Frames()), pool.FreeFrames(), "frames leaked")
}

// TestModel runs the differential property test: streams of random
// operations over several address spaces, each step checked against the
// model, by mm.Check, and through the MMU's and smaps' views (views.go).
// modelSteps is 1<<20 in a normal build and less under the race detector
// (see race_test.go), with mm.Check after every step and the views after
// every fourth; -short runs shortModelSteps with both after every step,
// for make mutants.
func TestModel(t *testing.T) {
	const streams = 128
	steps, views := modelSteps, 4
	if testing.Short() {
		steps, views = shortModelSteps, 1
	}
	per := steps / streams
	var mu sync.Mutex
	total := Stats{Ops: map[string]int{}, Events: map[string]uint64{}}
	t.Run("streams", func(t *testing.T) {
		for seed := int64(1); seed <= streams; seed++ {
			t.Run(fmt.Sprint(seed), func(t *testing.T) {
				t.Parallel()
				mgr, swap, pool := newManager(t, 3+int(seed%4))
				st, err := Run(mgr, swap, rand.New(rand.NewSource(seed)), Config{Steps: per, ViewEvery: views})
				require.NoError(t, err, "seed %d", seed)
				finish(t, mgr, pool)
				mu.Lock()
				defer mu.Unlock()
				total.Steps += st.Steps
				total.Checks += st.Checks
				total.Refused += st.Refused
				for k, v := range st.Ops {
					total.Ops[k] += v
				}
				for k, v := range st.Events {
					total.Events[k] += v
				}
				total.MaxSpaces = max(total.MaxSpaces, st.MaxSpaces)
				total.MaxVMAs = max(total.MaxVMAs, st.MaxVMAs)
				total.MaxPages = max(total.MaxPages, st.MaxPages)
				total.MaxAnonVMA = max(total.MaxAnonVMA, st.MaxAnonVMA)
			})
		}
	})
	if t.Failed() {
		return
	}
	t.Logf("model: %d steps, %d checks, %d refused as expected; ops %v; at most %d spaces, %d VMAs, %d anon pages, %d anon_vmas; events %v",
		total.Steps, total.Checks, total.Refused, total.Ops, total.MaxSpaces, total.MaxVMAs, total.MaxPages, total.MaxAnonVMA, total.Events)
	require.Equal(t, streams*per, total.Steps)
	for _, op := range []string{"mmap", "munmap", "mprotect", "madvise", "fork", "exit", "write", "read", "reclaim", "referenced", "discard", "split", "thp"} {
		require.NotZero(t, total.Ops[op], op)
	}
	for _, ev := range EventNames {
		require.NotZero(t, total.Events[ev], "no %s in the whole run", ev)
	}
	require.Greater(t, total.MaxPages, int64(64), "the streams should build up real memory use")
}

// TestConcurrentModel runs the model's operations in a fork family's
// spaces at once, with reclaimers swapping out and aging their pages
// through the rmap (RunConcurrent). It is written for -race, which make
// test runs it under.
func TestConcurrentModel(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			mgr, swap, pool := newManager(t, 4)
			st, err := RunConcurrent(mgr, swap, seed, ConcurrentConfig{Spaces: 4, Steps: concurrentSteps, Reclaimers: 2})
			require.NoError(t, err, "seed %d", seed)
			finish(t, mgr, pool)
			t.Logf("concurrent model: %d steps, ops %v", st.Steps, st.Ops)
			for _, op := range []string{"mmap", "munmap", "mprotect", "madvise", "write", "read", "reclaim"} {
				require.NotZero(t, st.Ops[op], op)
			}
		})
	}
}

// shortModelSteps is long enough for every operation to meet every other
// many times over (fork after swap-out, COW after mprotect, ...).
const shortModelSteps = 1 << 15

// FuzzVM runs the same operations with the fuzzer choosing every step.
func FuzzVM(f *testing.F) {
	for seed := int64(1); seed <= 4; seed++ {
		b := make([]byte, 512)
		rand.New(rand.NewSource(seed)).Read(b)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		mgr, swap, pool := newManager(t, 2)
		src := &Bytes{Data: data}
		// A step reads about three bytes; long inputs are cut at 1000
		// steps, so that the fuzzer spends its time on many sequences.
		_, err := Run(mgr, swap, src, Config{Steps: min(len(data)/3, 1000)})
		require.NoError(t, err)
		finish(t, mgr, pool)
	})
}
