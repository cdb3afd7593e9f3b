package mm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

const pg = pgtable.PageSize

func newTestManager(t testing.TB) *Manager {
	t.Helper()
	pool, err := phys.New(phys.Config{Mem: make([]byte, 8<<20), Base: 0x80000000})
	require.NoError(t, err)
	m, err := New(Config{Pool: pool, VerifyZeroed: true})
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, as := range m.AddressSpaces() {
			as.Exit()
		}
		require.NoError(t, m.Check())
		require.NoError(t, m.Close())
		require.Equal(t, uint64(pool.Frames()), pool.FreeFrames(), "frames leaked")
	})
	return m
}

func newAS(t testing.TB, m *Manager) *AddressSpace {
	t.Helper()
	as, err := m.NewAddressSpace()
	require.NoError(t, err)
	return as
}

func mmap(t testing.TB, as *AddressSpace, addr, pages uint32, prot Prot, flags MapFlags) uint32 {
	t.Helper()
	a, err := as.Mmap(addr, pages*pg, prot, flags)
	require.NoError(t, err)
	return a
}

func write(t testing.TB, as *AddressSpace, addr uint32, b ...byte) {
	t.Helper()
	require.NoError(t, as.Write(addr, b))
}

func readByte(t testing.TB, as *AddressSpace, addr uint32) byte {
	t.Helper()
	var b [1]byte
	require.NoError(t, as.Read(addr, b[:]))
	return b[0]
}

func vmaAt(t testing.TB, as *AddressSpace, addr uint32) *VMA {
	t.Helper()
	v := as.lookup(addr)
	require.NotNil(t, v, "no VMA at %#x", addr)
	return v
}

func pteAt(as *AddressSpace, addr uint32) pgtable.PTE {
	as.ptl.Lock()
	defer as.ptl.Unlock()
	return as.pt.PTE(addr)
}

func pageAt(t testing.TB, as *AddressSpace, addr uint32) (phys.PFN, *phys.Page) {
	t.Helper()
	pte := pteAt(as, addr)
	require.True(t, pte.Present() && !pte.Has(pgtable.Special), "no page at %#x: %v", addr, pte)
	pfn := phys.PFN(pte.PA() >> pgtable.PageShift)
	return pfn, as.mgr.pool.Page(pfn)
}

func faultReason(err error) FaultReason {
	var fe *FaultError
	if errors.As(err, &fe) {
		return fe.Reason
	}
	return 0
}

func TestMmapPlacement(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	// Top-down without a hint, merged with the area just above.
	a := mmap(t, as, 0, 4, ProtRead|ProtWrite, 0)
	assert.Equal(t, pgtable.WindowEnd-4*pg, a)
	b := mmap(t, as, 0, 2, ProtRead|ProtWrite, 0)
	assert.Equal(t, a-2*pg, b)
	assert.Len(t, as.VMAs(), 1, "adjacent compatible areas merge")
	// A free hint is taken; an occupied one is not.
	h := mmap(t, as, 0x50000000, 1, ProtRead, 0)
	assert.Equal(t, uint32(0x50000000), h)
	h2 := mmap(t, as, 0x50000000, 1, ProtRead, 0)
	assert.NotEqual(t, uint32(0x50000000), h2)
	// Fixed replaces; fixed-noreplace refuses.
	write(t, as, a, 7)
	mmap(t, as, a, 1, ProtRead|ProtWrite, MapFixed)
	assert.Zero(t, readByte(t, as, a), "MAP_FIXED replaced the old page")
	_, err := as.Mmap(a, pg, ProtRead, MapFixedNoReplace)
	assert.ErrorIs(t, err, ErrExist)
	// Bad arguments.
	for _, c := range []struct {
		addr, length uint32
		prot         Prot
		flags        MapFlags
	}{
		{0, 0, ProtRead, 0},
		{a + 1, pg, ProtRead, MapFixed},
		{0x3ffff000, 2 * pg, ProtRead, MapFixed},
		{0x7ffff000, 2 * pg, ProtRead, MapFixed},
	} {
		_, err := as.Mmap(c.addr, c.length, c.prot, c.flags)
		assert.ErrorIs(t, err, ErrInvalid, "%+v", c)
	}
	_, err = as.Mmap(0, pgtable.WindowSize+1, ProtRead, 0)
	assert.ErrorIs(t, err, ErrNoRoom)
	require.NoError(t, m.Check())
}

func TestMunmapSplits(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := mmap(t, as, 0x60000000, 8, ProtRead|ProtWrite, 0)
	for i := uint32(0); i < 8; i++ {
		write(t, as, a+i*pg, byte(i+1))
	}
	require.NoError(t, as.Munmap(a+2*pg, 3*pg))
	vmas := as.VMAs()
	require.Len(t, vmas, 2)
	assert.Equal(t, VMAInfo{Start: a, End: a + 2*pg, Flags: vmas[0].Flags, Pgoff: a >> 12}, vmas[0])
	assert.Equal(t, VMAInfo{Start: a + 5*pg, End: a + 8*pg, Flags: vmas[1].Flags, Pgoff: a>>12 + 5}, vmas[1])
	assert.Equal(t, byte(2), readByte(t, as, a+pg))
	assert.Equal(t, byte(6), readByte(t, as, a+5*pg))
	assert.Equal(t, MapError, faultReason(as.Read(a+3*pg, make([]byte, 1))))
	assert.Equal(t, int64(5), as.rss)
	require.NoError(t, as.Munmap(0x40000000, pg), "unmapping nothing is fine")
	assert.ErrorIs(t, as.Munmap(a+1, pg), ErrInvalid)
	assert.ErrorIs(t, as.Munmap(a, 0), ErrInvalid)
	require.NoError(t, m.Check())
}

func TestFaultKinds(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := mmap(t, as, 0x60000000, 4, ProtRead|ProtWrite, 0)

	// Read of an untouched page: the zero page, read-only, no new frame.
	free := m.pool.FreeFrames()
	assert.Zero(t, readByte(t, as, a))
	pte := pteAt(as, a)
	assert.True(t, pte.Has(pgtable.Special) && !pte.Has(pgtable.Write), "%v", pte)
	assert.Equal(t, m.zeroPA, pte.PA())
	assert.Equal(t, free-1, m.pool.FreeFrames(), "a read costs a table page, no page")

	// Write to the zero page: a new zeroed page, writable and dirty.
	write(t, as, a+5, 9)
	pte = pteAt(as, a)
	assert.True(t, pte.Has(pgtable.Write|pgtable.Dirty|pgtable.Young) && !pte.Has(pgtable.Special), "%v", pte)
	buf := make([]byte, pg)
	require.NoError(t, as.Read(a, buf))
	want := make([]byte, pg)
	want[5] = 9
	assert.Equal(t, want, buf)

	// Write to an empty PTE: straight to a new page.
	write(t, as, a+pg, 1)
	_, p := pageAt(t, as, a+pg)
	assert.Equal(t, int32(1), p.MapCount())
	assert.Same(t, vmaAt(t, as, a).anonVMA, anonVMAOf(p))
	assert.Equal(t, uint64(a>>12+1), p.Index)

	// Outside any VMA, and against its protection.
	for _, c := range []struct {
		addr   uint32
		acc    pgtable.Access
		reason FaultReason
	}{
		{a - pg, pgtable.AccessRead, MapError},
		{a + 4*pg, pgtable.AccessWrite, MapError},
		{0x30000000, pgtable.AccessRead, MapError},
		{a, pgtable.AccessExec, AccessError},
	} {
		err := as.HandleFault(c.addr, c.acc)
		var fe *FaultError
		require.ErrorAs(t, err, &fe, "%+v", c)
		assert.Equal(t, FaultError{Addr: c.addr, Access: c.acc, Reason: c.reason}, *fe)
	}
	require.NoError(t, as.Mprotect(a, pg, ProtRead))
	assert.Equal(t, AccessError, faultReason(as.Write(a, []byte{1})))
	assert.Equal(t, byte(9), readByte(t, as, a+5), "read-only still reads")
	require.NoError(t, as.Mprotect(a, pg, ProtNone))
	assert.Equal(t, AccessError, faultReason(as.Read(a, buf[:1])))
	assert.True(t, pteAt(as, a).Has(pgtable.NoAccess), "PROT_NONE keeps the page, without access")
	require.NoError(t, as.Mprotect(a, pg, ProtRead|ProtWrite|ProtExec))
	require.NoError(t, as.HandleFault(a, pgtable.AccessExec))
	assert.Equal(t, byte(9), readByte(t, as, a+5), "the page survived PROT_NONE")
	// A write-only mapping reads, as on ARM.
	w := mmap(t, as, 0x61000000, 1, ProtWrite, 0)
	write(t, as, w, 3)
	assert.Equal(t, byte(3), readByte(t, as, w))
	require.NoError(t, m.Check())
}

// Linux/ARM's young and dirty tracking: the hardware entry withholds
// access until the PTE is young and write until it is dirty.
func TestYoungDirtyFaults(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := mmap(t, as, 0x60000000, 1, ProtRead|ProtWrite, 0)
	write(t, as, a, 1)
	pfn, p := pageAt(t, as, a)

	p.Set(phys.PGLocked)
	n, err := m.PageReferenced(pfn)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	n, err = m.PageReferenced(pfn)
	require.NoError(t, err)
	assert.Equal(t, 0, n, "page_referenced cleared young")
	p.Clear(phys.PGLocked)
	_, fs := as.pt.Translate(a, pgtable.AccessRead, true)
	assert.Equal(t, pgtable.FSTranslationPage, fs, "an old page has no hardware entry")
	assert.Equal(t, byte(1), readByte(t, as, a))
	assert.True(t, pteAt(as, a).Has(pgtable.Young), "the read fault made it young")

	// A clean writable PTE: reads pass, the first write faults for dirty.
	as.ptl.Lock()
	as.pt.Set(a, as.pt.PTE(a).Without(pgtable.Dirty))
	as.ptl.Unlock()
	_, fs = as.pt.Translate(a, pgtable.AccessRead, true)
	assert.Zero(t, fs)
	_, fs = as.pt.Translate(a, pgtable.AccessWrite, true)
	assert.Equal(t, pgtable.FSPermissionPage, fs)
	write(t, as, a, 2)
	assert.True(t, pteAt(as, a).Has(pgtable.Dirty))
	_, fs = as.pt.Translate(a, pgtable.AccessWrite, true)
	assert.Zero(t, fs)
}

func TestForkCopyOnWrite(t *testing.T) {
	m := newTestManager(t)
	parent := newAS(t, m)
	a := mmap(t, parent, 0x60000000, 2, ProtRead|ProtWrite, 0)
	write(t, parent, a, 1)
	write(t, parent, a+pg, 2)
	child, err := parent.Fork()
	require.NoError(t, err)
	pfn, p := pageAt(t, parent, a)
	assert.Equal(t, int32(2), p.MapCount())
	assert.False(t, pteAt(parent, a).Has(pgtable.Write), "fork write-protects the parent")
	assert.False(t, pteAt(child, a).Has(pgtable.Write|pgtable.Young))
	assert.Equal(t, byte(1), readByte(t, child, a))

	// The child's write copies; the parent keeps its byte.
	write(t, child, a, 10)
	cpfn, _ := pageAt(t, child, a)
	assert.NotEqual(t, pfn, cpfn)
	assert.Equal(t, byte(1), readByte(t, parent, a))
	assert.Equal(t, int32(1), p.MapCount())
	// Now the parent is the only user: its write reuses the page in place.
	write(t, parent, a, 11)
	ppfn, _ := pageAt(t, parent, a)
	assert.Equal(t, pfn, ppfn, "sole user reuses")
	assert.Equal(t, byte(10), readByte(t, child, a))

	// After the child exits, the second page is the parent's alone again.
	pfn2, p2 := pageAt(t, parent, a+pg)
	require.NoError(t, child.Exit())
	assert.Equal(t, int32(1), p2.MapCount())
	write(t, parent, a+pg, 12)
	got, _ := pageAt(t, parent, a+pg)
	assert.Equal(t, pfn2, got)
	assert.ErrorIs(t, child.Exit(), ErrExited)
	require.NoError(t, m.Check())
}

// mmap ignores protection bits it does not know, as Linux's does (it never
// checks prot); mprotect accepts PROT_SEM and refuses any other unknown
// bit (arch_validate_prot). Both checked against Linux 6.x.
func TestUnknownProtBits(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	for _, prot := range []Prot{ProtSem, ProtRead | ProtSem, ProtRead | ProtWrite | 0x40} {
		a, err := as.Mmap(0, pg, prot, 0)
		require.NoError(t, err, "mmap prot %#x", prot)
		assert.Equal(t, VMFlags(prot&(ProtRead|ProtWrite|ProtExec)), vmaAt(t, as, a).flags&vmAccessFlags, "prot %#x", prot)
		require.NoError(t, as.Mprotect(a, pg, ProtRead|ProtSem), "mprotect PROT_READ|PROT_SEM")
		assert.Equal(t, VMRead, vmaAt(t, as, a).flags&vmAccessFlags)
		assert.ErrorIs(t, as.Mprotect(a, pg, ProtRead|0x10), ErrInvalid, "mprotect with an unknown bit")
		require.NoError(t, as.Munmap(a, pg))
	}
	require.NoError(t, m.Check())
}

// Since Linux 6.7, mprotect that takes write away from an anonymous area
// that was never faulted (no anon_vma) drops VM_ACCOUNT too, so it can
// merge with a read-only neighbour; once the area has pages, the charge
// and the boundary stay.
func TestMprotectUnaccountsUnfaultedArea(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := mmap(t, as, 0x60000000, 1, ProtRead|ProtWrite, MapFixed)
	mmap(t, as, a+pg, 1, ProtRead, MapFixed)
	require.Len(t, as.VMAs(), 2)
	require.NotZero(t, vmaAt(t, as, a).flags&VMAccount)
	require.NoError(t, as.Mprotect(a, pg, ProtRead))
	vmas := as.VMAs()
	require.Len(t, vmas, 1, "the unaccounted area merges with its read-only neighbour")
	assert.Equal(t, VMAInfo{Start: a, End: a + 2*pg, Flags: VMRead | VMMayRead | VMMayWrite | VMMayExec, Pgoff: a >> pgtable.PageShift}, vmas[0])

	// A read maps the zero page and makes no anon_vma: still unfaulted.
	b := mmap(t, as, 0x60100000, 1, ProtRead|ProtWrite, MapFixed)
	mmap(t, as, b+pg, 1, ProtRead, MapFixed)
	readByte(t, as, b)
	require.NoError(t, as.Mprotect(b, pg, ProtRead))
	assert.Nil(t, vmaAt(t, as, b).anonVMA)
	assert.Equal(t, b+2*pg, vmaAt(t, as, b).end)

	// A written area keeps its charge, and so its own VMA.
	c := mmap(t, as, 0x60200000, 1, ProtRead|ProtWrite, MapFixed)
	mmap(t, as, c+pg, 1, ProtRead, MapFixed)
	write(t, as, c, 1)
	require.NoError(t, as.Mprotect(c, pg, ProtRead))
	assert.NotZero(t, vmaAt(t, as, c).flags&VMAccount)
	assert.Equal(t, c+pg, vmaAt(t, as, c).end)
	require.NoError(t, m.Check())
}

// MADV_NORMAL changes nothing here, but like every advice it walks the
// range and reports a hole with ENOMEM (Linux's madvise_walk_vmas).
func TestMadvNormalReportsHoles(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := mmap(t, as, 0x60000000, 2, ProtRead|ProtWrite, MapFixed)
	require.NoError(t, as.Madvise(a, 2*pg, MadvNormal))
	assert.ErrorIs(t, as.Madvise(a, 3*pg, MadvNormal), ErrNotMapped, "a hole after the area")
	assert.ErrorIs(t, as.Madvise(a+4*pg, pg, MadvNormal), ErrNotMapped, "nothing mapped")
	require.NoError(t, as.Madvise(a+4*pg, 0, MadvNormal), "an empty range")
	assert.ErrorIs(t, as.Madvise(a+1, pg, MadvNormal), ErrInvalid)
	require.Len(t, as.VMAs(), 1)
	require.NoError(t, m.Check())
}

func TestDontneedAndDontfork(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := mmap(t, as, 0x60000000, 4, ProtRead|ProtWrite, 0)
	for i := uint32(0); i < 4; i++ {
		write(t, as, a+i*pg, 5)
	}
	require.NoError(t, as.Madvise(a+pg, 2*pg, MadvDontneed))
	assert.Equal(t, []byte{5, 0, 0, 5}, []byte{readByte(t, as, a), readByte(t, as, a+pg), readByte(t, as, a+2*pg), readByte(t, as, a+3*pg)})
	assert.ErrorIs(t, as.Madvise(a+3*pg, 2*pg, MadvDontneed), ErrNotMapped, "a hole is reported")
	assert.Zero(t, readByte(t, as, a+3*pg), "but the mapped part was advised")
	assert.ErrorIs(t, as.Madvise(a, pg, Advice(99)), ErrInvalid)

	require.NoError(t, as.Madvise(a, pg, MadvDontfork))
	require.Len(t, as.VMAs(), 2)
	child, err := as.Fork()
	require.NoError(t, err)
	assert.Equal(t, MapError, faultReason(child.Read(a, make([]byte, 1))))
	require.NoError(t, as.Madvise(a, pg, MadvDofork))
	assert.Len(t, as.VMAs(), 1, "DOFORK restores the flags and the areas merge")
	require.NoError(t, m.Check())
}

func TestExitFreesEverything(t *testing.T) {
	m := newTestManager(t)
	free := m.pool.FreeFrames()
	as := newAS(t, m)
	for i := uint32(0); i < 16; i++ {
		a := mmap(t, as, 0x40000000+i*0x200000, 3, ProtRead|ProtWrite, 0)
		write(t, as, a, 1)
		readByte(t, as, a+pg)
	}
	child, err := as.Fork()
	require.NoError(t, err)
	write(t, child, 0x40000000, 2)
	assert.Positive(t, m.Stats().PageTables)
	require.NoError(t, as.Exit())
	require.NoError(t, child.Exit())
	st := m.Stats()
	assert.Zero(t, st.AnonPages)
	assert.Zero(t, st.AnonVMAs)
	assert.Zero(t, st.AnonVMAChains)
	assert.Equal(t, free, m.pool.FreeFrames())
}

func TestMeminfoLines(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	a := mmap(t, as, 0, 3, ProtRead|ProtWrite, 0)
	write(t, as, a, 1)
	write(t, as, a+pg, 1)
	var got []string
	for _, l := range m.Meminfo() {
		if l.Name == "AnonPages" || l.Name == "PageTables" {
			got = append(got, l.Name)
			if l.Name == "AnonPages" {
				assert.Equal(t, uint64(8), l.KB)
			} else {
				assert.Equal(t, uint64(12), l.KB, "L1 window and its shadow, one table page")
			}
		}
	}
	assert.Equal(t, []string{"AnonPages", "PageTables"}, got)
	var b bytes.Buffer
	require.NoError(t, phys.WriteMeminfo(&b, m.Meminfo()))
	assert.Contains(t, b.String(), "\nAnonPages:             8 kB\nMapped:                0 kB\nShmem:                 0 kB\nPageTables:           12 kB\n")
}
