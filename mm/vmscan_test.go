package mm_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/mm"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// faultyDev is a RAM device whose writes, or reads of one offset, can be
// made to fail, and which counts its writes.
type faultyDev struct {
	*blk.RAM
	failWrites atomic.Bool
	failRead   atomic.Int64 // byte offset whose reads fail, or -1
	writes     atomic.Int64
}

func newFaultyDev(t *testing.T, size int64) *faultyDev {
	ram, err := blk.NewRAM(blk.RAMConfig{Name: "faulty0", Size: size})
	require.NoError(t, err)
	t.Cleanup(func() { ram.Close() })
	d := &faultyDev{RAM: ram}
	d.failRead.Store(-1)
	return d
}

func (d *faultyDev) WriteAt(p []byte, off int64, f blk.WriteFlags) error {
	d.writes.Add(1)
	if d.failWrites.Load() {
		return &blk.RequestError{Device: "faulty0", Op: blk.OpWrite, Off: off, Len: int64(len(p)), Err: blk.ErrIO}
	}
	return d.RAM.WriteAt(p, off, f)
}

func (d *faultyDev) ReadAt(p []byte, off int64) error {
	if bad := d.failRead.Load(); bad >= off && bad < off+int64(len(p)) {
		return &blk.RequestError{Device: "faulty0", Op: blk.OpRead, Off: off, Len: int64(len(p)), Err: blk.ErrIO}
	}
	return d.RAM.ReadAt(p, off)
}

// swapSetup is a manager without kswapd over a pool of poolMiB, with swap
// on a faulty RAM device of 16 MiB, torn down with every check.
func swapSetup(t *testing.T, poolMiB int, cfg mm.Config) (*mm.Manager, *phys.Pool, *faultyDev) {
	t.Helper()
	pool, err := phys.New(phys.Config{Mem: make([]byte, poolMiB<<20), Base: 0x80000000})
	require.NoError(t, err)
	cfg.Pool, cfg.VerifyZeroed = pool, true
	m, err := mm.New(cfg)
	require.NoError(t, err)
	dev := newFaultyDev(t, 16<<20)
	require.NoError(t, m.Swapon(dev, mm.SwapOptions{Name: "/dev/faulty0"}))
	t.Cleanup(func() {
		for _, as := range m.AddressSpaces() {
			as.Exit()
		}
		require.NoError(t, m.Check())
		ref, _ := m.SwapSlots()
		assert.Zero(t, ref, "swap slots named after every space exited")
		require.NoError(t, m.Close())
		require.NoError(t, pool.Check())
		require.Equal(t, uint64(pool.Frames()), pool.FreeFrames(), "frames leaked")
	})
	return m, pool, dev
}

func vmstat(m *mm.Manager, name string) uint64 {
	v, ok := m.VmstatValue(name)
	if !ok {
		panic("no vmstat counter " + name)
	}
	return v
}

func fill(t *testing.T, as *mm.AddressSpace, addr uint32, pages int, tag byte) {
	t.Helper()
	for i := range pages {
		b := []byte{tag, byte(i), byte(i >> 8), 0x5a}
		require.NoError(t, as.Write(addr+uint32(i)*pgtable.PageSize+uint32(i%1000), b))
	}
}

func verify(t *testing.T, as *mm.AddressSpace, addr uint32, pages int, tag byte) {
	t.Helper()
	for i := range pages {
		var b [4]byte
		require.NoError(t, as.Read(addr+uint32(i)*pgtable.PageSize+uint32(i%1000), b[:]))
		require.Equal(t, [4]byte{tag, byte(i), byte(i >> 8), 0x5a}, b, "page %d", i)
	}
}

// A page shared by N spaces since fork and swapped out comes back as one
// frame mapped N times: the swap cache finds it for every PTE that names
// its slot.
func TestForkSharedPageSurvivesSwap(t *testing.T) {
	m, _, _ := swapSetup(t, 8, mm.Config{NoKswapd: true})
	parent, err := m.NewAddressSpace()
	require.NoError(t, err)
	a, err := parent.Mmap(0, 4*pgtable.PageSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	fill(t, parent, a, 4, 7)
	spaces := []*mm.AddressSpace{parent}
	for range 4 {
		c, err := parent.Fork()
		require.NoError(t, err)
		spaces = append(spaces, c)
	}
	pfn, ok := parent.FollowPage(a)
	require.True(t, ok)
	require.NoError(t, m.Pool().Put(pfn))
	require.Equal(t, int32(5), m.Pool().Page(pfn).MapCount())

	require.True(t, m.PageoutForTest(pfn))
	require.NoError(t, m.Check())
	ref, cached := m.SwapSlots()
	assert.Equal(t, 1, ref, "one slot, named by five PTEs")
	assert.Zero(t, cached, "the page left the swap cache once written")
	for _, as := range spaces {
		vec, err := as.Mincore(a, pgtable.PageSize)
		require.NoError(t, err)
		assert.Zero(t, vec[0], "pid %d still maps the page", as.PID())
	}
	assert.Equal(t, uint64(1), vmstat(m, "pswpout"))

	var frames []phys.PFN
	for _, as := range spaces {
		verify(t, as, a, 1, 7)
		f, ok := as.FollowPage(a)
		require.True(t, ok)
		require.NoError(t, m.Pool().Put(f))
		frames = append(frames, f)
	}
	for _, f := range frames {
		assert.Equal(t, frames[0], f, "every space maps the same frame again")
	}
	assert.Equal(t, int32(5), m.Pool().Page(frames[0]).MapCount())
	assert.Equal(t, uint64(1), vmstat(m, "pgmajfault"), "one read from the device, four swap cache hits")
	require.NoError(t, m.Check())

	// A write still breaks the sharing, once.
	require.NoError(t, spaces[2].Write(a, []byte{99}))
	f, ok := spaces[2].FollowPage(a)
	require.True(t, ok)
	require.NoError(t, m.Pool().Put(f))
	assert.NotEqual(t, frames[0], f)
	assert.Equal(t, int32(4), m.Pool().Page(frames[0]).MapCount())
	for i, as := range spaces {
		if i != 2 {
			verify(t, as, a, 4, 7)
		}
	}
}

// A write that fails keeps the page, dirty, on the active list; nothing
// is lost, and the next pageout writes it.
func TestSwapWriteErrorKeepsThePage(t *testing.T) {
	var logged []string
	var mu sync.Mutex
	m, _, dev := swapSetup(t, 8, mm.Config{NoKswapd: true, Log: func(s string) { mu.Lock(); logged = append(logged, s); mu.Unlock() }})
	as, err := m.NewAddressSpace()
	require.NoError(t, err)
	a, err := as.Mmap(0, 8*pgtable.PageSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	fill(t, as, a, 8, 3)
	dev.failWrites.Store(true)
	require.NoError(t, as.Madvise(a, 8*pgtable.PageSize, mm.MadvPageout))
	require.NoError(t, m.Check())
	assert.Equal(t, uint64(8), vmstat(m, "pswpout_fail"))
	assert.Zero(t, vmstat(m, "pswpout"))
	assert.Equal(t, uint64(8*4), kb(m, "Active(anon)"), "failed pages go to the active list")
	mu.Lock()
	assert.True(t, strings.HasPrefix(logged[len(logged)-1], "Write-error on swap-device"), "log: %q", logged)
	mu.Unlock()
	verify(t, as, a, 8, 3)

	dev.failWrites.Store(false)
	require.NoError(t, as.Madvise(a, 8*pgtable.PageSize, mm.MadvPageout))
	require.NoError(t, m.Check())
	assert.Equal(t, uint64(8), vmstat(m, "pswpout"))
	vec, err := as.Mincore(a, 8*pgtable.PageSize)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 8), vec, "all eight swapped out")
	verify(t, as, a, 8, 3)
}

// A read that fails fails that fault only (SIGBUS); the neighbours read
// ahead with it, and every other page, come back.
func TestSwapReadErrorFailsOnlyThatFault(t *testing.T) {
	m, _, dev := swapSetup(t, 8, mm.Config{NoKswapd: true})
	as, err := m.NewAddressSpace()
	require.NoError(t, err)
	a, err := as.Mmap(0, 16*pgtable.PageSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	fill(t, as, a, 16, 9)
	require.NoError(t, as.Madvise(a, 16*pgtable.PageSize, mm.MadvPageout))
	require.Equal(t, uint64(16), vmstat(m, "pswpout"))

	// Slots are handed out in order from the first cluster: page i is in
	// slot i+1. Page 5's read fails.
	dev.failRead.Store(6 * pgtable.PageSize)
	var b [1]byte
	err = as.Read(a+5*pgtable.PageSize, b[:])
	var fe *mm.FaultError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, mm.SwapError, fe.Reason)
	assert.ErrorIs(t, err, blk.ErrIO)
	assert.Equal(t, uint64(1), vmstat(m, "pswpin_fail"))
	require.NoError(t, m.Check())

	// Page 4's fault reads 4..11 ahead: 5 fails alone.
	verify(t, as, a, 5, 9)
	err = as.Read(a+5*pgtable.PageSize, b[:])
	require.ErrorAs(t, err, &fe)
	for i := 6; i < 16; i++ {
		var got [4]byte
		require.NoError(t, as.Read(a+uint32(i)*pgtable.PageSize+uint32(i), got[:]))
		require.Equal(t, [4]byte{9, byte(i), 0, 0x5a}, got)
	}
	dev.failRead.Store(-1)
	verify(t, as, a, 16, 9)
	require.NoError(t, m.Check())
}

// Swap-in reads the following slots ahead: one major fault brings in
// eight pages, and the next seven faults find theirs in the swap cache.
func TestSwapReadahead(t *testing.T) {
	m, _, _ := swapSetup(t, 8, mm.Config{NoKswapd: true})
	as, err := m.NewAddressSpace()
	require.NoError(t, err)
	a, err := as.Mmap(0, 16*pgtable.PageSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	fill(t, as, a, 16, 1)
	require.NoError(t, as.Madvise(a, 16*pgtable.PageSize, mm.MadvPageout))
	verify(t, as, a, 8, 1)
	assert.Equal(t, uint64(1), vmstat(m, "pgmajfault"))
	assert.Equal(t, uint64(7), vmstat(m, "swap_ra"))
	assert.Equal(t, uint64(8), vmstat(m, "pswpin"))
	assert.Equal(t, uint64(8*4), kb(m, "SwapCached"), "read back, the pages keep their slots while swap has room: clean, they can go again without a write")
	verify(t, as, a, 16, 1)
	assert.Equal(t, uint64(2), vmstat(m, "pgmajfault"))
	require.NoError(t, m.Check())
}

func kb(m *mm.Manager, name string) uint64 {
	for _, l := range m.Meminfo() {
		if l.Name == name {
			return l.KB
		}
	}
	panic("no meminfo line " + name)
}

// /proc/swaps and the swap lines of meminfo, in Linux's formats.
func TestProcSwapsAndMeminfo(t *testing.T) {
	m, _, _ := swapSetup(t, 8, mm.Config{NoKswapd: true})
	as, err := m.NewAddressSpace()
	require.NoError(t, err)
	a, err := as.Mmap(0, 10*pgtable.PageSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	fill(t, as, a, 10, 2)
	assert.Equal(t, uint64(40), kb(m, "Inactive(anon)"), "new anonymous pages start inactive")
	require.NoError(t, as.Madvise(a, 4*pgtable.PageSize, mm.MadvPageout))
	want := "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n" +
		"/dev/faulty0                            partition\t16380\t\t16\t\t-2\n"
	assert.Equal(t, want, m.ProcSwaps())
	assert.Equal(t, uint64(16380), kb(m, "SwapTotal"))
	assert.Equal(t, uint64(16380-16), kb(m, "SwapFree"))
	assert.Equal(t, uint64(24), kb(m, "Inactive(anon)"))
	assert.Equal(t, uint64(24), kb(m, "Inactive"))
	var names []string
	for _, l := range m.Meminfo() {
		names = append(names, l.Name)
	}
	assert.Equal(t, []string{"MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapCached", "Active", "Inactive",
		"Active(anon)", "Inactive(anon)", "Active(file)", "Inactive(file)", "SwapTotal", "SwapFree",
		"Dirty", "Writeback", "AnonPages", "Mapped", "Shmem", "PageTables", "AnonHugePages"}, names, "Linux's order")

	// MADV_FREE moves pages to the file list, where Linux counts them.
	require.NoError(t, as.Madvise(a+4*pgtable.PageSize, 6*pgtable.PageSize, mm.MadvFree))
	assert.Equal(t, uint64(24), kb(m, "Inactive(file)"))
	assert.Zero(t, kb(m, "Inactive(anon)"))
	// And reclaim drops them without I/O.
	out := vmstat(m, "pswpout")
	require.NoError(t, as.Madvise(a+4*pgtable.PageSize, 6*pgtable.PageSize, mm.MadvPageout))
	assert.Equal(t, out, vmstat(m, "pswpout"))
	assert.Equal(t, uint64(6), vmstat(m, "pglazyfreed"))
	assert.Zero(t, kb(m, "Inactive(file)"))
}

// Clean lazily freed huge pages are reclaimed whole: no split, no write.
// A redirtied one becomes swap-backed again, still whole; a dirty
// swap-backed one is split and its pages swapped.
func TestLazyFreeSectionsReclaimedWhole(t *testing.T) {
	m, _, dev := swapSetup(t, 16, mm.Config{NoKswapd: true})
	as, err := m.NewAddressSpace()
	require.NoError(t, err)
	const n = 4
	a, err := as.Mmap(0, n*pgtable.SectionSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	for i := range uint32(n) {
		require.NoError(t, as.Write(a+i*pgtable.SectionSize+100, []byte{byte(i + 1)}))
	}
	require.Equal(t, uint64(n), vmstat(m, "thp_fault_alloc"))
	require.NoError(t, as.Madvise(a, n*pgtable.SectionSize, mm.MadvFree))
	assert.Equal(t, uint64(n*1024), kb(m, "Inactive(file)"))
	// Section 0, the first reclaim meets, is written again after
	// MADV_FREE.
	require.NoError(t, as.Write(a+200, []byte{42}))

	writes := dev.writes.Load()
	freed := m.ProactiveReclaim(3 * 256)
	require.NoError(t, m.Check())
	// Section 0, young from the write, gets its second look first.
	assert.GreaterOrEqual(t, freed, 3*256, "three clean sections dropped (and their deposited tables)")
	assert.Equal(t, uint64(3*256), vmstat(m, "pglazyfreed"))
	assert.Zero(t, vmstat(m, "thp_split_page"), "no split")
	assert.Equal(t, writes, dev.writes.Load(), "no device write")
	for i := uint32(1); i < n; i++ {
		var b [1]byte
		require.NoError(t, as.Read(a+i*pgtable.SectionSize+100, b[:]))
		assert.Zero(t, b[0], "a dropped lazy-free page reads as zeroes")
	}

	// Reclaim of the redirtied section finds it dirty: swap-backed again
	// and activated, still whole.
	require.NoError(t, as.Madvise(a, pgtable.SectionSize, mm.MadvPageout))
	require.NoError(t, m.Check())
	assert.Equal(t, uint64(1), vmstat(m, "pglazyfree_fail"))
	assert.Equal(t, uint64(1024), kb(m, "AnonHugePages"), "still whole")
	assert.Equal(t, uint64(1024), kb(m, "Active(anon)"))
	assert.Zero(t, kb(m, "Inactive(file)"))
	assert.Zero(t, vmstat(m, "thp_split_page"))
	var b [1]byte
	require.NoError(t, as.Read(a+200, b[:]))
	assert.Equal(t, byte(42), b[0])

	// Swap-backed and dirty, it is split and its pages swapped.
	require.NoError(t, as.Madvise(a, pgtable.SectionSize, mm.MadvPageout))
	require.NoError(t, m.Check())
	assert.Equal(t, uint64(1), vmstat(m, "thp_split_page"))
	assert.Equal(t, uint64(256), vmstat(m, "pswpout"))
	require.NoError(t, as.Read(a+200, b[:]))
	assert.Equal(t, byte(42), b[0])
	require.NoError(t, as.Read(a+100, b[:]))
	assert.Equal(t, byte(1), b[0])
}

// The Nishikawa case (2024): a direct reclaimer throttled in
// throttle_direct_reclaim waited forever while kswapd, with nothing it
// could reclaim, had stopped trying. Here kswapd wakes the throttled
// reclaimers whenever it goes back to sleep, and after MAX_RECLAIM_RETRIES
// fruitless runs gives up and says so: the throttled allocation fails
// (nothing can be freed) instead of waiting out its hour.
func TestThrottledReclaimerEndsWhenKswapdGivesUp(t *testing.T) {
	pool, err := phys.New(phys.Config{Mem: make([]byte, 4<<20), Base: 0x80000000, ThrottleTimeout: time.Hour})
	require.NoError(t, err)
	m, err := mm.New(mm.Config{Pool: pool})
	require.NoError(t, err)
	// Pin memory until free is below half of min: the reserve is half
	// gone, so ordinary direct reclaimers are throttled, and nothing is
	// reclaimable. (kswapd, woken all along, may have given up already:
	// start from one that has not.)
	var pinned []phys.PFN
	for pool.FreeFrames() > pool.Watermarks().Min/2 {
		f, err := pool.AllocPage(phys.Atomic)
		require.NoError(t, err)
		pinned = append(pinned, f)
	}
	m.ResetKswapdForTest()
	for i := range 3 {
		done := make(chan error, 1)
		go func() {
			_, err := pool.AllocPage(phys.Kernel)
			done <- err
		}()
		select {
		case err := <-done:
			require.ErrorIs(t, err, phys.ErrNoMemory, "allocation %d", i)
		case <-time.After(30 * time.Second):
			t.Fatalf("throttled allocation %d never returned: kswapd went to sleep without waking it", i)
		}
	}
	assert.NotZero(t, pool.Stats().Throttled, "the allocations were throttled")
	assert.NotZero(t, vmstat(m, "pageoutrun"), "kswapd ran")
	// Many more allocations fail the same way; kswapd, after 16 fruitless
	// runs, is no longer woken for them, and they are no longer throttled.
	for range 64 {
		_, err := pool.AllocPage(phys.Kernel)
		require.ErrorIs(t, err, phys.ErrNoMemory)
	}
	runs := vmstat(m, "pageoutrun")
	throttled := pool.Stats().Throttled
	for range 8 {
		_, err := pool.AllocPage(phys.Kernel)
		require.ErrorIs(t, err, phys.ErrNoMemory)
	}
	assert.Equal(t, runs, vmstat(m, "pageoutrun"), "kswapd gave up")
	assert.Equal(t, throttled, pool.Stats().Throttled, "no throttling once kswapd has given up")
	for _, f := range pinned {
		require.NoError(t, pool.Put(f))
	}
	require.NoError(t, m.Close())
	require.Equal(t, uint64(pool.Frames()), pool.FreeFrames())
}

// With no swap and memory exhausted, the OOM killer kills the largest
// space, reports it, and the rest goes on: nothing hangs.
func TestOOMKillerKillsTheLargest(t *testing.T) {
	pool, err := phys.New(phys.Config{Mem: make([]byte, 2<<20), Base: 0x80000000})
	require.NoError(t, err)
	var mu sync.Mutex
	var logged []string
	m, err := mm.New(mm.Config{Pool: pool, Log: func(s string) { mu.Lock(); logged = append(logged, s); mu.Unlock() }})
	require.NoError(t, err)
	small, err := m.NewAddressSpace()
	require.NoError(t, err)
	sa, err := small.Mmap(0, 32*pgtable.PageSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	fill(t, small, sa, 32, 5)
	big, err := m.NewAddressSpace()
	require.NoError(t, err)
	ba, err := big.Mmap(0, 4<<20, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	require.NoError(t, big.Madvise(ba, 4<<20, mm.MadvNohugepage))
	var werr error
	for i := uint32(0); i < 1024 && werr == nil; i++ {
		werr = big.Write(ba+i*pgtable.PageSize, []byte{1})
	}
	require.Error(t, werr, "512 frames cannot hold 1024 pages without swap")
	// The reaper runs beside the failing writer; give it a moment.
	require.Eventually(t, func() bool { return errors.Is(big.Write(ba, []byte{1}), mm.ErrExited) }, 10*time.Second, time.Millisecond)
	assert.True(t, big.OOMKilled())
	assert.Equal(t, uint64(1), m.OOMKills())
	assert.Equal(t, uint64(1), vmstat(m, "oom_kill"))
	mu.Lock()
	require.NotEmpty(t, logged)
	assert.Regexp(t, fmt.Sprintf(`^oom pid=%d rss_kb=\d+ swap_kb=0`, big.PID()), logged[0])
	mu.Unlock()
	verify(t, small, sa, 32, 5)
	require.NoError(t, m.Check())
	require.NoError(t, small.Exit())
	require.NoError(t, m.Close())
	require.Equal(t, uint64(pool.Frames()), pool.FreeFrames())
}

// MADV_COLD moves a space's own pages to the inactive list; pages other
// spaces map too are left alone, as in Linux.
func TestMadvColdDeactivates(t *testing.T) {
	m, _, _ := swapSetup(t, 8, mm.Config{NoKswapd: true})
	parent, err := m.NewAddressSpace()
	require.NoError(t, err)
	a, err := parent.Mmap(0, 8*pgtable.PageSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	fill(t, parent, a, 8, 4)
	child, err := parent.Fork()
	require.NoError(t, err)
	verify(t, child, a, 8, 4)
	// Eight more, the parent's own, written once.
	b, err := parent.Mmap(0, 8*pgtable.PageSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	fill(t, parent, b, 8, 8)
	// Reclaim's first look activates the shared pages, young in two
	// spaces, and marks the others referenced; its second takes those.
	got := m.ProactiveReclaim(8)
	t.Logf("pgactivate %d pgdeactivate %d pswpout %d pglazyfreed %d", vmstat(m, "pgactivate"), vmstat(m, "pgdeactivate"), vmstat(m, "pswpout"), vmstat(m, "pglazyfreed"))
	assert.Equal(t, 8, got)
	require.Equal(t, uint64(32), kb(m, "Active(anon)"))
	assert.Equal(t, uint64(8), vmstat(m, "pgactivate"))
	require.NoError(t, parent.Madvise(a, 8*pgtable.PageSize, mm.MadvCold))
	assert.Equal(t, uint64(32), kb(m, "Active(anon)"), "shared pages are not deactivated")
	require.NoError(t, child.Exit())
	require.NoError(t, parent.Madvise(a, 8*pgtable.PageSize, mm.MadvCold))
	assert.Zero(t, kb(m, "Active(anon)"))
	assert.Equal(t, uint64(32), kb(m, "Inactive(anon)"))
	// Cold and not touched since: the next reclaim takes them.
	assert.Equal(t, 8, m.ProactiveReclaim(8))
	verify(t, parent, a, 8, 4)
	verify(t, parent, b, 8, 8)
	require.NoError(t, m.Check())
}

// Swapoff brings every swapped-out page back, shared ones as one page,
// and takes the device out of /proc/swaps.
func TestSwapoffBringsPagesBack(t *testing.T) {
	m, _, dev := swapSetup(t, 8, mm.Config{NoKswapd: true})
	parent, err := m.NewAddressSpace()
	require.NoError(t, err)
	a, err := parent.Mmap(0, 16*pgtable.PageSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	fill(t, parent, a, 16, 6)
	child, err := parent.Fork()
	require.NoError(t, err)
	require.NoError(t, child.Write(a, []byte{77}))
	assert.Equal(t, 17, m.ProactiveReclaim(64), "sixteen shared pages and the child's copy")
	ref, _ := m.SwapSlots()
	require.Equal(t, 17, ref)

	require.NoError(t, m.Swapoff(dev))
	require.NoError(t, m.Check())
	assert.Zero(t, kb(m, "SwapTotal"))
	assert.Equal(t, "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n", m.ProcSwaps())
	for _, as := range []*mm.AddressSpace{parent, child} {
		vec, err := as.Mincore(a, 16*pgtable.PageSize)
		require.NoError(t, err)
		assert.Equal(t, []byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, vec, "pid %d", as.PID())
	}
	pp, ok := parent.FollowPage(a + pgtable.PageSize)
	require.True(t, ok)
	cp, ok := child.FollowPage(a + pgtable.PageSize)
	require.True(t, ok)
	assert.Equal(t, pp, cp, "still one page for both")
	m.Pool().Put(pp)
	m.Pool().Put(cp)
	verify(t, parent, a, 16, 6)
	var b [1]byte
	require.NoError(t, child.Read(a, b[:]))
	assert.Equal(t, byte(77), b[0])
	// With no swap, reclaim leaves anonymous memory alone.
	assert.Zero(t, m.ProactiveReclaim(64))
	require.Error(t, m.Swapoff(dev), "not swap space any more")
}
