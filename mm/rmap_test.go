package mm

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// The 2.6.34 anon_vma lesson: anon_vma_prepare reuses a neighbour's anon_vma only for an
// adjacent, compatible neighbour whose chain is a singleton. Each shape
// is tried with the neighbour on either side.
func TestAnonVMAReuse(t *testing.T) {
	rw, rx := ProtRead|ProtWrite, ProtRead|ProtWrite|ProtExec
	// first makes a 2-page area at addr that has an anon_vma; second makes
	// the neighbour whose first write decides on reuse.
	cases := []struct {
		name          string
		gap           uint32
		first, second func(t *testing.T, as *AddressSpace, addr uint32)
		reuse         bool
		mergeProt     Prot // make second's protection this and expect one VMA
	}{
		{"adjacent, flags differ in X only", 0,
			mapWritten(rw), func(t *testing.T, as *AddressSpace, addr uint32) { mmap(t, as, addr, 2, rx, MapFixed) },
			true, rw},
		{"adjacent, flags differ in W only", 0,
			func(t *testing.T, as *AddressSpace, addr uint32) {
				mapWritten(rw)(t, as, addr)
				require.NoError(t, as.Mprotect(addr, 2*pg, ProtRead)) // keeps VM_ACCOUNT
			},
			func(t *testing.T, as *AddressSpace, addr uint32) { mmap(t, as, addr, 2, rw, MapFixed) },
			true, ProtRead},
		{"not adjacent", pg,
			mapWritten(rw), func(t *testing.T, as *AddressSpace, addr uint32) { mmap(t, as, addr, 2, rx, MapFixed) },
			false, 0},
		{"flags differ beyond R/W/X (VM_DONTCOPY)", 0,
			func(t *testing.T, as *AddressSpace, addr uint32) {
				mapWritten(rw)(t, as, addr)
				require.NoError(t, as.Madvise(addr, 2*pg, MadvDontfork))
			},
			func(t *testing.T, as *AddressSpace, addr uint32) { mmap(t, as, addr, 2, rw, MapFixed) },
			false, 0},
		{"pgoff not contiguous", 0,
			mapWritten(rw),
			func(t *testing.T, as *AddressSpace, addr uint32) {
				mmap(t, as, addr, 2, rx, MapFixed)
				v := vmaAt(t, as, addr)
				as.setRange(v, v.start, v.end, v.pgoff+7) // as mremap would leave it
			},
			false, 0},
	}
	const lo uint32 = 0x60000000
	for _, c := range cases {
		for _, firstLow := range []bool{true, false} {
			name := c.name + "/neighbour above"
			first, second := lo, lo+2*pg+c.gap
			if !firstLow {
				name = c.name + "/neighbour below"
				first, second = second, first
			}
			t.Run(name, func(t *testing.T) {
				m := newTestManager(t)
				as := newAS(t, m)
				c.first(t, as, first)
				c.second(t, as, second)
				write(t, as, second, 2)
				a, b := vmaAt(t, as, first).anonVMA, vmaAt(t, as, second).anonVMA
				require.NotNil(t, a)
				require.NotNil(t, b)
				if c.reuse {
					assert.Same(t, a, b, "neighbour's anon_vma reused")
					assert.EqualValues(t, 1, m.nrAnonVMAs.Load())
				} else {
					assert.NotSame(t, a, b, "a new anon_vma")
					assert.EqualValues(t, 2, m.nrAnonVMAs.Load())
				}
				require.NoError(t, m.Check())
				if c.mergeProt != 0 {
					require.NoError(t, as.Mprotect(second, 2*pg, c.mergeProt))
					assert.Len(t, as.VMAs(), 1)
					assert.Equal(t, byte(1), readByte(t, as, first))
					assert.Equal(t, byte(2), readByte(t, as, second))
					require.NoError(t, m.Check())
				}
			})
		}
	}
}

// mapWritten maps 2 pages at addr and writes 1 to the first.
func mapWritten(prot Prot) func(t *testing.T, as *AddressSpace, addr uint32) {
	return func(t *testing.T, as *AddressSpace, addr uint32) {
		mmap(t, as, addr, 2, prot, MapFixed)
		write(t, as, addr, 1)
	}
}

// The neighbour's anon_vma went through fork: its chain is not a
// singleton, so a new area next to it gets its own anon_vma (and the two
// never merge, which would hand the new area's pages to the fork tree).
func TestAnonVMANotReusedAfterFork(t *testing.T) {
	m := newTestManager(t)
	parent := newAS(t, m)
	a := mmap(t, parent, 0x60000000, 2, ProtRead|ProtWrite, MapFixed)
	write(t, parent, a, 1)
	child, err := parent.Fork()
	require.NoError(t, err)
	va := vmaAt(t, child, a)
	require.Len(t, va.chain, 2)
	b := mmap(t, child, a+2*pg, 2, ProtRead|ProtWrite|ProtExec, MapFixed)
	write(t, child, b, 2)
	vb := vmaAt(t, child, b)
	assert.NotSame(t, va.anonVMA, vb.anonVMA)
	assert.Len(t, vb.chain, 1)
	require.NoError(t, child.Mprotect(b, 2*pg, ProtRead|ProtWrite))
	assert.Len(t, child.VMAs(), 2, "different anon_vmas: no merge")
	// In the parent, whose chain is a singleton, the same sequence reuses.
	c := mmap(t, parent, a+2*pg, 2, ProtRead|ProtWrite|ProtExec, MapFixed)
	write(t, parent, c, 3)
	assert.Same(t, vmaAt(t, parent, a).anonVMA, vmaAt(t, parent, c).anonVMA)
	require.NoError(t, m.Check())
}

// mprotect of the middle of an area splits it in three; every piece keeps
// the anon_vma, and mprotect back merges them into one again.
func TestMprotectSplitAndRemerge(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := mmap(t, as, 0x60000000, 8, ProtRead|ProtWrite, MapFixed)
	for i := uint32(0); i < 8; i++ {
		write(t, as, a+i*pg, byte(i))
	}
	av := vmaAt(t, as, a).anonVMA
	require.NoError(t, as.Mprotect(a+3*pg, 2*pg, ProtRead))
	vmas := as.VMAs()
	require.Len(t, vmas, 3)
	assert.Equal(t, []uint32{a, a + 3*pg, a + 5*pg}, []uint32{vmas[0].Start, vmas[1].Start, vmas[2].Start})
	assert.Equal(t, []uint32{a >> 12, a>>12 + 3, a>>12 + 5}, []uint32{vmas[0].Pgoff, vmas[1].Pgoff, vmas[2].Pgoff})
	for _, addr := range []uint32{a, a + 3*pg, a + 5*pg} {
		assert.Same(t, av, vmaAt(t, as, addr).anonVMA)
	}
	assert.False(t, pteAt(as, a+3*pg).Has(pgtable.Write))
	assert.Equal(t, AccessError, faultReason(as.Write(a+4*pg, []byte{1})))
	require.NoError(t, m.Check())

	require.NoError(t, as.Mprotect(a+3*pg, 2*pg, ProtRead|ProtWrite))
	require.Len(t, as.VMAs(), 1)
	assert.EqualValues(t, 1, m.nrAnonVMAs.Load())
	assert.EqualValues(t, 1, m.nrAVCs.Load(), "the pieces' chains went with them")
	for i := uint32(0); i < 8; i++ {
		assert.Equal(t, byte(i), readByte(t, as, a+i*pg))
	}
	write(t, as, a+4*pg, 40) // write permission comes back through a fault
	require.NoError(t, m.Check())
}

// vma_adjust must copy the chain from the area that has one (2.6.34): when
// an area without an anon_vma absorbs one with pages, it imports that
// area's chain, or those pages would be unreachable by rmap.
func TestMergeImportsChain(t *testing.T) {
	for _, lowHasPages := range []bool{false, true} {
		m := newTestManager(t)
		as := newAS(t, m)
		lo := mmap(t, as, 0x60000000, 2, ProtRead, MapFixed)
		hi := mmap(t, as, lo+2*pg, 2, ProtRead|ProtExec, MapFixed)
		withPages := hi
		if lowHasPages {
			withPages = lo
		}
		require.NoError(t, as.Mprotect(withPages, 2*pg, ProtRead|ProtWrite))
		write(t, as, withPages+pg, 7)
		require.NoError(t, as.Mprotect(lo, 4*pg, ProtRead|ProtWrite))
		require.Len(t, as.VMAs(), 1)
		v := vmaAt(t, as, lo)
		require.NotNil(t, v.anonVMA)
		require.Len(t, v.chain, 1)
		pfn, p := pageAt(t, as, withPages+pg)
		found := 0
		p.Set(phys.PGLocked)
		require.NoError(t, m.RmapWalk(pfn, func(mp Mapping) {
			assert.Equal(t, withPages+pg, mp.Addr)
			found++
		}))
		p.Clear(phys.PGLocked)
		assert.Equal(t, 1, found, "rmap reaches the page through the merged area")
		require.NoError(t, m.Check())
	}
}

// The page→anon_vma link after fork trees: a page made before the forks
// keeps its first (oldest) anon_vma in every generation; pages made after
// a fork belong to the maker's own anon_vma; a sole user's write moves
// the page to the writer's anon_vma.
func TestPageAnonVMAAfterForkTree(t *testing.T) {
	m := newTestManager(t)
	p := newAS(t, m)
	a := mmap(t, p, 0x60000000, 2, ProtRead|ProtWrite, MapFixed)
	write(t, p, a, 1)
	oldest := vmaAt(t, p, a).anonVMA
	c, err := p.Fork()
	require.NoError(t, err)
	g, err := c.Fork()
	require.NoError(t, err)
	c2, err := p.Fork()
	require.NoError(t, err)

	_, pgOld := pageAt(t, g, a)
	assert.Same(t, oldest, anonVMAOf(pgOld))
	assert.Equal(t, int32(4), pgOld.MapCount())
	cv, gv := vmaAt(t, c, a), vmaAt(t, g, a)
	assert.Same(t, oldest.root, cv.anonVMA.root)
	assert.Same(t, oldest, cv.anonVMA.parent, "child's anon_vma is the parent's child")
	assert.Same(t, cv.anonVMA, gv.anonVMA.parent)
	// Chains are cloned in order: the grandchild's ends in its own.
	require.Len(t, gv.chain, 3)
	assert.Equal(t, []*anonVMA{oldest, cv.anonVMA, gv.anonVMA}, []*anonVMA{gv.chain[0].av, gv.chain[1].av, gv.chain[2].av})

	// New pages in the middle generation go to its own anon_vma.
	write(t, c, a+pg, 2)
	_, pgC := pageAt(t, c, a+pg)
	assert.Same(t, cv.anonVMA, anonVMAOf(pgC))
	// COW in the grandchild: its copy is its own, the shared page stays.
	write(t, g, a, 3)
	_, pgG := pageAt(t, g, a)
	assert.Same(t, gv.anonVMA, anonVMAOf(pgG))
	assert.Same(t, oldest, anonVMAOf(pgOld))

	// The oldest page, now mapped by p, c and c2: exits leave c2 alone
	// with it; its write reuses it and moves it to c2's anon_vma.
	require.NoError(t, p.Exit())
	require.NoError(t, c.Exit())
	pfn, _ := pageAt(t, c2, a)
	assert.Equal(t, int32(1), pgOld.MapCount())
	write(t, c2, a, 4)
	pfn2, _ := pageAt(t, c2, a)
	assert.Equal(t, pfn, pfn2)
	assert.Same(t, vmaAt(t, c2, a).anonVMA, anonVMAOf(pgOld))
	assert.Equal(t, byte(3), readByte(t, g, a))
	require.NoError(t, m.Check())
}

// An endless chain of fork and exit (fork, the child forks, the parent
// exits) must not grow the anon_vma hierarchy: Linux's degree rule reuses
// anon_vmas no VMA uses any more.
func TestEndlessForkChain(t *testing.T) {
	m := newTestManager(t)
	cur := newAS(t, m)
	a := mmap(t, cur, 0x60000000, 4, ProtRead|ProtWrite, MapFixed)
	b := mmap(t, cur, 0x61000000, 2, ProtRead|ProtWrite, MapFixed)
	write(t, cur, a, 0)
	write(t, cur, b, 0)
	maxAV := int64(0)
	for i := 0; i < 10000; i++ {
		child, err := cur.Fork()
		require.NoError(t, err)
		require.NoError(t, cur.Exit())
		cur = child
		// Each generation touches memory: a COW break and a new page.
		write(t, cur, a+uint32(i%4)*pg, byte(i))
		write(t, cur, b+uint32(i%2)*pg, byte(i))
		st := m.Stats()
		maxAV = max(maxAV, st.AnonVMAs)
		require.LessOrEqual(t, st.AnonVMAs, 2*int64(st.VMAs)+2, "generation %d: %d anon_vmas for %d VMAs", i, st.AnonVMAs, st.VMAs)
		if i%1000 == 0 {
			require.NoError(t, m.Check())
		}
	}
	t.Logf("endless fork chain: 10000 generations, 2 VMAs, at most %d anon_vmas, %d chains now", maxAV, m.Stats().AnonVMAChains)
	require.NoError(t, m.Check())
}
