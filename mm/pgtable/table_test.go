package pgtable

import (
	"encoding/binary"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/phys"
)

const poolBase = 0x80000000

// newPool returns a pool over memory full of a poison byte, as memory is
// at boot and frames are when recycled: the table code must clear what it
// relies on being zero, and a table built on unclean frames shows it.
func newPool(t *testing.T) *phys.Pool {
	t.Helper()
	mem := make([]byte, 8<<20)
	for i := range mem {
		mem[i] = poison
	}
	pool, err := phys.New(phys.Config{Mem: mem, Base: poolBase})
	require.NoError(t, err)
	return pool
}

// poison is Linux's PAGE_POISON: a byte no valid descriptor is made of.
const poison = 0xaa

// newTable returns an empty table and its pool, and checks at the end of
// the test that destroying the table gives back every frame.
func newTable(t *testing.T) (*Table, *phys.Pool) {
	t.Helper()
	pool := newPool(t)
	free := pool.FreeFrames()
	tb, err := New(pool, phys.Kernel)
	require.NoError(t, err)
	require.Equal(t, free-2, pool.FreeFrames(), "New takes the two root frames")
	t.Cleanup(func() {
		if tb.l1 == nil {
			return // destroyed by the test
		}
		assert.NoError(t, tb.Destroy())
		assert.Equal(t, free, pool.FreeFrames(), "frames leaked")
		assert.NoError(t, pool.Check())
	})
	return tb, pool
}

func lockedMutex() *sync.Mutex {
	mu := new(sync.Mutex)
	mu.Lock()
	return mu
}

func populate(t *testing.T, tb *Table, va uint32) {
	t.Helper()
	mu := lockedMutex()
	require.NoError(t, tb.Populate(va, mu))
	require.False(t, mu.TryLock(), "Populate must return with the lock held")
}

// mapPage populates va's table and sets its PTE.
func mapPage(t *testing.T, tb *Table, va uint32, p PTE) {
	t.Helper()
	populate(t, tb, va)
	tb.Set(va, p)
}

// tableFrame is the physical address of va's table page.
func tableFrame(tb *Table, va uint32) uint32 {
	return uint32(tb.pfns[l1Index(va)>>1].Addr())
}

// frameWord reads the little-endian word at byte offset off of the frame
// at pa, straight from the pool's memory.
func frameWord(t *testing.T, pool *phys.Pool, pa, off uint32) uint32 {
	t.Helper()
	f, err := pool.PFNOf(uint64(pa))
	require.NoError(t, err)
	b, err := pool.Frame(f)
	require.NoError(t, err)
	return binary.LittleEndian.Uint32(b[off:])
}

func allL1Zero(t *testing.T, tb *Table) {
	t.Helper()
	for i := uint32(0); i < WindowSections; i++ {
		require.Equal(t, L1(0), tb.L1(WindowStart+i<<SectionShift), "L1 entry %d", i)
	}
}

func TestGeometry(t *testing.T) {
	assert.Equal(t, uint32(0x40000000), WindowStart)
	assert.Equal(t, uint32(0x80000000), WindowEnd)
	assert.Equal(t, 256, PTEsPerTable)
	assert.Equal(t, uint32(1024), uint32(WindowSections))
	assert.Equal(t, uint32(0x1), DACR, "TamaGo's set_ttbr0 writes DACR = 1")
	assert.Equal(t, 0, UserDomain)
	assert.False(t, InWindow(0x3fffffff))
	assert.True(t, InWindow(0x40000000))
	assert.True(t, InWindow(0x7fffffff))
	assert.False(t, InWindow(0x80000000))
	assert.False(t, InWindow(0))
	assert.False(t, InWindow(0xffffffff))
}

func TestNewTableIsEmpty(t *testing.T) {
	tb, pool := newTable(t)
	assert.Equal(t, 2, tb.Pages())
	root := tb.RootPA()
	assert.Zero(t, root&0x1fff, "root block is order 1")
	_, err := pool.PFNOf(uint64(root))
	assert.NoError(t, err)
	allL1Zero(t, tb)
	for _, va := range []uint32{0x40000000, 0x40123000, 0x7ffff000} {
		assert.Equal(t, PTE(0), tb.PTE(va))
		assert.Equal(t, L2(0), tb.HardwarePTE(va))
		assert.Equal(t, PTE(0), tb.Section(va))
		assert.False(t, tb.Populated(va))
	}
	assert.NoError(t, tb.Check())
}

func TestNewFailsWhenPoolIsEmpty(t *testing.T) {
	pool := newPool(t)
	var held []phys.PFN
	for {
		f, err := pool.Alloc(0, phys.Kernel)
		if err != nil {
			break
		}
		held = append(held, f)
	}
	_, err := New(pool, phys.Kernel)
	assert.ErrorIs(t, err, phys.ErrNoMemory)
	for _, f := range held {
		require.NoError(t, pool.Put(f))
	}
	assert.NoError(t, pool.Check())
}

// The L1 descriptors of a populated pair point at the table frame's
// hardware tables: +2048 for the even section, +3072 for the odd one,
// domain 0 (type 0b01, no PXN, no NS).
func TestPopulateInstallsPair(t *testing.T) {
	tb, pool := newTable(t)
	free := pool.FreeFrames()

	populate(t, tb, 0x40000000) // even section of pair 0
	assert.Equal(t, free-1, pool.FreeFrames())
	assert.Equal(t, 3, tb.Pages())
	f0 := tableFrame(tb, 0x40000000)
	assert.Zero(t, f0&0xfff)
	assert.Equal(t, L1(f0+0x805), tb.L1(0x40000000))
	assert.Equal(t, L1(f0+0xC05), tb.L1(0x40100000))
	assert.Equal(t, L1(f0+0xC05), tb.L1(0x401fffff))
	assert.True(t, tb.Populated(0x40000000))
	assert.True(t, tb.Populated(0x401ff000), "both halves share the page")
	assert.False(t, tb.Populated(0x40200000))
	// The window's L1 descriptors are the first frame of the root block.
	assert.Equal(t, f0+0x805, frameWord(t, pool, tb.RootPA(), 0))
	assert.Equal(t, f0+0xC05, frameWord(t, pool, tb.RootPA(), 4))

	// Populating either half again allocates nothing, and does not even
	// drop the lock.
	populate(t, tb, 0x40000000)
	populate(t, tb, 0x40100000)
	assert.Equal(t, free-1, pool.FreeFrames())
	mu := &hookLocker{hook: func() { t.Error("Populate dropped the lock for a populated pair") }}
	mu.Lock()
	require.NoError(t, tb.Populate(0x401ff000, mu))
	assert.False(t, mu.TryLock())

	populate(t, tb, 0x40345000) // odd section of pair 1
	f1 := tableFrame(tb, 0x40345000)
	assert.NotEqual(t, f0, f1)
	assert.Equal(t, L1(f1+0x805), tb.L1(0x40200000))
	assert.Equal(t, L1(f1+0xC05), tb.L1(0x40300000))
	assert.Equal(t, free-2, pool.FreeFrames())
	assert.Equal(t, 4, tb.Pages())

	populate(t, tb, 0x7ffff000) // last pair, section 1023 (odd)
	f2 := tableFrame(tb, 0x7ffff000)
	assert.Equal(t, L1(f2+0x805), tb.L1(0x7fe00000))
	assert.Equal(t, L1(f2+0xC05), tb.L1(0x7ff00000))
	assert.Equal(t, f2+0xC05, frameWord(t, pool, tb.RootPA(), 1023*4))

	for _, va := range []uint32{0x40000000, 0x40100000, 0x40345000} {
		pa, dom := tb.L1(va).Table()
		assert.Equal(t, uint8(0), dom)
		assert.Equal(t, KindTable, tb.L1(va).Kind())
		assert.Zero(t, pa&0x3ff)
	}
	// An empty table page is not yet consistent: the caller must fill or
	// Trim it.
	for _, va := range []uint32{0x40000000, 0x40345000, 0x7ffff000} {
		tb.Trim(va)
	}
	assert.Equal(t, free, pool.FreeFrames())
	assert.NoError(t, tb.Check())
}

func TestPopulateRefusals(t *testing.T) {
	tb, pool := newTable(t)
	free := pool.FreeFrames()
	for _, va := range []uint32{0, 0x3ffff000, 0x3fffffff, 0x80000000, 0xfffff000} {
		mu := lockedMutex()
		assert.Error(t, tb.Populate(va, mu), "%#x", va)
		assert.False(t, mu.TryLock(), "lock still held")
	}
	require.NoError(t, tb.SetSection(0x40400000, MkPTE(0x90100000, Young|User)))
	for _, va := range []uint32{0x40400000, 0x40456000, 0x404ff000} {
		mu := lockedMutex()
		assert.Error(t, tb.Populate(va, mu), "%#x is in a section", va)
		assert.False(t, mu.TryLock())
		assert.False(t, tb.Populated(va))
	}
	// A swapped-out section occupies its L1 entry too.
	swp, err := MkSwapPTE(SwapEntry{Type: 1, Offset: 9})
	require.NoError(t, err)
	require.NoError(t, tb.SetSection(0x40600000, swp))
	assert.Error(t, tb.Populate(0x40600000, lockedMutex()))
	assert.Equal(t, free, pool.FreeFrames(), "nothing allocated")
	assert.NoError(t, tb.Check())
}

// Populate must refuse a va inside a section whatever the state of the
// other half of the pair: here the odd section of the pair has small
// pages, so the table page exists, and the even section is a section.
func TestPopulateRefusesSectionBesideSmallPages(t *testing.T) {
	tb, _ := newTable(t)
	require.NoError(t, tb.SetSection(0x40400000, MkPTE(0x90100000, Young|User|Write|Dirty)))
	mapPage(t, tb, 0x40500000, MkPTE(0x90000000, Young|User))
	mu := lockedMutex()
	assert.Error(t, tb.Populate(0x40456000, mu), "0x40456000 is mapped by a section")
	assert.False(t, mu.TryLock())
	assert.NoError(t, tb.Check())
}

// hookLocker runs a function the first time it is unlocked: what another
// thread could do while Populate has dropped the page-table lock.
type hookLocker struct {
	sync.Mutex
	hook func()
}

func (l *hookLocker) Unlock() {
	l.Mutex.Unlock()
	if h := l.hook; h != nil {
		l.hook = nil
		h()
	}
}

func TestPopulateRacingPopulate(t *testing.T) {
	tb, pool := newTable(t)
	free := pool.FreeFrames()
	mu := &hookLocker{hook: func() { populate(t, tb, 0x40123000) }}
	mu.Lock()
	require.NoError(t, tb.Populate(0x40000000, mu))
	assert.False(t, mu.TryLock())
	assert.Equal(t, free-1, pool.FreeFrames(), "the loser's frame went back")
	assert.Equal(t, 3, tb.Pages())
	f := tableFrame(tb, 0x40000000)
	assert.Equal(t, L1(f+0x805), tb.L1(0x40000000))
	tb.Set(0x40000000, MkPTE(0x90000000, Young))
	assert.NoError(t, tb.Check())
}

// Another thread maps a section while Populate allocates: Populate must
// not report success for a va that now lies in a section.
func TestPopulateRacingSection(t *testing.T) {
	tb, pool := newTable(t)
	free := pool.FreeFrames()
	mu := &hookLocker{hook: func() {
		assert.NoError(t, tb.SetSection(0x40000000, MkPTE(0x90000000, Young|User)))
	}}
	mu.Lock()
	err := tb.Populate(0x40000000, mu)
	assert.False(t, mu.TryLock())
	assert.Equal(t, free, pool.FreeFrames(), "the frame went back")
	assert.False(t, tb.Populated(0x40000000))
	assert.Error(t, err, "0x40000000 is now mapped by a section")
	assert.NoError(t, tb.Check())
}

func TestPopulateAllocationFailure(t *testing.T) {
	tb, pool := newTable(t)
	var held []phys.PFN
	for {
		f, err := pool.Alloc(0, phys.Kernel)
		if err != nil {
			break
		}
		held = append(held, f)
	}
	mu := lockedMutex()
	assert.ErrorIs(t, tb.Populate(0x40000000, mu), phys.ErrNoMemory)
	assert.False(t, mu.TryLock(), "lock held again after the failed allocation")
	assert.False(t, tb.Populated(0x40000000))
	assert.Equal(t, L1(0), tb.L1(0x40000000))
	for _, f := range held {
		require.NoError(t, pool.Put(f))
	}
}

// The table page's layout, read from the frame itself: shadow PTEs at
// +0 (even) and +1024 (odd), hardware entries 2048 bytes after them.
func TestSetLayout(t *testing.T) {
	tb, pool := newTable(t)
	even, odd := uint32(0x40000000|0x12<<12), uint32(0x40100000|0xff<<12)
	pe := MkPTE(0x90000000, Young|User|Write|Dirty)
	po := MkPTE(0x90abc000, Young|User|Exec)
	mapPage(t, tb, even, pe)
	tb.Set(odd, po)
	f := tableFrame(tb, even)

	assert.Equal(t, uint32(0x900001C3), uint32(pe))
	assert.Equal(t, uint32(0x900001C3), frameWord(t, pool, f, 0x12*4))
	assert.Equal(t, uint32(0x9000087F), frameWord(t, pool, f, 2048+0x12*4))
	assert.Equal(t, uint32(0x90abc303), frameWord(t, pool, f, 1024+0xff*4))
	assert.Equal(t, uint32(0x90abca7e), frameWord(t, pool, f, 3072+0xff*4))

	assert.Equal(t, pe, tb.PTE(even))
	assert.Equal(t, L2(0x9000087F), tb.HardwarePTE(even))
	assert.Equal(t, po, tb.PTE(odd))
	assert.Equal(t, L2(0x90abca7e), tb.HardwarePTE(odd))
	// Neighbours are untouched.
	assert.Equal(t, PTE(0), tb.PTE(even+PageSize))
	assert.Equal(t, PTE(0), tb.PTE(even-PageSize))
	assert.Equal(t, L2(0), tb.HardwarePTE(odd-PageSize))
	// The hardware table the L1 entry points at holds the entry.
	base, _ := tb.L1(odd).Table()
	assert.Equal(t, uint32(0x90abca7e), frameWord(t, pool, base&^0xfff, base&0xfff+0xff*4))

	// Updating a PTE rewrites the hardware entry: clean it, then age it.
	tb.Set(even, pe.Without(Dirty))
	assert.Equal(t, L2(0x90000A7F), tb.HardwarePTE(even))
	tb.Set(even, pe.Without(Young))
	assert.Equal(t, L2(0), tb.HardwarePTE(even))
	assert.Equal(t, uint32(0), frameWord(t, pool, f, 2048+0x12*4))
	assert.NoError(t, tb.Check())
}

func TestSetWithoutTablePanics(t *testing.T) {
	tb, _ := newTable(t)
	assert.Panics(t, func() { tb.Set(0x40000000, MkPTE(0x90000000, Young)) })
	assert.Panics(t, func() { tb.Set(0x40000000, 0) })
}

func TestSetLastNoneFreesTable(t *testing.T) {
	tb, pool := newTable(t)
	free := pool.FreeFrames()
	a, b, c := uint32(0x40200000), uint32(0x402ff000), uint32(0x40300000)
	mapPage(t, tb, a, MkPTE(0x90000000, Young|User))
	tb.Set(b, MkPTE(0x90001000, Young|User))
	tb.Set(c, MkPTE(0x90002000, Young|User))
	assert.Equal(t, free-1, pool.FreeFrames())
	require.NoError(t, tb.Check())

	// Replacing a present entry or setting none over none changes no count.
	tb.Set(a, MkPTE(0x90003000, Young|User|Write))
	tb.Set(0x40201000, 0)
	require.NoError(t, tb.Check())

	tb.Set(a, 0)
	tb.Set(b, 0) // the even half is empty, the odd one is not
	assert.True(t, tb.Populated(a))
	assert.Equal(t, KindTable, tb.L1(a).Kind())
	require.NoError(t, tb.Check())
	assert.Equal(t, free-1, pool.FreeFrames())

	tb.Set(c, 0)
	assert.False(t, tb.Populated(a))
	assert.Equal(t, L1(0), tb.L1(0x40200000))
	assert.Equal(t, L1(0), tb.L1(0x40300000))
	assert.Equal(t, free, pool.FreeFrames(), "table page freed")
	assert.Equal(t, 2, tb.Pages())
	assert.Equal(t, PTE(0), tb.PTE(c))
	assert.NoError(t, tb.Check())
	assert.NoError(t, pool.Check())

	// A swap entry keeps the table alive as a present PTE does.
	swp, err := MkSwapPTE(SwapEntry{Type: 2, Offset: 0x77})
	require.NoError(t, err)
	mapPage(t, tb, a, swp)
	assert.Equal(t, L2(0), tb.HardwarePTE(a))
	tb.Set(a, MkPTE(0x90000000, Young|User)) // swap-in
	tb.Set(a, swp)                           // swap-out
	assert.True(t, tb.Populated(a))
	require.NoError(t, tb.Check())
	tb.Set(a, 0)
	assert.False(t, tb.Populated(a))
	assert.Equal(t, free, pool.FreeFrames())
}

// Filling a whole pair (512 entries) and emptying it again.
func TestFullTablePage(t *testing.T) {
	tb, pool := newTable(t)
	free := pool.FreeFrames()
	populate(t, tb, 0x40600000)
	for va := uint32(0x40600000); va < 0x40800000; va += PageSize {
		tb.Set(va, MkPTE(va+0x50000000, Young|User|Write|Dirty))
	}
	require.NoError(t, tb.Check())
	assert.Equal(t, uint64(256|256<<32), *tb.used(3))
	for va := uint32(0x407ff000); va >= 0x40600000; va -= PageSize {
		require.True(t, tb.Populated(va))
		tb.Set(va, 0)
	}
	assert.False(t, tb.Populated(0x40600000))
	assert.Equal(t, free, pool.FreeFrames())
	allL1Zero(t, tb)
}

func TestTrim(t *testing.T) {
	tb, pool := newTable(t)
	free := pool.FreeFrames()
	tb.Trim(0x40000000) // nothing there: no-op
	populate(t, tb, 0x40000000)
	tb.Trim(0x40100000) // either half
	assert.False(t, tb.Populated(0x40000000))
	assert.Equal(t, L1(0), tb.L1(0x40000000))
	assert.Equal(t, L1(0), tb.L1(0x40100000))
	assert.Equal(t, free, pool.FreeFrames())
	assert.Equal(t, 2, tb.Pages())

	mapPage(t, tb, 0x40000000, MkPTE(0x90000000, Young))
	tb.Trim(0x40000000) // in use: no-op
	assert.True(t, tb.Populated(0x40000000))
	assert.Equal(t, MkPTE(0x90000000, Young), tb.PTE(0x40000000))
	assert.NoError(t, tb.Check())
}

type visit struct {
	va uint32
	p  PTE
}

func collect(tb *Table, start, end uint32) []visit {
	var got []visit
	tb.Range(start, end, func(va uint32, p PTE) bool {
		got = append(got, visit{va, p})
		return true
	})
	return got
}

func vas(vs []visit) []uint32 {
	out := make([]uint32, len(vs))
	for i, v := range vs {
		out[i] = v.va
	}
	return out
}

var rangeVAs = []uint32{
	0x40000000, 0x40001000, 0x400ff000, // pair 0, even
	0x40100000, 0x401ff000, // pair 0, odd
	0x40200000,             // pair 1
	0x40345000, 0x40346000, // pair 1, odd (the second a swap entry)
	0x40500000,             // beside a section at 0x40400000
	0x7fe00000, 0x7ffff000, // last pair
}

func buildRange(t *testing.T, tb *Table) []visit {
	t.Helper()
	require.NoError(t, tb.SetSection(0x40400000, MkPTE(0x90400000, Young|User)))
	var want []visit
	for i, va := range rangeVAs {
		p := MkPTE(0x90000000+uint32(i)<<PageShift, Young|User)
		if va == 0x40346000 {
			var err error
			p, err = MkSwapPTE(SwapEntry{Type: 1, Offset: 0x346})
			require.NoError(t, err)
		}
		mapPage(t, tb, va, p)
		want = append(want, visit{va, p})
	}
	require.NoError(t, tb.Check())
	return want
}

func TestRangeVisitsEntriesInOrder(t *testing.T) {
	tb, _ := newTable(t)
	want := buildRange(t, tb)
	assert.Equal(t, want, collect(tb, WindowStart, WindowEnd))

	assert.Equal(t, []uint32{0x40001000, 0x400ff000, 0x40100000, 0x401ff000},
		vas(collect(tb, 0x40001000, 0x40200000)), "end is exclusive, start inclusive")
	assert.Equal(t, []uint32{0x401ff000, 0x40200000, 0x40345000},
		vas(collect(tb, 0x40101000, 0x40346000)), "across a table boundary")
	assert.Equal(t, []uint32{0x40500000},
		vas(collect(tb, 0x40400000, 0x40600000)), "a section is no PTE")
	assert.Equal(t, []uint32{0x7ffff000}, vas(collect(tb, 0x7fe01000, WindowEnd)))
	assert.Equal(t, []uint32{0x40000000, 0x40001000, 0x400ff000, 0x40100000},
		vas(collect(tb, WindowStart, 0x401ff000)), "end one page below the pair's end")
	assert.Equal(t, []uint32{0x401ff000}, vas(collect(tb, 0x401ff000, 0x40200000)))
	assert.Empty(t, collect(tb, 0x40100000, 0x40100000))
	assert.Empty(t, collect(tb, 0x40600000, 0x7fe00000), "nothing populated in between")
	assert.Empty(t, collect(tb, 0x40002000, 0x400ff000))

	// Stopping.
	var n int
	tb.Range(WindowStart, WindowEnd, func(va uint32, p PTE) bool {
		n++
		return n < 3
	})
	assert.Equal(t, 3, n)
}

func TestRangeClearingEveryEntry(t *testing.T) {
	tb, pool := newTable(t)
	want := buildRange(t, tb)
	free := pool.FreeFrames()
	var got []visit
	tb.Range(WindowStart, WindowEnd, func(va uint32, p PTE) bool {
		got = append(got, visit{va, p})
		tb.Set(va, 0)
		return true
	})
	assert.Equal(t, want, got)
	assert.Equal(t, free+4, pool.FreeFrames(), "all four table pages freed")
	assert.Equal(t, 2, tb.Pages())
	assert.Empty(t, collect(tb, WindowStart, WindowEnd))
	require.NoError(t, tb.SetSection(0x40400000, 0))
	allL1Zero(t, tb)
	assert.NoError(t, tb.Check())
}

// fn empties the whole table page it is in while Range is half-way through
// it: Range must go on with the next pair, visiting nothing it freed.
func TestRangeFreeingTableMidRange(t *testing.T) {
	tb, pool := newTable(t)
	want := buildRange(t, tb)
	free := pool.FreeFrames()
	var got []uint32
	tb.Range(WindowStart, WindowEnd, func(va uint32, p PTE) bool {
		got = append(got, va)
		if va == 0x40001000 {
			for _, v := range []uint32{0x40000000, 0x40001000, 0x400ff000, 0x40100000, 0x401ff000} {
				tb.Set(v, 0)
			}
			assert.False(t, tb.Populated(va))
		}
		return true
	})
	assert.Equal(t, []uint32{0x40000000, 0x40001000, 0x40200000, 0x40345000, 0x40346000,
		0x40500000, 0x7fe00000, 0x7ffff000}, got)
	assert.Equal(t, free+1, pool.FreeFrames())
	assert.Equal(t, want[5:], collect(tb, WindowStart, WindowEnd))
	assert.NoError(t, tb.Check())
}

func TestSetSection(t *testing.T) {
	tb, pool := newTable(t)
	free := pool.FreeFrames()
	va := uint32(0x40400000)
	p := MkPTE(0x90100000, Young|User|Write|Dirty)
	require.NoError(t, tb.SetSection(va, p))
	assert.Equal(t, L1(0x90121C1F), tb.L1(va))
	assert.Equal(t, uint32(0x90121C1F), frameWord(t, pool, tb.RootPA(), 4*4))
	assert.Equal(t, p, tb.Section(va))
	assert.Equal(t, p, tb.Section(0x404fffff))
	assert.Equal(t, PTE(0), tb.Section(0x40500000))
	assert.Equal(t, L1(0), tb.L1(0x40500000))
	assert.False(t, tb.Populated(va))
	assert.Equal(t, PTE(0), tb.PTE(va), "a section is not a PTE")
	assert.Equal(t, free, pool.FreeFrames(), "sections take no table page")
	require.NoError(t, tb.Check())

	// Clean the section: AP[2] appears; age it: the L1 entry faults.
	require.NoError(t, tb.SetSection(va, p.Without(Dirty)))
	assert.Equal(t, L1(0x90129C1F), tb.L1(va))
	require.NoError(t, tb.SetSection(va, p.Without(Young)))
	assert.Equal(t, L1(0), tb.L1(va))
	assert.Equal(t, p.Without(Young), tb.Section(va))
	require.NoError(t, tb.Check())

	assert.Error(t, tb.SetSection(va, MkPTE(0x90180000, Young|User)), "not 1 MiB aligned")
	assert.Error(t, tb.SetSection(va, MkPTE(0x90101000, Young|User)), "not 1 MiB aligned")
	assert.Equal(t, p.Without(Young), tb.Section(va), "unchanged by the refusals")
	assert.Error(t, tb.SetSection(0x3ff00000, p))
	assert.Error(t, tb.SetSection(0x80000000, p))

	require.NoError(t, tb.SetSection(va, 0))
	assert.Equal(t, L1(0), tb.L1(va))
	assert.Equal(t, PTE(0), tb.Section(va))
	require.NoError(t, tb.Check())
}

func TestSetSectionBesideSmallPages(t *testing.T) {
	tb, pool := newTable(t)
	free := pool.FreeFrames()
	small := MkPTE(0x90000000, Young|User)
	mapPage(t, tb, 0x40200000, small)
	f := tableFrame(tb, 0x40200000)
	huge := MkPTE(0x90300000, Young|User|Write|Dirty|Exec)

	// The half with a small page cannot be a section.
	assert.Error(t, tb.SetSection(0x40200000, huge))
	assert.Error(t, tb.SetSection(0x402ff000, huge))
	assert.Equal(t, L1(f+0x805), tb.L1(0x40200000))
	assert.Equal(t, PTE(0), tb.Section(0x40200000))

	// The other, empty, half can.
	require.NoError(t, tb.SetSection(0x40300000, huge))
	assert.Equal(t, L1(0x90321C0F), tb.L1(0x40300000))
	assert.Equal(t, L1(f+0x805), tb.L1(0x40200000))
	require.NoError(t, tb.Check())

	// Unmapping it gives the L1 entry back to the table page.
	require.NoError(t, tb.SetSection(0x40300000, 0))
	assert.Equal(t, L1(f+0xC05), tb.L1(0x40300000))
	require.NoError(t, tb.Check())

	// Map it again, then free the table page under it: the section stays.
	require.NoError(t, tb.SetSection(0x40300000, huge))
	tb.Set(0x40200000, 0)
	assert.False(t, tb.Populated(0x40200000))
	assert.Equal(t, L1(0), tb.L1(0x40200000))
	assert.Equal(t, L1(0x90321C0F), tb.L1(0x40300000))
	assert.Equal(t, free, pool.FreeFrames())
	require.NoError(t, tb.Check())

	// Populating the pair again does not cover the section.
	mapPage(t, tb, 0x40200000, small)
	f = tableFrame(tb, 0x40200000)
	assert.Equal(t, L1(f+0x805), tb.L1(0x40200000))
	assert.Equal(t, L1(0x90321C0F), tb.L1(0x40300000))
	require.NoError(t, tb.Check())
	require.NoError(t, tb.SetSection(0x40300000, 0))
	assert.Equal(t, L1(f+0xC05), tb.L1(0x40300000))
	require.NoError(t, tb.Check())
}

// A swapped-out huge PTE beside a table page: the section's L1 entry is a
// fault, as it is without the table page and as Check expects (any
// non-zero section entry owns the L1 descriptor).
func TestSetSectionSwapBesideSmallPages(t *testing.T) {
	tb, _ := newTable(t)
	mapPage(t, tb, 0x40200000, MkPTE(0x90000000, Young|User))
	swp, err := MkSwapPTE(SwapEntry{Type: 4, Offset: 0x300})
	require.NoError(t, err)
	require.NoError(t, tb.SetSection(0x40300000, swp))
	assert.Equal(t, swp, tb.Section(0x40300000))
	assert.Equal(t, L1(0), tb.L1(0x40300000), "a swap entry's hardware descriptor is a fault")
	assert.NoError(t, tb.Check())
	_, fs := tb.Translate(0x40300000, AccessRead, true)
	assert.Equal(t, FSTranslationSection, fs)
}

func TestDestroyReturnsEveryFrame(t *testing.T) {
	pool := newPool(t)
	free := pool.FreeFrames()
	tb, err := New(pool, phys.Kernel)
	require.NoError(t, err)
	for i := uint32(0); i < 300; i++ {
		va := WindowStart + i*0x00345000%WindowSize&^(PageSize-1)
		if tb.Section(va) != 0 {
			continue
		}
		mapPage(t, tb, va, MkPTE(0x90000000+i<<PageShift, Young|User|Write|Dirty))
	}
	for _, va := range []uint32{0x7f000000, 0x7f100000, 0x7f300000} {
		if !tb.Populated(va) {
			require.NoError(t, tb.SetSection(va, MkPTE(va, Young|User)))
		}
	}
	require.NoError(t, tb.Check())
	pages := tb.Pages()
	assert.Greater(t, pages, 100)
	assert.Equal(t, free-uint64(pages), pool.FreeFrames())
	require.NoError(t, tb.Destroy())
	assert.Equal(t, free, pool.FreeFrames())
	assert.Equal(t, 0, tb.Pages())
	assert.NoError(t, pool.Check())
}

func TestCheckDetectsInconsistency(t *testing.T) {
	tb, pool := newTable(t)
	va := uint32(0x40345000)
	mapPage(t, tb, va, MkPTE(0x90000000, Young|User))
	require.NoError(t, tb.SetSection(0x40200000, MkPTE(0x90200000, Young|User)))
	require.NoError(t, tb.Check())
	f := tableFrame(tb, va)
	hw := (1*PTEsPerTable+0x45)*4 + 2048
	b, err := pool.Frame(phys.PFN(f >> PageShift))
	require.NoError(t, err)

	// A hardware entry that is not the one derived from its PTE.
	put32(b, uint32(hw/4), 0x9000087F)
	assert.Error(t, tb.Check())
	put32(b, uint32(hw/4), 0x90000A7F)
	require.NoError(t, tb.Check())

	// A hardware entry with no PTE.
	put32(b, uint32(hw/4+1), 0x90001A7F)
	assert.Error(t, tb.Check())
	put32(b, uint32(hw/4+1), 0)
	require.NoError(t, tb.Check())

	// An L1 descriptor pointing at the wrong half.
	i := l1Index(va)
	put32(tb.l1, i, f+0x805)
	assert.Error(t, tb.Check())
	put32(tb.l1, i, f+0xC05)
	require.NoError(t, tb.Check())

	// A section's L1 descriptor that is not derived from its huge PTE.
	put32(tb.l1, l1Index(0x40200000), 0x90201C1F)
	assert.Error(t, tb.Check())
	put32(tb.l1, l1Index(0x40200000), 0x90229C1F)
	require.NoError(t, tb.Check())

	// Wrong count of entries in use.
	*tb.used(i >> 1)++
	assert.Error(t, tb.Check())
	*tb.used(i >> 1)--
	require.NoError(t, tb.Check())

	// Small pages under a section: a caller bug Set refuses.
	assert.Panics(t, func() { tb.Set(0x40201000, MkPTE(0x90003000, Young)) })
	require.NoError(t, tb.Check())

	// An empty table page that was neither filled nor trimmed.
	populate(t, tb, 0x40600000)
	assert.Error(t, tb.Check())
	tb.Trim(0x40600000)
	require.NoError(t, tb.Check())

	// A PTE written behind Set's back.
	put32(b, 0x100+0x46, uint32(MkPTE(0x90002000, Young)))
	assert.Error(t, tb.Check())
	put32(b, 0x100+0x46, 0)
	require.NoError(t, tb.Check())
}
