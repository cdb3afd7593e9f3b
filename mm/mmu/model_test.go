package mmu

import (
	"fmt"
	"sync"

	"yolk/mm"
	"yolk/mm/pgtable"
)

// The recording TLB model: the host's stand-in for the core, which the
// live MMU's own code (CPU) drives exactly as it drives the real one.
//
// model is the Hardware: a live first-level table, a data cache whose
// lines a descriptor write leaves dirty until cleaned, and a TLB. The TLB
// is the worst case the architecture allows: it may hold any translation
// that was valid at any moment, so the model puts the old descriptor in it
// just before every change of the installed table (recorder), and only
// TLBIMVA and TLBIASID take entries out. After each change the recorder
// asks: does the TLB still hold something other than the new descriptor
// for that address? Is the new descriptor's line still dirty? Does the
// live L1 entry say what the table says? Any yes is a change left
// uninvalidated (or uncleaned, or unmirrored), which on the core would be
// a stale translation.
//
// scan, run between steps, catches the rest: a descriptor changed without
// telling the TLB at all. The recorder remembers every descriptor it was
// told of, and scan walks the installed table for any that differ.
type model struct {
	mu    sync.Mutex
	live  [4096]pgtable.L1
	tlb   map[uint32]uint32 // page address, section address|2, or section address|1 (the walk cache) → descriptor
	dirty map[uint32]bool   // cache lines written and not cleaned
	known map[uint32]uint32 // recorder: the last descriptor reported per page (|1: L1)
	errs  []string

	cleans, pageFlushes, asidFlushes int
}

func newModel() *model {
	m := &model{tlb: map[uint32]uint32{}, dirty: map[uint32]bool{}, known: map[uint32]uint32{}}
	for i := range m.live {
		m.live[i] = pgtable.L1(uint32(i)<<20 | 0b10) // a flat section map, as TamaGo's
	}
	return m
}

const lineSize = 64 // Cortex-A7's data cache line

func (m *model) ReadL1(va uint32) pgtable.L1 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live[va>>20]
}

func (m *model) WriteL1(va uint32, d pgtable.L1) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.live[va>>20] = d
}

func (m *model) Clean(pa uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cleans++
	delete(m.dirty, pa&^(lineSize-1))
}

func (m *model) InvalidatePage(va uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pageFlushes++
	delete(m.tlb, va&^(pgtable.PageSize-1))
	delete(m.tlb, va&^(pgtable.SectionSize-1)|2)
	delete(m.tlb, va&^(pgtable.SectionSize-1)|1)
}

func (m *model) InvalidateASID() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asidFlushes++
	clear(m.tlb)
}

func (m *model) Barrier() {}

func (m *model) fail(format string, args ...any) {
	if len(m.errs) < 20 {
		m.errs = append(m.errs, fmt.Sprintf(format, args...))
	}
}

// recorder is the TLB the Manager reports to: it fills the model's TLB
// with what the change replaces, passes the change to the CPU, and checks
// what the CPU did about it.
type recorder struct {
	cpu *CPU
	m   *model
}

func (r *recorder) L1(t *pgtable.Table, va uint32, old, new pgtable.L1) {
	m := r.m
	installed := r.cpu.Installed(t)
	m.mu.Lock()
	if installed {
		switch old.Kind() {
		case pgtable.KindSection:
			m.tlb[va|2] = uint32(old)
		case pgtable.KindTable:
			m.tlb[va|1] = uint32(old) // the walk cache's pointer to the L2 table
		}
		m.known[va|1] = uint32(new)
	}
	m.mu.Unlock()
	r.cpu.L1(t, va, old, new)
	if !installed {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if got := m.live[va>>20]; got != new {
		m.fail("L1 change at %#08x to %v: the live table has %v", va, new, got)
	}
	for _, k := range []uint32{va | 2, va | 1} {
		if d, ok := m.tlb[k]; ok && d != uint32(new) {
			m.fail("L1 change at %#08x from %v to %v left %#x in the TLB", va, old, new, d)
		}
	}
}

func (r *recorder) L2(t *pgtable.Table, va, pa uint32, old, new pgtable.L2) {
	m := r.m
	installed := r.cpu.Installed(t)
	m.mu.Lock()
	m.dirty[pa&^(lineSize-1)] = true
	if installed {
		if old.Kind() != pgtable.KindFault {
			m.tlb[va] = uint32(old)
		}
		m.known[va] = uint32(new)
	}
	m.mu.Unlock()
	r.cpu.L2(t, va, pa, old, new)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dirty[pa&^(lineSize-1)] {
		m.fail("L2 change at %#08x (descriptor at %#08x) left its cache line dirty", va, pa)
	}
	if d, ok := m.tlb[va]; installed && ok && d != uint32(new) {
		m.fail("L2 change at %#08x from %v to %v left %v in the TLB", va, old, new, pgtable.L2(d))
	}
}

func (r *recorder) Destroyed(t *pgtable.Table) {
	r.cpu.Destroyed(t)
	if r.cpu.Installed(t) {
		r.m.mu.Lock()
		r.m.fail("a destroyed table is still in the window")
		r.m.mu.Unlock()
	}
}

// switchTo switches as in and starts remembering its descriptors as they
// stand: the live window must be its L1 slice, and the TLB empty.
func (r *recorder) switchTo(as *mm.AddressSpace) error {
	before := r.cpu.Stats().Switches
	if err := r.cpu.Switch(as); err != nil {
		return err
	}
	switched := r.cpu.Stats().Switches != before
	return as.WithTable(func(t *pgtable.Table) {
		m := r.m
		m.mu.Lock()
		defer m.mu.Unlock()
		clear(m.known)
		var w [pgtable.WindowSections]pgtable.L1
		t.L1Window(&w)
		for i, d := range w {
			va := sectionVA(uint32(i))
			if m.live[va>>20] != d {
				m.fail("after the switch the live L1 entry for %#08x is %v, the table's %v", va, m.live[va>>20], d)
			}
			if d.Kind() == pgtable.KindTable {
				for p := va; p < va+pgtable.SectionSize; p += pgtable.PageSize {
					m.known[p] = uint32(t.HardwarePTE(p))
				}
			}
			m.known[va|1] = uint32(d)
		}
		for k := range m.tlb {
			if switched && pgtable.InWindow(k&^3) {
				m.fail("after the switch the TLB still holds %#08x", k)
			}
		}
	})
}

// scan walks the installed space's hardware descriptors for any the
// recorder was not told of.
func (r *recorder) scan(as *mm.AddressSpace) error {
	return as.WithTable(func(t *pgtable.Table) {
		if !r.cpu.Installed(t) {
			return
		}
		m := r.m
		m.mu.Lock()
		defer m.mu.Unlock()
		var w [pgtable.WindowSections]pgtable.L1
		t.L1Window(&w)
		for i, d := range w {
			va := sectionVA(uint32(i))
			if k, ok := m.known[va|1]; ok && k != uint32(d) {
				m.fail("the L1 entry for %#08x became %v unreported", va, d)
			}
			if m.live[va>>20] != d {
				m.fail("the live L1 entry for %#08x is %v, the table's %v", va, m.live[va>>20], d)
			}
			if d.Kind() != pgtable.KindTable {
				continue
			}
			for p := va; p < va+pgtable.SectionSize; p += pgtable.PageSize {
				if k, ok := m.known[p]; ok && k != uint32(t.HardwarePTE(p)) {
					m.fail("the L2 entry for %#08x became %v unreported", p, t.HardwarePTE(p))
				}
			}
		}
	})
}

func (r *recorder) err() error {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	if len(r.m.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d problems (at most 20 kept), the first: %s", len(r.m.errs), r.m.errs[0])
}

// modelMemory is vmcheck's Memory for the model: each access switches its
// space in, as a task would be, checks the table against what the
// recorder heard, and moves the bytes through the software MMU.
type modelMemory struct{ r *recorder }

func (mm modelMemory) access(as *mm.AddressSpace, addr uint32, n int, fn func() error) error {
	if err := mm.r.switchTo(as); err != nil {
		return err
	}
	if err := mm.r.scan(as); err != nil {
		return err
	}
	err := fn()
	if werr := mm.r.walked(as, addr, n); err == nil {
		err = werr
	}
	return err
}

func (mm modelMemory) Read(as *mm.AddressSpace, addr uint32, buf []byte) error {
	return mm.access(as, addr, len(buf), func() error { return as.Read(addr, buf) })
}

func (mm modelMemory) Write(as *mm.AddressSpace, addr uint32, data []byte) error {
	return mm.access(as, addr, len(data), func() error { return as.Write(addr, data) })
}

// walked fills the TLB with the translations an access of [addr, addr+n)
// walked, as the core's TLB would: what the next switch must flush.
func (r *recorder) walked(as *mm.AddressSpace, addr uint32, n int) error {
	return as.WithTable(func(t *pgtable.Table) {
		if !r.cpu.Installed(t) {
			return
		}
		m := r.m
		m.mu.Lock()
		defer m.mu.Unlock()
		for va := addr &^ (pgtable.PageSize - 1); uint64(va) < uint64(addr)+uint64(n) && pgtable.InWindow(va); va += pgtable.PageSize {
			switch d := t.L1(va); d.Kind() {
			case pgtable.KindSection:
				m.tlb[va&^(pgtable.SectionSize-1)|2] = uint32(d)
			case pgtable.KindTable:
				m.tlb[va&^(pgtable.SectionSize-1)|1] = uint32(d)
				if l2 := t.HardwarePTE(va); l2.Kind() != pgtable.KindFault {
					m.tlb[va] = uint32(l2)
				}
			}
		}
	})
}
