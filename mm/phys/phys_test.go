package phys

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newPool(t *testing.T, size int) *Pool {
	t.Helper()
	p, err := New(Config{Mem: make([]byte, size), Base: testBase})
	require.NoError(t, err)
	return p
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"empty":          {Base: testBase},
		"partial frame":  {Mem: make([]byte, PageSize+1), Base: testBase},
		"unaligned base": {Mem: make([]byte, 1<<20), Base: testBase + PageSize},
		"beyond 4 GiB":   {Mem: make([]byte, 2<<20), Base: 0xfff00000},
		"negative":       {Mem: make([]byte, 1<<20), Base: testBase, MinFreeKbytes: -1},
		"min too high":   {Mem: make([]byte, 1<<20), Base: testBase, MinFreeKbytes: 1024},
		"scale":          {Mem: make([]byte, 1<<20), Base: testBase, WatermarkScaleFactor: 3001},
	} {
		_, err := New(cfg)
		assert.ErrorIs(t, err, ErrConfig, name)
	}
}

func TestDescriptorSize(t *testing.T) {
	// One cache line per frame, like struct page.
	assert.Equal(t, uintptr(64), unsafe.Sizeof(Page{}))
}

// The image's pool: 380 MiB. Linux would pick min_free_kbytes =
// sqrt(389120 * 16) = 2495 for it.
func TestDefaultWatermarks(t *testing.T) {
	p := newPool(t, 380<<20)
	assert.Equal(t, 2495, p.MinFreeKbytes())
	// min 623 frames; step max(623/4, 97280*10/10000) = 155.
	assert.Equal(t, Watermarks{Min: 623, Low: 778, High: 933}, p.Watermarks())

	require.NoError(t, p.SetWatermarkScaleFactor(100))
	assert.Equal(t, Watermarks{Min: 623, Low: 623 + 972, High: 623 + 2*972}, p.Watermarks())
	require.NoError(t, p.SetMinFreeKbytes(8192))
	assert.Equal(t, uint64(2048), p.Watermarks().Min)
	require.NoError(t, p.SetMinFreeKbytes(0))
	assert.Equal(t, 2495, p.MinFreeKbytes())
	assert.ErrorIs(t, p.SetWatermarkScaleFactor(0), ErrConfig)
	assert.ErrorIs(t, p.SetMinFreeKbytes(-5), ErrConfig)
}

// MaxMinFreeKbytes is exactly the largest value SetMinFreeKbytes takes,
// at any watermark_scale_factor: high = 1.5 min just under the 97280
// frames at the default, 259415 KiB.
func TestMaxMinFreeKbytes(t *testing.T) {
	p := newPool(t, 380<<20)
	for _, scale := range []int{10, 1000, 3000} {
		require.NoError(t, p.SetMinFreeKbytes(0))
		require.NoError(t, p.SetWatermarkScaleFactor(scale))
		limit := p.MaxMinFreeKbytes()
		require.NoError(t, p.SetMinFreeKbytes(limit), "scale %d", scale)
		assert.Less(t, p.Watermarks().High, uint64(p.Frames()))
		assert.ErrorIs(t, p.SetMinFreeKbytes(limit+1), ErrConfig, "scale %d", scale)
		if scale == 10 {
			assert.Equal(t, 259415, limit)
		}
	}
}

func TestConversionsStayInPool(t *testing.T) {
	p := newPool(t, 4<<20)
	assert.Equal(t, PFN(testBase>>PageShift), p.Start())
	assert.Equal(t, 1024, p.Frames())

	f, err := p.PFNOf(testBase + 5*PageSize + 17)
	require.NoError(t, err)
	assert.Equal(t, p.Start()+5, f)
	assert.Equal(t, uint64(testBase+5*PageSize), f.Addr())
	for _, addr := range []uint64{0, testBase - 1, testBase + 4<<20, 1 << 40} {
		_, err := p.PFNOf(addr)
		assert.ErrorIs(t, err, ErrRange, "%#x", addr)
	}

	mem, err := p.Frame(f)
	require.NoError(t, err)
	assert.Len(t, mem, PageSize)
	assert.Equal(t, PageSize, cap(mem), "a frame's slice cannot be resliced into its neighbour")
	_, err = p.Block(p.End()-1, 1)
	assert.Error(t, err, "misaligned")
	_, err = p.Block(p.End()-2, 2)
	assert.Error(t, err, "runs past the end")
	_, err = p.Frame(p.End())
	assert.ErrorIs(t, err, ErrRange)
	_, err = p.Block(p.Start(), MaxOrder+1)
	assert.Error(t, err)

	assert.Nil(t, p.Page(p.End()))
	pg := p.Page(f)
	got, ok := p.PFNOfPage(pg)
	assert.True(t, ok)
	assert.Equal(t, f, got)
	_, ok = p.PFNOfPage(&Page{})
	assert.False(t, ok)
}

func TestCompoundAndSplit(t *testing.T) {
	p := newPool(t, 8<<20)
	head, err := p.Alloc(HugeOrder, HugeUser)
	require.NoError(t, err)
	assert.Zero(t, uint32(head)%(1<<HugeOrder), "a huge page is 1 MiB aligned")
	hp := p.Page(head)
	assert.True(t, hp.Test(PGHead))
	assert.Equal(t, HugeOrder, hp.Order())
	for k := PFN(1); k < 1<<HugeOrder; k++ {
		assert.True(t, p.Page(head+k).Test(PGTail))
		assert.Equal(t, head, p.CompoundHead(head+k))
	}
	require.NoError(t, p.Check())

	// A reference through a tail is a reference to the head.
	require.NoError(t, p.Get(head+7))
	assert.Equal(t, int32(2), hp.RefCount())
	require.NoError(t, p.Put(head+9))
	assert.Equal(t, int32(1), hp.RefCount())
	assert.Error(t, p.Free(head+1, 0), "a tail is not an allocation of order 0")

	// Mapped whole, it cannot be split, nor freed.
	lc, ok := p.LargeCounts(head)
	require.True(t, ok)
	lc.AddEntire(1)
	assert.Error(t, p.SplitCompound(head, 1), "mapped whole")
	assert.Error(t, p.Put(head), "freed while mapped whole")
	assert.Equal(t, int32(1), hp.RefCount())
	require.NoError(t, p.Check())
	lc.AddEntire(-1)

	// Frames 3 and 200 mapped once each, the caller's reference taken
	// through frame 3: the split leaves frame 3 two references, frame 200
	// one, and frees every other frame.
	hp.Mapping, hp.Index = "anon_vma", 100
	hp.Set(PGDirty | PGSwapBacked | PGLocked)
	for _, k := range []PFN{3, 200} {
		p.Page(head + k).IncMapCount()
		require.NoError(t, p.Get(head+k))
	}
	assert.Error(t, p.SplitCompound(head+3, 2), "the count must be exactly the mappings and the caller's")
	free := p.FreeFrames()
	require.NoError(t, p.SplitCompound(head+3, 1))
	assert.Equal(t, free+1<<HugeOrder-2, p.FreeFrames(), "the unmapped frames are freed")
	for _, k := range []PFN{3, 200} {
		pg := p.Page(head + k)
		want := PGDirty | PGSwapBacked
		if k == 3 {
			want |= PGLocked
		}
		assert.Equal(t, want, pg.Flags(), "frame %d", k)
		assert.Equal(t, int32(1)+int32(b2i(k == 3)), pg.RefCount())
		assert.Equal(t, int32(1), pg.MapCount())
		assert.Equal(t, "anon_vma", pg.Mapping)
		assert.Equal(t, uint64(100)+uint64(k), pg.Index)
	}
	require.NoError(t, p.Check())
	p.Page(head + 3).Clear(PGLocked)
	require.NoError(t, p.Put(head+3))
	for _, k := range []PFN{3, 200} {
		assert.Error(t, p.Free(head+k, 0), "still mapped")
		p.Page(head + k).DecMapCount()
		require.NoError(t, p.Free(head+k, 0))
	}
	require.NoError(t, p.Check())
	assert.Equal(t, uint64(p.Frames()), p.FreeFrames())
	assert.Error(t, p.SplitCompound(head, 1), "a free frame is not a compound head")
}

func TestBadFreesChangeNothing(t *testing.T) {
	p := newPool(t, 4<<20)
	f, err := p.Alloc(2, Kernel)
	require.NoError(t, err)
	free := p.FreeFrames()

	assert.ErrorContains(t, p.Free(f, 3), "allocated as order 2")
	assert.ErrorContains(t, p.Free(f+1, 2), "not allocated")
	assert.ErrorIs(t, p.Free(p.End(), 0), ErrRange)
	p.Page(f).Set(PGLRU)
	assert.ErrorContains(t, p.Free(f, 2), "bad page state")
	p.Page(f).Clear(PGLRU)
	assert.Equal(t, free, p.FreeFrames())
	require.NoError(t, p.Check())

	require.NoError(t, p.Free(f, 2))
	assert.ErrorContains(t, p.Free(f, 2), "free (double free?)")
	_, err = p.Alloc(MaxOrder+1, Kernel)
	assert.ErrorIs(t, err, ErrNoMemory)
	_, err = p.Alloc(-1, Kernel)
	assert.Error(t, err)
	require.NoError(t, p.Check())
}

func TestEveryOrder(t *testing.T) {
	p := newPool(t, 16<<20)
	for order := 0; order <= MaxOrder; order++ {
		for _, ctx := range []Context{Kernel, User, Kernel | Compound, Atomic | ReclaimableAlloc} {
			f, err := p.Alloc(order, ctx)
			require.NoError(t, err, "order %d %v", order, ctx)
			assert.Zero(t, uint32(f)&(1<<order-1))
			mem, err := p.Block(f, order)
			require.NoError(t, err)
			mem[0], mem[len(mem)-1] = 1, 1
			require.NoError(t, p.Check())
			require.NoError(t, p.Put(f))
		}
	}
	require.NoError(t, p.Check())
	assert.Equal(t, uint64(p.Frames()), p.FreeFrames())
	s := p.Stats()
	assert.Equal(t, s.PgAlloc, s.PgFree)
}

func TestNames(t *testing.T) {
	assert.Equal(t, "dirty|lru|head", (PGDirty | PGLRU | PGHead).String())
	assert.Equal(t, "0", Flags(0).String())
	assert.Equal(t, "DirectReclaim|StartIO|Zeroed|Movable", User.String())
	assert.Equal(t, "Nowait", Nowait.String())
	assert.Equal(t, "Atomic|Memalloc", (Atomic | Memalloc).String())
	assert.Equal(t, "Movable", Movable.String())
}

func TestList(t *testing.T) {
	p := newPool(t, 1<<20)
	var l List
	var fs []PFN
	for range 3 {
		f, err := p.AllocPage(Kernel)
		require.NoError(t, err)
		fs = append(fs, f)
		l.PushBack(p, f)
	}
	front, _ := l.Front(p)
	back, _ := l.Back(p)
	assert.Equal(t, fs[0], front)
	assert.Equal(t, fs[2], back)
	next, _ := l.Next(p, fs[0])
	assert.Equal(t, fs[1], next)
	l.Remove(p, fs[1])
	next, _ = l.Next(p, fs[0])
	assert.Equal(t, fs[2], next)
	l.PushFront(p, fs[1])
	front, _ = l.Front(p)
	assert.Equal(t, fs[1], front)
	assert.Equal(t, 3, l.Len())
	require.NoError(t, p.Check(), "mm's lists do not disturb phys")
}

// The first unmovable allocation claims a whole free 4 MiB block for
// Unmovable; later ones stay inside it.
func TestUnmovableClaimsPageblocks(t *testing.T) {
	p := newPool(t, 16<<20)
	f, err := p.AllocPage(Kernel)
	require.NoError(t, err)
	mt, ok := p.PageblockType(f)
	require.True(t, ok)
	assert.Equal(t, Unmovable, mt)
	assert.Equal(t, uint64(4), p.Stats().PageblockSteals)
	for range 500 {
		g, err := p.AllocPage(Kernel)
		require.NoError(t, err)
		assert.Equal(t, f/(1<<MaxOrder), g/(1<<MaxOrder), "unmovable frames stay in the claimed block")
	}
	m, err := p.AllocPage(User)
	require.NoError(t, err)
	mt, _ = p.PageblockType(m)
	assert.Equal(t, Movable, mt)
	_, ok = p.PageblockType(p.End())
	assert.False(t, ok)
	assert.Equal(t, uint64(1), p.Stats().Fallbacks)
	require.NoError(t, p.Check())
}

func TestPutRefs(t *testing.T) {
	p, err := New(Config{Mem: make([]byte, 4<<20), Base: 0x80000000})
	require.NoError(t, err)
	free := p.FreeFrames()
	f, err := p.AllocPage(Kernel)
	require.NoError(t, err)
	for range 4 {
		require.NoError(t, p.Get(f))
	}
	require.NoError(t, p.PutRefs(f, 0))
	require.Error(t, p.PutRefs(f, -1))
	require.Error(t, p.PutRefs(f, 6), "more references than it has")
	assert.Equal(t, int32(5), p.Page(f).RefCount(), "a refused drop changes nothing")
	require.NoError(t, p.PutRefs(f, 3))
	assert.Equal(t, int32(2), p.Page(f).RefCount())
	require.NoError(t, p.PutRefs(f, 2), "the last references free it")
	assert.Equal(t, free, p.FreeFrames())
	require.Error(t, p.PutRefs(f, 1))
	require.NoError(t, p.Check())
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TryAllocPage succeeds as AllocPage does, and fails where it fails, but
// without an error value: a failure allocates nothing and is counted.
func TestTryAllocPageFailsQuietly(t *testing.T) {
	p := newPool(t, 4<<20)
	var got []PFN
	for {
		f, ok := p.TryAllocPage(Atomic)
		if !ok {
			break
		}
		got = append(got, f)
	}
	require.NotEmpty(t, got)
	mark := p.Watermarks().Min - p.Watermarks().Min/2
	assert.Equal(t, mark-mark/4, p.FreeFrames(), "an Atomic caller stops at 3/8 of min")
	_, err := p.AllocPage(Atomic)
	assert.ErrorIs(t, err, ErrNoMemory, "AllocPage fails at the same point")
	failures := p.Stats().AllocFailures
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := p.TryAllocPage(Atomic); ok {
			t.Fatal("a frame past the watermark")
		}
	})
	assert.Zero(t, allocs, "allocations per failure")
	assert.Equal(t, failures+101, p.Stats().AllocFailures, "every failure counted")
	for _, f := range got {
		require.NoError(t, p.Put(f))
	}
	require.NoError(t, p.Check())
}
