package vmcheck

import (
	"fmt"
	"math/rand"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/mm"
	"yolk/mm/phys"
)

// newManager makes a manager over a pool of poolKiB, with kswapd, and
// swap on a RAM device of swapMiB in Go memory (not the pool's: swapping
// into the memory being reclaimed would free nothing).
func newManager(t testing.TB, poolKiB, swapMiB int) (*mm.Manager, *phys.Pool) {
	t.Helper()
	pool, err := phys.New(phys.Config{Mem: make([]byte, poolKiB<<10), Base: 0x80000000})
	require.NoError(t, err)
	mgr, err := mm.New(mm.Config{Pool: pool, VerifyZeroed: true})
	require.NoError(t, err)
	dev, err := blk.NewRAM(blk.RAMConfig{Name: "ram0", Size: int64(swapMiB) << 20})
	require.NoError(t, err)
	require.NoError(t, mgr.Swapon(dev, mm.SwapOptions{}))
	t.Cleanup(func() { dev.Close() })
	return mgr, pool
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
// Every stream has a journaled region of modelRegionPages (region.go),
// which its spaces map shared and private beside anonymous memory: its
// pool is small enough that reclaim drops and writes back page cache
// pages as well as swapping.
// modelSteps is 1<<20 in a normal build and less under the race detector
// (see race_test.go), with mm.Check after every step and the views after
// every eighth; -short runs shortModelSteps with both after every step,
// for make mutants.
func TestModel(t *testing.T) {
	const streams = 128
	steps, views := modelSteps, 8
	if testing.Short() {
		steps, views = shortModelSteps, 1
	}
	per := steps / streams
	var mu sync.Mutex
	total := Stats{Ops: map[string]int{}, Events: map[string]uint64{}}
	var dropped int64
	t.Run("streams", func(t *testing.T) {
		for seed := int64(1); seed <= streams; seed++ {
			t.Run(fmt.Sprint(seed), func(t *testing.T) {
				t.Parallel()
				mgr, pool := newManager(t, modelPoolKiB(seed), 16)
				reg, err := NewRegion(mgr, modelRegionPages)
				require.NoError(t, err)
				fill, fillPages := modelFill(seed)
				st, err := Run(mgr, rand.New(rand.NewSource(seed)), Config{Steps: per, ViewEvery: views, Fill: fill, FillPages: fillPages, OwnPool: true, Region: reg})
				require.NoError(t, err, "seed %d", seed)
				require.NoError(t, reg.Close())
				finish(t, mgr, pool)
				mu.Lock()
				defer mu.Unlock()
				total.Steps += st.Steps
				total.Checks += st.Checks
				total.Refused += st.Refused
				total.MsyncRefused += st.MsyncRefused
				total.DurableChecks += st.DurableChecks
				addRegionStats(&total.Region, st.Region)
				dropped += st.RegionDropped
				for k, v := range st.Ops {
					total.Ops[k] += v
				}
				for k, v := range st.Events {
					total.Events[k] += v
				}
				total.MaxSpaces = max(total.MaxSpaces, st.MaxSpaces)
				total.MaxVMAs = max(total.MaxVMAs, st.MaxVMAs)
				total.MaxPages = max(total.MaxPages, st.MaxPages)
				total.MaxWorkingSet = max(total.MaxWorkingSet, st.MaxWorkingSet)
				t.Logf("seed %d: pool %d KiB, working set at most %d KiB", seed, modelPoolKiB(seed), st.MaxWorkingSet*4)
				total.MaxAnonVMA = max(total.MaxAnonVMA, st.MaxAnonVMA)
			})
		}
	})
	if t.Failed() {
		return
	}
	rs := total.Region
	t.Logf("model: %d steps, %d checks, %d refused as expected; ops %v; at most %d spaces, %d VMAs, %d anon pages, %d anon_vmas; events %v",
		total.Steps, total.Checks, total.Refused, total.Ops, total.MaxSpaces, total.MaxVMAs, total.MaxPages, total.MaxAnonVMA, total.Events)
	t.Logf("model: region pages read %d (%d read ahead), dropped by reclaim %d; commits %d carrying %d pages, msyncs %d (%d refused as too big), flusher transactions %d, pages reclaim wrote back %d; %d checks of durable contents",
		rs.PagesRead, rs.Readahead, dropped, rs.Commits, rs.PagesWritten, rs.Msyncs, total.MsyncRefused, rs.BgWritebacks, rs.ReclaimWrites, total.DurableChecks)
	require.Equal(t, streams*per, total.Steps)
	for _, op := range []string{"mmap", "munmap", "mprotect", "madvise", "fork", "exit", "write", "read", "reclaim", "referenced", "discard", "split", "thp", "msync", "writeback", "sync"} {
		require.NotZero(t, total.Ops[op], op)
	}
	for _, ev := range EventNames {
		require.NotZero(t, total.Events[ev], "no %s in the whole run", ev)
	}
	// The region's pages were written back by every path, and reclaim
	// dropped clean ones too: more than it wrote back.
	require.NotZero(t, rs.Msyncs, "msyncs")
	require.NotZero(t, rs.BgWritebacks, "flusher transactions")
	require.NotZero(t, rs.ReclaimWrites, "pages reclaim wrote back")
	if per >= 1024 {
		// Rare: a run of more dirty pages than a transaction holds.
		require.NotZero(t, total.MsyncRefused, "msyncs refused as too big")
	}
	require.Greater(t, dropped, int64(rs.ReclaimWrites), "region pages dropped by reclaim, more than it wrote back")
	require.Zero(t, rs.WriteErrors+rs.ReadErrors, "region I/O errors")
	require.Greater(t, total.MaxPages, int64(64), "the streams should build up real memory use")
}

// TestConcurrentModel runs the model's operations in a fork family's
// spaces at once, with reclaimers swapping out and aging their pages
// through the rmap (RunConcurrent). It is written for -race, which make
// test runs it under.
func TestConcurrentModel(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			mgr, pool := newManager(t, 4<<10, 64)
			st, err := RunConcurrent(mgr, seed, ConcurrentConfig{Spaces: 4, Steps: concurrentSteps, Reclaimers: 2})
			require.NoError(t, err, "seed %d", seed)
			finish(t, mgr, pool)
			t.Logf("concurrent model: %d steps, ops %v", st.Steps, st.Ops)
			for _, op := range []string{"mmap", "munmap", "mprotect", "madvise", "write", "read", "reclaim"} {
				require.NotZero(t, st.Ops[op], op)
			}
		})
	}
}

// modelPoolKiB is a stream's pool: small enough that the model's working
// set is several times the pool, so that every stream runs under memory
// pressure, with kswapd and direct reclaim swapping to the RAM device.
func modelPoolKiB(seed int64) int {
	if seed%4 == 0 {
		return 3 << 10 // room for huge pages: a section needs 1 MiB free in one block
	}
	return 512 + 128*int(seed%4)
}

// modelFill is how often a stream's writes are fills, and how long a fill
// runs at most (Config.Fill, FillPages): the streams with room for huge
// pages fill more, to keep their working set beyond their pool too.
func modelFill(seed int64) (every, pages int) {
	if seed%4 == 0 {
		return 2, 384
	}
	return 4, 128
}

// modelRegionPages is each stream's region: small beside the arena, so
// that the streams' mappings of it keep meeting on the same pages.
const modelRegionPages = 128

// addRegionStats adds a stream's region counters to a run's.
func addRegionStats(sum *mm.RegionStats, st mm.RegionStats) {
	sum.Commits += st.Commits
	sum.PagesWritten += st.PagesWritten
	sum.PagesRead += st.PagesRead
	sum.Readahead += st.Readahead
	sum.Msyncs += st.Msyncs
	sum.BgWritebacks += st.BgWritebacks
	sum.ReclaimWrites += st.ReclaimWrites
	sum.WriteErrors += st.WriteErrors
	sum.ReadErrors += st.ReadErrors
}

// shortModelSteps is long enough for every operation to meet every other
// many times over (fork after swap-out, COW after mprotect, ...).
const shortModelSteps = 1 << 15

// FuzzVM runs the same operations with the fuzzer choosing every step,
// with a region as TestModel's streams have.
func FuzzVM(f *testing.F) {
	for seed := int64(1); seed <= 4; seed++ {
		b := make([]byte, 512)
		rand.New(rand.NewSource(seed)).Read(b)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		mgr, pool := newManager(t, 1536, 64)
		reg, err := NewRegion(mgr, modelRegionPages)
		require.NoError(t, err)
		src := &Bytes{Data: data}
		// A step reads about three bytes; long inputs are cut at 1000
		// steps, so that the fuzzer spends its time on many sequences.
		_, err = Run(mgr, src, Config{Steps: min(len(data)/3, 1000), Fill: 4, OwnPool: true, Region: reg})
		require.NoError(t, err)
		require.NoError(t, reg.Close())
		finish(t, mgr, pool)
	})
}
