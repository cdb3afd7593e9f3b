package mmu

import (
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/mm"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
	"yolk/mm/vmcheck"
)

func newManager(t *testing.T, tlb pgtable.TLB, poolKiB int) (*mm.Manager, *phys.Pool) {
	t.Helper()
	pool, err := phys.New(phys.Config{Mem: make([]byte, poolKiB<<10), Base: 0x80000000})
	require.NoError(t, err)
	mgr, err := mm.New(mm.Config{Pool: pool, VerifyZeroed: true, TLB: tlb})
	require.NoError(t, err)
	dev, err := blk.NewRAM(blk.RAMConfig{Name: "ram0", Size: 16 << 20})
	require.NoError(t, err)
	require.NoError(t, mgr.Swapon(dev, mm.SwapOptions{}))
	t.Cleanup(func() { dev.Close() })
	return mgr, pool
}

// TestTLBModel runs vmcheck's random operations with the live MMU's code
// driving the recording model: every descriptor change of the space in
// the window must be mirrored, cleaned and invalidated before the change
// is over, and none may happen unreported. The yolk_drop_tlbi build tag
// drops one invalidation; this test fails then, as the mmu scenario does
// under QEMU (tests/mmu_test.go).
func TestTLBModel(t *testing.T) {
	steps := 4000
	if testing.Short() {
		steps = 1500
	}
	for seed := int64(1); seed <= 3; seed++ {
		m := newModel()
		cpu := New(m)
		t.Cleanup(cpu.Close)
		rec := &recorder{cpu: cpu, m: m}
		mgr, pool := newManager(t, rec, 8<<10)
		st, err := vmcheck.Run(mgr, rand.New(rand.NewSource(seed)), vmcheck.Config{
			Steps: steps, CheckEvery: 10, ViewEvery: 4, Memory: modelMemory{rec}, Fill: 8, OwnPool: true})
		require.NoError(t, err, "seed %d", seed)
		require.NoError(t, rec.err(), "seed %d: the TLB model", seed)
		require.NoError(t, mgr.Close())
		require.Equal(t, uint64(pool.Frames()), pool.FreeFrames(), "frames leaked")
		s := cpu.Stats()
		t.Logf("seed %d: %d steps, %d switches, %d TLBIMVA, %d TLBIASID outside switches, %d lines cleaned; pswpout %d, thp_split_pmd %d",
			seed, st.Steps, s.Switches, s.FlushPage, s.FlushASID, m.cleans, st.Events["pswpout"], st.Events["thp_split_pmd"])
		// The run must have exercised what it checks.
		require.Positive(t, s.Switches)
		require.Positive(t, s.FlushPage)
		require.Positive(t, m.cleans)
		require.Positive(t, st.Ops["fork"])
		require.Positive(t, st.Events["pswpout"])
	}
}

// TestTLBModelCatchesAMissingFlush shows the model failing when the CPU
// forgets an invalidation: a wrapper that swallows one TLBIMVA.
func TestTLBModelCatchesAMissingFlush(t *testing.T) {
	m := newModel()
	lossy := &forgetful{model: m}
	cpu := New(lossy)
	t.Cleanup(cpu.Close)
	rec := &recorder{cpu: cpu, m: m}
	mgr, _ := newManager(t, rec, 8<<10)
	as, err := mgr.NewAddressSpace()
	require.NoError(t, err)
	addr, err := as.Mmap(0, 4*pgtable.PageSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	require.NoError(t, rec.switchTo(as))
	require.NoError(t, as.Write(addr, []byte("dirty")))
	require.NoError(t, rec.err())
	lossy.drop = true
	require.NoError(t, as.Mprotect(addr, 4*pgtable.PageSize, mm.ProtRead)) // write-protects the page
	require.ErrorContains(t, rec.err(), "left")
	require.NoError(t, as.Exit())
}

type forgetful struct {
	*model
	drop bool
}

func (f *forgetful) InvalidatePage(va uint32) {
	if f.drop {
		f.drop = false
		return
	}
	f.model.InvalidatePage(va)
}

// simulate runs an access of n bytes at addr as a task, the way the core
// would with the model: translate each page with the software MMU's walk
// of the hardware descriptors, and on a fault take an "abort" with the
// status it reports and act on the CPU's decision as the exception
// handler does (the yield is a Gosched, the kill a Goexit).
func simulate(c *CPU, as *mm.AddressSpace, addr uint32, n int, acc pgtable.Access) error {
	var stuck error
	err := c.Run(as, func() {
		for va := addr; va < addr+uint32(n); va = (va | (pgtable.PageSize - 1)) + 1 {
			for try := 0; ; try++ {
				_, fs := as.Translate(va, acc)
				if fs == 0 {
					break
				}
				if try == 10000 {
					stuck = fmt.Errorf("%v at %#08x still faults (%v) after %d aborts", acc, va, fs, try)
					runtime.Goexit()
				}
				a := Abort{DFAR: va, DFSR: uint32(fs)&0xf | uint32(fs)>>4<<10}
				if acc == pgtable.AccessWrite {
					a.DFSR |= dfsrWnR
				}
				switch c.Abort(a) {
				case Retry:
				case Yield:
					runtime.Gosched()
				case Kill:
					runtime.Goexit()
				case NotOurs:
					panic("abort not ours: " + a.String())
				}
			}
		}
	})
	if stuck != nil {
		return stuck
	}
	return err
}

// TestAbortPath drives the abort path's decisions with simulated aborts:
// young and dirty emulation fixed at once, faults needing memory served
// by the fault goroutine, refused accesses ending the task with the fault
// handler's error, and the counts adding up as the mmu scenario checks
// them on the image.
func TestAbortPath(t *testing.T) {
	cpu := New(newModel())
	t.Cleanup(cpu.Close)
	mgr, _ := newManager(t, cpu, 8<<10)
	as, err := mgr.NewAddressSpace()
	require.NoError(t, err)
	const n = 8 * pgtable.PageSize
	// A page more, unmapped again: a hole past the end inside the window.
	addr, err := as.Mmap(0, n+pgtable.PageSize, mm.ProtRead|mm.ProtWrite, 0)
	require.NoError(t, err)
	require.NoError(t, as.Munmap(addr+n, pgtable.PageSize))

	// First touch: translation faults needing pages, served in context.
	require.NoError(t, simulate(cpu, as, addr, n, pgtable.AccessWrite))
	s := cpu.Stats()
	// The first page finds no L2 table: a section translation fault.
	// (Aborts count the ones taken again while the fault goroutine had
	// the fault, too: Waits.)
	require.Equal(t, uint32(1), s.Aborts[TranslationSection]-s.Waits[TranslationSection])
	require.Equal(t, uint32(8), s.Yields)
	require.Equal(t, uint32(7), s.Aborts[TranslationPage]-s.Waits[TranslationPage])
	require.Equal(t, uint32(8), s.Served)
	require.Zero(t, s.Retries)

	// MADV_FREE makes the entries old and clean (present, writable): a
	// store is a translation fault (not young, so not in the hardware
	// table) that FaultAtomic fixes on the spot, young and dirty at once.
	require.NoError(t, as.Madvise(addr, n, mm.MadvFree))
	require.NoError(t, simulate(cpu, as, addr, n, pgtable.AccessWrite))
	s = cpu.Stats()
	require.Equal(t, uint32(7+8), s.Aborts[TranslationPage]-s.Waits[TranslationPage])
	require.Equal(t, uint32(8), s.Retries)
	require.Equal(t, uint32(8), s.Served, "nothing more went to the fault goroutine")

	// Reads of the now young pages take no fault.
	require.NoError(t, simulate(cpu, as, addr, n, pgtable.AccessRead))
	s = cpu.Stats()
	require.Equal(t, uint32(7+8), s.Aborts[TranslationPage]-s.Waits[TranslationPage])

	// A store to a read-only mapping and a load past the end: the task
	// ends with the handler's SEGV at the first byte refused.
	require.NoError(t, as.Mprotect(addr+4*pgtable.PageSize, 4*pgtable.PageSize, mm.ProtRead))
	err = simulate(cpu, as, addr, n, pgtable.AccessWrite)
	var fe *mm.FaultError
	require.True(t, errors.As(err, &fe), "got %v", err)
	require.Equal(t, mm.AccessError, fe.Reason)
	require.Equal(t, addr+4*pgtable.PageSize, fe.Addr)
	err = simulate(cpu, as, addr+n-pgtable.PageSize, 2*pgtable.PageSize, pgtable.AccessRead)
	require.True(t, errors.As(err, &fe), "got %v", err)
	require.Equal(t, mm.MapError, fe.Reason)
	require.Equal(t, addr+n, fe.Addr)

	s = cpu.Stats()
	require.Equal(t, uint32(2), s.Failed)
	h := mgr.AbortStats()
	require.Zero(t, h.Disagreed)
	require.Equal(t, s.Retries, h.Fixed)
	require.Equal(t, s.Served, h.Served)
	require.Equal(t, s.Failed, h.Failed)
	var kills uint32
	var total, waits uint32
	for k := range NumKinds {
		require.Equal(t, s.Aborts[k], h.ByStatus[k.Status()], "%v: every abort reaches the handler", k)
		total += s.Aborts[k]
		kills += s.Kills[k]
		waits += s.Waits[k]
	}
	require.Equal(t, s.Failed, kills)
	require.Equal(t, total, s.Retries+s.Yields+waits+kills)
	require.NoError(t, as.Exit())
	require.NoError(t, mgr.Close())
}

func TestAbortDecode(t *testing.T) {
	for _, tc := range []struct {
		dfsr uint32
		fs   pgtable.FaultStatus
		acc  pgtable.Access
		kind Kind
		page bool
	}{
		{0x005, pgtable.FSTranslationSection, pgtable.AccessRead, TranslationSection, true},
		{0x807, pgtable.FSTranslationPage, pgtable.AccessWrite, TranslationPage, true},
		{0x80d, pgtable.FSPermissionSection, pgtable.AccessWrite, PermissionSection, true},
		{0x00f, pgtable.FSPermissionPage, pgtable.AccessRead, PermissionPage, true},
		{0x001, 0b00001, pgtable.AccessRead, 0, false},  // alignment
		{0x406, 0b10110, pgtable.AccessRead, 0, false},  // async external abort (FS[4] set)
		{0x1008, 0b01000, pgtable.AccessRead, 0, false}, // synchronous external abort, ExT
		{0x809, pgtable.FSDomainSection, pgtable.AccessWrite, 0, false},
	} {
		a := Abort{DFSR: tc.dfsr, DFAR: 0x40001000}
		require.Equal(t, tc.fs, a.Status(), "%#x", tc.dfsr)
		require.Equal(t, tc.acc, a.Access(), "%#x", tc.dfsr)
		require.Equal(t, tc.page, a.PageFault(), "%#x", tc.dfsr)
		k, ok := KindOf(a.Status())
		require.Equal(t, tc.page, ok)
		if ok {
			require.Equal(t, tc.kind, k)
			require.Equal(t, tc.fs, k.Status())
		}
	}
}
