package mm

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

const sec = pgtable.SectionSize

func sectionAt(as *AddressSpace, addr uint32) pgtable.PTE {
	as.ptl.Lock()
	defer as.ptl.Unlock()
	return as.pt.Section(addr)
}

func vmstat(t testing.TB, m *Manager, name string) uint64 {
	t.Helper()
	v, ok := m.VmstatValue(name)
	require.True(t, ok, "no vmstat counter %s", name)
	return v
}

// counters snapshots the THP and lazy-free events, for deltas.
type counters map[string]uint64

var thpCounters = []string{"thp_fault_alloc", "thp_fault_fallback", "thp_split_pmd", "thp_split_page",
	"thp_zero_page_alloc", "thp_deferred_split_page", "pglazyfree", "pglazyfreed"}

func snap(t testing.TB, m *Manager) counters {
	c := counters{}
	for _, n := range thpCounters {
		c[n] = vmstat(t, m, n)
	}
	return c
}

// delta is what changed since c, leaving out counters that did not.
func (c counters) delta(t testing.TB, m *Manager) counters {
	d := counters{}
	for n, v := range snap(t, m) {
		if v != c[n] {
			d[n] = v - c[n]
		}
	}
	return d
}

// hugeArea maps n sections of anonymous memory, aligned (mmap's top-down
// search ends at the window's end, which is).
func hugeArea(t testing.TB, as *AddressSpace, n uint32) uint32 {
	t.Helper()
	a := mmap(t, as, 0, n*sec/pg, ProtRead|ProtWrite, 0)
	require.Zero(t, a%sec)
	return a
}

func smapsOf(t testing.TB, as *AddressSpace, addr uint32) Smaps {
	t.Helper()
	for _, s := range as.Smaps() {
		if s.Start <= addr && addr < s.End {
			return s
		}
	}
	t.Fatalf("no smaps entry for %#x", addr)
	return Smaps{}
}

func meminfoKB(m *Manager, name string) uint64 {
	for _, l := range m.Meminfo() {
		if l.Name == name {
			return l.KB
		}
	}
	return 1 << 63
}

func TestHugeFault(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 2)
	c := snap(t, m)
	write(t, as, a+sec+5, 0x42)
	s := sectionAt(as, a+sec)
	require.True(t, s.Present(), "a write in a whole aligned section maps a huge page")
	assert.True(t, s.Has(pgtable.Dirty|pgtable.Young|pgtable.Write))
	assert.Equal(t, pgtable.PTE(0), pteAt(as, a+sec+5), "no small PTE")
	assert.Equal(t, counters{"thp_fault_alloc": 1}, c.delta(t, m))
	assert.Equal(t, byte(0x42), readByte(t, as, a+sec+5))
	buf := make([]byte, sec)
	require.NoError(t, as.Read(a+sec, buf))
	buf[5] = 0
	assert.Equal(t, -1, nonZero(buf), "the rest of the huge page reads zero")

	head := phys.PFN(s.PA() >> pgtable.PageShift)
	hp := m.pool.Page(head)
	assert.True(t, hp.Test(phys.PGHead|phys.PGSwapBacked))
	assert.Equal(t, phys.HugeOrder, hp.Order())
	lc, _ := m.pool.LargeCounts(head)
	assert.Equal(t, int32(1), lc.Entire())

	sm := smapsOf(t, as, a)
	assert.Equal(t, uint64(sec), sm.AnonHugePages)
	assert.Equal(t, uint64(sec), sm.Rss)
	assert.Equal(t, uint64(sec), sm.Pss)
	assert.Equal(t, uint64(sec), sm.PrivateDirty)
	assert.True(t, sm.THPeligible)
	assert.Equal(t, uint64(1024), meminfoKB(m, "AnonHugePages"))
	assert.Equal(t, uint64(1024), meminfoKB(m, "AnonPages"))
	assert.Equal(t, uint64(12), meminfoKB(m, "PageTables"), "the root block and the deposited table page")
	assert.Equal(t, uint64(1), vmstat(t, m, "nr_anon_transparent_hugepages"))

	// The MMU sees one section, writable since it is dirty.
	pa, fs := as.Translate(a+sec+0x12345, pgtable.AccessWrite)
	assert.Zero(t, fs)
	assert.Equal(t, s.PA()+0x12345, pa)
	require.NoError(t, m.Check())

	// munmap of all of it gives everything back.
	require.NoError(t, as.Munmap(a, 2*sec))
	assert.Equal(t, uint64(0), meminfoKB(m, "AnonHugePages"))
	assert.Equal(t, uint64(8), meminfoKB(m, "PageTables"), "the deposit went with the section")
}

func TestHugeFaultFallsBackWithoutAFreeBlock(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 1)
	// Take every free frame, then give back every other one: plenty of
	// memory, no free order-8 block.
	var held []phys.PFN
	for {
		f, err := m.pool.Alloc(0, phys.Nowait|phys.NoMemalloc)
		if err != nil {
			break
		}
		held = append(held, f)
	}
	for i, f := range held {
		if i%2 == 0 {
			require.NoError(t, m.pool.Put(f))
		}
	}
	c := snap(t, m)
	write(t, as, a, 1)
	assert.False(t, sectionAt(as, a).Present())
	assert.True(t, pteAt(as, a).Present(), "a 4 KiB page instead")
	assert.Equal(t, counters{"thp_fault_fallback": 1}, c.delta(t, m))
	require.NoError(t, m.Check())
	for i, f := range held {
		if i%2 == 1 {
			require.NoError(t, m.pool.Put(f))
		}
	}
}

// A huge fault hands out a zeroed page even where the pool's memory held
// data: every free huge block is written over first.
func TestHugeFaultZeroes(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	var dirty []phys.PFN
	for {
		f, err := m.pool.Alloc(phys.HugeOrder, phys.MovableAlloc|phys.Compound)
		if err != nil {
			break
		}
		b, err := m.pool.Block(f, phys.HugeOrder)
		require.NoError(t, err)
		for i := range b {
			b[i] = 0xaa
		}
		dirty = append(dirty, f)
	}
	require.NotEmpty(t, dirty)
	for _, f := range dirty {
		require.NoError(t, m.pool.Put(f))
	}
	c := snap(t, m)
	a := mmap(t, as, 0, uint32(len(dirty))*sec/pg, ProtRead|ProtWrite, 0)
	buf := make([]byte, sec)
	for i := uint32(0); i < uint32(len(dirty)); i++ {
		if err := as.Write(a+i*sec+sec-1, []byte{0}); err != nil {
			t.Fatalf("section %d: %v", i, err)
		}
		require.NoError(t, as.Read(a+i*sec, buf))
		require.Equal(t, -1, nonZero(buf), "section %d", i)
	}
	assert.NotZero(t, c.delta(t, m)["thp_fault_alloc"], "some faults were huge")
}

func TestHugeZeroPage(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 2)
	c := snap(t, m)
	assert.Equal(t, byte(0), readByte(t, as, a+77))
	assert.Equal(t, byte(0), readByte(t, as, a+sec+77))
	z := sectionAt(as, a)
	require.True(t, z.Present() && z.Has(pgtable.Special), "a read maps the huge zero page: %v", z)
	assert.Equal(t, z.PA(), sectionAt(as, a+sec).PA(), "one huge zero page for both")
	assert.Equal(t, counters{"thp_zero_page_alloc": 1}, c.delta(t, m), "made once")
	_, fs := as.Translate(a, pgtable.AccessWrite)
	assert.Equal(t, pgtable.FSPermissionSection, fs)
	sm := smapsOf(t, as, a)
	assert.Zero(t, sm.Rss, "the huge zero page is not counted")
	require.NoError(t, m.Check())

	// A write replaces it with a real huge page.
	write(t, as, a+sec+3, 9)
	s := sectionAt(as, a+sec)
	require.True(t, s.Present() && !s.Has(pgtable.Special))
	assert.Equal(t, byte(9), readByte(t, as, a+sec+3))
	assert.Equal(t, byte(0), readByte(t, as, a+sec+4))
	assert.Equal(t, counters{"thp_zero_page_alloc": 1, "thp_fault_alloc": 1}, c.delta(t, m))
	require.NoError(t, m.Check())

	// Fork shares the huge zero page too; munmap of part of it splits it
	// into small zero pages.
	child, err := as.Fork()
	require.NoError(t, err)
	assert.True(t, sectionAt(child, a).Has(pgtable.Special))
	require.NoError(t, as.Munmap(a+pg, pg))
	assert.True(t, pteAt(as, a).Has(pgtable.Special), "small zero pages")
	assert.Equal(t, byte(0), readByte(t, as, a+2*pg))
	require.NoError(t, m.Check())
	require.NoError(t, child.Exit())
}

func TestTHPPolicy(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	assert.Equal(t, "[always] madvise never", m.THPEnabledFile())
	a := hugeArea(t, as, 3)

	require.NoError(t, as.Madvise(a, sec, MadvNohugepage))
	write(t, as, a, 1)
	assert.False(t, sectionAt(as, a).Present(), "MADV_NOHUGEPAGE")
	assert.False(t, smapsOf(t, as, a).THPeligible)
	assert.Contains(t, smapsOf(t, as, a).Flags.Mnemonics(), "nh")

	mode, err := ParseTHPMode("madvise")
	require.NoError(t, err)
	require.NoError(t, m.SetTHPEnabled(mode))
	assert.Equal(t, "always [madvise] never", m.THPEnabledFile())
	write(t, as, a+sec, 1)
	assert.False(t, sectionAt(as, a+sec).Present(), "madvise mode, no advice")
	assert.False(t, smapsOf(t, as, a+sec).THPeligible)
	require.NoError(t, as.Madvise(a+2*sec, sec, MadvHugepage))
	assert.True(t, smapsOf(t, as, a+2*sec).THPeligible)
	assert.Contains(t, smapsOf(t, as, a+2*sec).Flags.Mnemonics(), "hg")
	write(t, as, a+2*sec, 1)
	assert.True(t, sectionAt(as, a+2*sec).Present(), "madvise mode, MADV_HUGEPAGE")

	require.NoError(t, m.SetTHPEnabled(THPNever))
	require.NoError(t, as.Munmap(a+2*sec, sec))
	a2 := mmap(t, as, a+2*sec, sec/pg, ProtRead|ProtWrite, MapFixed)
	require.NoError(t, as.Madvise(a2, sec, MadvHugepage))
	write(t, as, a2, 1)
	assert.False(t, sectionAt(as, a2).Present(), "never")
	_, err = ParseTHPMode("sometimes")
	assert.Error(t, err)

	// An area smaller than a section, or one with no aligned section in
	// it, is never eligible.
	require.NoError(t, m.SetTHPEnabled(THPAlways))
	b := mmap(t, as, 0, 255, ProtRead|ProtWrite, 0)
	assert.False(t, smapsOf(t, as, b).THPeligible)
	require.NoError(t, m.Check())

	var out bytes.Buffer
	require.NoError(t, as.WriteSmaps(&out))
	assert.Contains(t, out.String(), "THPeligible:    1\n")
	assert.Contains(t, out.String(), "THPeligible:    0\n")
}

// Splitting a section keeps each subpage's state as the section had it
// (seed 003): a clean section gives clean PTEs, which still take a
// permission fault on their first write (Linux's selftest mm/mkdirty.c),
// and Dirty follows only where the section was dirty.
func TestSplitKeepsDirtyAndYoung(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 2)
	write(t, as, a, 1)
	write(t, as, a+sec, 2)
	require.NoError(t, as.Madvise(a, sec, MadvFree)) // a clean section

	c := snap(t, m)
	require.NoError(t, as.Munmap(a+sec-pg, pg)) // splits the clean one
	require.NoError(t, as.Munmap(a+2*sec-pg, pg))
	assert.Equal(t, uint64(2), c.delta(t, m)["thp_split_pmd"])
	for i := uint32(0); i < 255; i++ {
		clean, dirty := pteAt(as, a+i*pg), pteAt(as, a+sec+i*pg)
		require.True(t, clean.Has(pgtable.Write) && !clean.Has(pgtable.Dirty), "page %d of the clean section: %v", i, clean)
		require.True(t, dirty.Has(pgtable.Write|pgtable.Dirty), "page %d of the dirty section: %v", i, dirty)
		_, fs := as.Translate(a+i*pg, pgtable.AccessWrite)
		require.NotZero(t, fs, "a split must not grant write to a clean page")
		readByte(t, as, a+i*pg) // young now: readable, still not writable
		_, fs = as.Translate(a+i*pg, pgtable.AccessWrite)
		require.Equal(t, pgtable.FSPermissionPage, fs, "a split must not grant write to a clean page")
	}
	assert.Equal(t, uint64(255*pg), smapsOf(t, as, a).LazyFree)
	write(t, as, a+7*pg, 3)
	assert.True(t, pteAt(as, a+7*pg).Has(pgtable.Dirty))
	assert.False(t, pteAt(as, a+8*pg).Has(pgtable.Dirty))
	assert.Equal(t, uint64(254*pg), smapsOf(t, as, a).LazyFree, "the written page is no longer lazily free")
	require.NoError(t, m.Check())
}

func TestPartialUnmapDefersTheSplit(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 1)
	data := bytes.Repeat([]byte{0x5a}, sec)
	require.NoError(t, as.Write(a, data))
	free := m.pool.FreeFrames()
	c := snap(t, m)
	require.NoError(t, as.Munmap(a+16*pg, 16*pg))
	assert.Equal(t, counters{"thp_split_pmd": 1, "thp_deferred_split_page": 1}, c.delta(t, m))
	assert.Equal(t, free, m.pool.FreeFrames(), "the unmapped frames stay in the compound page")
	assert.Equal(t, uint64(240*4), meminfoKB(m, "AnonPages"))
	assert.Equal(t, 1, m.Stats().DeferredSplit)
	require.NoError(t, m.Check())

	assert.Equal(t, 1, m.DeferredSplitScan(10))
	assert.Equal(t, free+16, m.pool.FreeFrames(), "the split frees them")
	assert.Equal(t, uint64(1), c.delta(t, m)["thp_split_page"])
	assert.Equal(t, 0, m.Stats().DeferredSplit)
	got := make([]byte, 16*pg)
	require.NoError(t, as.Read(a, got))
	assert.Equal(t, data[:16*pg], got)
	require.NoError(t, as.Read(a+32*pg, got))
	assert.Equal(t, data[:16*pg], got)
	require.NoError(t, m.Check())

	// Unmapping the rest leaves nothing on the queue.
	b := hugeArea(t, as, 1)
	write(t, as, b, 1)
	require.NoError(t, as.Munmap(b, pg))
	assert.Equal(t, 1, m.Stats().DeferredSplit)
	require.NoError(t, as.Munmap(b, sec))
	assert.Equal(t, 0, m.Stats().DeferredSplit)
	require.NoError(t, m.Check())
}

func TestHugeForkAndCOW(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 1)
	require.NoError(t, as.Write(a, bytes.Repeat([]byte{1}, sec)))
	child, err := as.Fork()
	require.NoError(t, err)
	ps, cs := sectionAt(as, a), sectionAt(child, a)
	assert.Equal(t, ps.PA(), cs.PA(), "both map the same huge page")
	assert.False(t, ps.Has(pgtable.Write) || cs.Has(pgtable.Write), "write-protected in both")
	assert.False(t, cs.Has(pgtable.Young), "the child's is old")
	lc, _ := m.pool.LargeCounts(phys.PFN(ps.PA() >> pgtable.PageShift))
	assert.Equal(t, int32(2), lc.Entire())
	require.NoError(t, m.Check())

	// The child writes: its section is split and one page copied.
	c := snap(t, m)
	free := m.pool.FreeFrames()
	write(t, child, a+5*pg, 2)
	// Frame 5 unmapped in the child, but the parent maps the page whole:
	// not partly mapped, so not queued for a split (as in Linux).
	assert.Equal(t, counters{"thp_split_pmd": 1}, c.delta(t, m))
	assert.Equal(t, free-1, m.pool.FreeFrames(), "one 4 KiB copy")
	assert.Equal(t, byte(2), readByte(t, child, a+5*pg))
	assert.Equal(t, byte(1), readByte(t, as, a+5*pg))
	assert.True(t, sectionAt(as, a).Present(), "the parent's section is untouched")
	require.NoError(t, m.Check())

	// The parent writes: the page is still mapped by the child's PTEs,
	// so it too splits and copies.
	write(t, as, a+6*pg, 3)
	assert.Equal(t, byte(1), readByte(t, child, a+6*pg))
	assert.Equal(t, byte(3), readByte(t, as, a+6*pg))
	require.NoError(t, m.Check())
	require.NoError(t, child.Exit())
	require.NoError(t, m.Check())

	// With the child gone before the write, the parent reuses its huge
	// page in place.
	b := hugeArea(t, as, 1)
	write(t, as, b, 1)
	child, err = as.Fork()
	require.NoError(t, err)
	require.NoError(t, child.Exit())
	c = snap(t, m)
	write(t, as, b+9, 4)
	assert.Empty(t, c.delta(t, m), "reused: no split, no copy")
	assert.True(t, sectionAt(as, b).Has(pgtable.Write))
	require.NoError(t, m.Check())
}

// A reference someone holds through a frame of a huge page keeps the
// page from being reused by a write after fork (the cow.c rule, on
// sections).
func TestHugeCOWWithHolder(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 1)
	write(t, as, a+pg, 7)
	h := hold(t, as, a+pg)
	child, err := as.Fork()
	require.NoError(t, err)
	require.NoError(t, child.Exit())
	write(t, as, a+pg, 8)
	h.check(t, "after the parent wrote")
	assert.Equal(t, byte(8), readByte(t, as, a+pg))
}

func TestRmapOnSections(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 1)
	write(t, as, a, 1)
	child, err := as.Fork()
	require.NoError(t, err)
	pfn, ok := as.FollowPage(a + 3*pg)
	require.True(t, ok)
	head := m.pool.CompoundHead(pfn)
	hp := m.pool.Page(head)
	hp.Set(phys.PGLocked)
	var maps []Mapping
	require.NoError(t, m.RmapWalk(pfn, func(mp Mapping) { maps = append(maps, mp) }))
	assert.ElementsMatch(t, []Mapping{{AS: as, Addr: a, Huge: true}, {AS: child, Addr: a, Huge: true}}, maps)
	n, err := m.PageReferenced(head)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "the parent's section is young, the child's old")
	_, fs := as.Translate(a, pgtable.AccessRead)
	assert.Equal(t, pgtable.FSTranslationSection, fs, "aged: the next access faults")

	_, err = m.TryToUnmap(pfn, nil)
	assert.Error(t, err, "a compound page must be split before try_to_unmap")
	require.NoError(t, m.SplitHugePage(pfn))
	assert.False(t, m.pool.Page(pfn).Compound())
	assert.True(t, m.pool.Page(pfn).Test(phys.PGLocked), "the lock moved to the caller's frame")
	left, err := m.TryToUnmap(pfn, nil)
	require.NoError(t, err)
	assert.True(t, left)
	m.pool.Page(pfn).Clear(phys.PGLocked)
	require.NoError(t, m.pool.Put(pfn))
	require.NoError(t, m.Check())
}

func TestMadvFreeWholeSection(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 1)
	data := bytes.Repeat([]byte{0x77}, sec)
	require.NoError(t, as.Write(a, data))
	c := snap(t, m)
	require.NoError(t, as.Madvise(a, sec, MadvFree))
	assert.Equal(t, counters{"pglazyfree": 256}, c.delta(t, m), "no split")
	s := sectionAt(as, a)
	assert.False(t, s.Has(pgtable.Dirty) || s.Has(pgtable.Young))
	assert.Equal(t, uint64(sec), smapsOf(t, as, a).LazyFree)
	assert.Equal(t, uint64(sec), smapsOf(t, as, a).AnonHugePages)
	_, fs := as.Translate(a, pgtable.AccessRead)
	assert.Equal(t, pgtable.FSTranslationSection, fs, "old: the next access faults")

	// Until discarded, the old data reads back.
	got := make([]byte, sec)
	require.NoError(t, as.Read(a, got))
	assert.Equal(t, data, got)

	// Discarded while clean: zeroes after.
	pfn, ok := as.FollowPage(a)
	require.True(t, ok)
	hp := m.pool.Page(pfn)
	hp.Set(phys.PGLocked)
	d, err := m.DiscardLazyFree(pfn)
	require.NoError(t, err)
	assert.Equal(t, Discarded, d)
	hp.Clear(phys.PGLocked)
	require.NoError(t, m.pool.Put(pfn))
	assert.False(t, sectionAt(as, a).Present())
	assert.Equal(t, uint64(256), c.delta(t, m)["pglazyfreed"])
	require.NoError(t, as.Read(a, got))
	assert.Equal(t, -1, nonZero(got))
	require.NoError(t, m.Check())
}

func TestDiscardRules(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	discard := func(addr uint32) Discard {
		t.Helper()
		pfn, ok := as.FollowPage(addr)
		require.True(t, ok)
		head := m.pool.CompoundHead(pfn)
		m.pool.Page(head).Set(phys.PGLocked)
		d, err := m.DiscardLazyFree(pfn)
		require.NoError(t, err)
		m.pool.Page(head).Clear(phys.PGLocked)
		require.NoError(t, m.pool.Put(pfn))
		return d
	}
	a := hugeArea(t, as, 1)
	write(t, as, a+100, 1)
	assert.Equal(t, NotLazyFree, discard(a))

	// Written again after MADV_FREE: redirtied, swap-backed again, kept.
	require.NoError(t, as.Madvise(a, sec, MadvFree))
	write(t, as, a+200, 2)
	assert.Equal(t, Redirtied, discard(a))
	assert.True(t, sectionAt(as, a).Present())
	assert.Equal(t, byte(1), readByte(t, as, a+100))
	assert.Equal(t, byte(2), readByte(t, as, a+200))
	assert.Zero(t, smapsOf(t, as, a).LazyFree)

	// An extra reference alone: busy, and still lazily free.
	require.NoError(t, as.Madvise(a, sec, MadvFree))
	h := hold(t, as, a+pg)
	assert.Equal(t, Busy, discard(a))
	assert.Equal(t, uint64(sec), smapsOf(t, as, a).LazyFree)
	h.release(t)
	assert.Equal(t, Discarded, discard(a))
	assert.Equal(t, byte(0), readByte(t, as, a+100))

	// Small pages follow the same rules.
	b := mmap(t, as, 0, 4, ProtRead|ProtWrite, 0)
	require.NoError(t, m.SetTHPEnabled(THPNever))
	for i := uint32(0); i < 4; i++ {
		write(t, as, b+i*pg, byte(10+i))
	}
	require.NoError(t, as.Madvise(b, 4*pg, MadvFree))
	write(t, as, b+pg, 20)
	assert.Equal(t, Redirtied, discard(b+pg))
	assert.Equal(t, byte(20), readByte(t, as, b+pg))
	assert.Equal(t, byte(10), readByte(t, as, b), "read, not written: still old data")
	assert.Equal(t, Discarded, discard(b))
	assert.Equal(t, byte(0), readByte(t, as, b))
	assert.Equal(t, byte(12), readByte(t, as, b+2*pg))
	require.NoError(t, m.Check())
}

// MADV_FREE leaves pages others map alone, and frees swapped-out ones at
// once.
func TestMadvFreeSharedAndSwapped(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 1)
	write(t, as, a, 1)
	child, err := as.Fork()
	require.NoError(t, err)
	c := snap(t, m)
	require.NoError(t, as.Madvise(a, sec, MadvFree))
	assert.Empty(t, c.delta(t, m), "a shared huge page is skipped")
	assert.Zero(t, smapsOf(t, as, a).LazyFree)
	require.NoError(t, as.Madvise(a, 4*pg, MadvFree))
	assert.Empty(t, c.delta(t, m), "and not split for a partial range either")
	require.NoError(t, child.Exit())
	require.NoError(t, m.Check())
}

func TestMincore(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 1)
	b := mmap(t, as, 0, 4, ProtRead|ProtWrite, 0)
	require.NoError(t, m.SetTHPEnabled(THPNever))
	write(t, as, b+pg, 1)
	readByte(t, as, b+2*pg)
	vec, err := as.Mincore(b, 4*pg)
	require.NoError(t, err)
	assert.Equal(t, []byte{0, 1, 1, 0}, vec)
	require.NoError(t, m.SetTHPEnabled(THPAlways))
	write(t, as, a, 1)
	vec, err = as.Mincore(a+sec-2*pg, 2*pg)
	require.NoError(t, err)
	assert.Equal(t, []byte{1, 1}, vec, "a section makes every page resident")
	_, err = as.Mincore(b-pg, 2*pg)
	assert.ErrorIs(t, err, ErrNotMapped)
}

func TestVmstatNames(t *testing.T) {
	m := newTestManager(t)
	var names []string
	for _, l := range m.Vmstat() {
		names = append(names, l.Name)
	}
	all := strings.Join(names, " ")
	for _, n := range append(thpCounters, "nr_anon_transparent_hugepages", "nr_anon_pages") {
		assert.Contains(t, all, n)
	}
}

// The counts after a scripted run, computed by hand: MADV_FREE of a whole
// section splits nothing; of part of one, it splits the mapping and the
// page once each (split_folio) and frees just the part.
func TestScriptedMadvFreeCounts(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := hugeArea(t, as, 2)
	data := bytes.Repeat([]byte{0x3c}, 2*sec)
	require.NoError(t, as.Write(a, data))
	c := snap(t, m)
	assert.Empty(t, c.delta(t, m))

	require.NoError(t, as.Madvise(a, sec, MadvFree))
	assert.Equal(t, counters{"pglazyfree": 256}, c.delta(t, m), "whole section: 0 splits")

	c = snap(t, m)
	require.NoError(t, as.Madvise(a+sec, 16*pg, MadvFree))
	assert.Equal(t, counters{"thp_split_pmd": 1, "thp_split_page": 1, "pglazyfree": 16}, c.delta(t, m), "part of a section: 1 split")
	assert.False(t, sectionAt(as, a+sec).Present())
	assert.Equal(t, uint64(16*pg), smapsOf(t, as, a+sec).LazyFree-sec)
	assert.Equal(t, uint64(sec), smapsOf(t, as, a).AnonHugePages)
	got := make([]byte, 2*sec)
	require.NoError(t, as.Read(a, got))
	assert.Equal(t, data, got, "nothing discarded yet")
	require.NoError(t, m.Check())
}
