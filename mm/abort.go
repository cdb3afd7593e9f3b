package mm

import (
	"sync/atomic"

	"yolk/mm/pgtable"
)

// Faults the live MMU takes (Linux's arch/arm/mm/fault.c).
//
// On the image a task's loads and stores go through the real MMU, and a
// fault is a data abort: package mm/mmu decodes DFSR and DFAR and brings
// the fault here, to the handler the software MMU uses, in two steps.
//
// FaultAtomic runs first, on g0 in the exception, where nothing may
// block: it takes the mmap and page-table locks only if they are free,
// allocates nothing and resolves only what needs no page, the young and
// dirty emulation (a present entry whose software bits grant the access).
// Everything else, and everything it cannot lock, it leaves to
// HandleAbort, which mm/mmu runs in goroutine context; that is
// HandleFault, which may allocate, reclaim and wait for swap I/O.
//
// FaultAtomic also counts every abort by the status DFSR gave it (the
// handler's own counts, which the abort path's must equal), and judges the
// software MMU against the hardware's verdict: the walk the software MMU
// makes of the same tables must report the same fault status.

// AtomicResult is what FaultAtomic made of a fault.
type AtomicResult uint8

const (
	// FaultFixed: the entry now grants the access; retry it.
	FaultFixed AtomicResult = iota
	// FaultNeedsContext: HandleAbort must serve it in goroutine context.
	FaultNeedsContext
)

// abortStats are the handler's counts of faults the live MMU brought it.
type abortStats struct {
	byStatus [32]atomic.Uint32 // every fault, by fault status code
	fixed    atomic.Uint32     // resolved by FaultAtomic
	served   atomic.Uint32     // resolved by HandleAbort
	failed   atomic.Uint32     // HandleAbort's SEGV and SIGBUS
	// walked counts the faults whose status FaultAtomic compared with the
	// software MMU's walk (the locks were free); disagreed those where
	// the walk found something else.
	walked, disagreed atomic.Uint32
}

// AbortStats are the fault handler's counts of live-MMU faults.
type AbortStats struct {
	// ByStatus counts every fault by its fault status (DFSR FS).
	ByStatus map[pgtable.FaultStatus]uint32
	// Fixed were resolved on g0, Served in goroutine context, Failed
	// ended their task (SEGV, SIGBUS).
	Fixed, Served, Failed uint32
	// Walked faults were judged by the software MMU too; Disagreed is
	// how many of those it judged differently from the hardware.
	Walked, Disagreed uint32
}

// AbortStats returns the handler's counts of live-MMU faults.
func (m *Manager) AbortStats() AbortStats {
	s := AbortStats{ByStatus: map[pgtable.FaultStatus]uint32{},
		Fixed: m.aborts.fixed.Load(), Served: m.aborts.served.Load(), Failed: m.aborts.failed.Load(),
		Walked: m.aborts.walked.Load(), Disagreed: m.aborts.disagreed.Load()}
	for fs := range m.aborts.byStatus {
		if n := m.aborts.byStatus[fs].Load(); n != 0 {
			s.ByStatus[pgtable.FaultStatus(fs)] = n
		}
	}
	return s
}

// FaultAtomic resolves, if it can without blocking or allocating, a fault
// the MMU reported at addr for acc with status fs. It is safe on g0 with
// interrupts masked: it only tries locks, and the table's TLB hooks
// neither block nor allocate.
func (as *AddressSpace) FaultAtomic(addr uint32, acc pgtable.Access, fs pgtable.FaultStatus) AtomicResult {
	m := as.mgr
	m.aborts.byStatus[fs&31].Add(1)
	if !as.mmapLock.TryRLock() {
		return FaultNeedsContext
	}
	res := as.faultAtomicLocked(addr, acc, fs)
	as.mmapLock.RUnlock()
	if res == FaultFixed {
		m.aborts.fixed.Add(1)
	}
	return res
}

func (as *AddressSpace) faultAtomicLocked(addr uint32, acc pgtable.Access, fs pgtable.FaultStatus) AtomicResult {
	v := as.lookup(addr)
	if v == nil || !v.allows(acc) || v.file != nil {
		// A SEGV, or a page cache page whose dirtying takes locks of
		// its region: HandleAbort builds the error or does the work.
		return FaultNeedsContext
	}
	if !as.ptl.TryLock() {
		return FaultNeedsContext
	}
	defer as.ptl.Unlock()
	if as.exited {
		return FaultNeedsContext
	}
	as.mgr.aborts.walked.Add(1)
	if _, sw := as.pt.Translate(addr, acc, true); sw != fs {
		as.mgr.aborts.disagreed.Add(1)
	}
	va := addr &^ (pgtable.PageSize - 1)
	if sec := as.pt.Section(va); sec != 0 {
		want, ok := youngDirty(sec, acc)
		if !ok {
			return FaultNeedsContext
		}
		if want != sec {
			as.setSection(va&^hugeMask, want)
		}
	} else {
		want, ok := youngDirty(as.pt.PTE(va), acc)
		if !ok {
			return FaultNeedsContext
		}
		if want != as.pt.PTE(va) {
			as.pt.Set(va, want)
		}
	}
	as.minflt++
	return FaultFixed
}

// youngDirty is the emulation's part of handle_pte_fault: for a present
// entry whose software bits already allow acc, the entry with Young (and
// for a write Dirty) set. ok is false for anything needing more.
func youngDirty(p pgtable.PTE, acc pgtable.Access) (pgtable.PTE, bool) {
	if !p.Present() || p.Has(pgtable.NoAccess) || acc == pgtable.AccessWrite && !p.Has(pgtable.Write) {
		return p, false
	}
	p |= pgtable.Young
	if acc == pgtable.AccessWrite {
		p |= pgtable.Dirty
	}
	return p, true
}

// HandleAbort serves a fault FaultAtomic left to goroutine context: it is
// HandleFault, counted among the live MMU's faults.
func (as *AddressSpace) HandleAbort(addr uint32, acc pgtable.Access) error {
	err := as.HandleFault(addr, acc)
	if err != nil {
		as.mgr.aborts.failed.Add(1)
	} else {
		as.mgr.aborts.served.Add(1)
	}
	return err
}

// WithTable runs fn with the space's translation table and its page-table
// lock held, for a live MMU to copy the window's first-level descriptors
// when it switches the space in (switch_mm). It fails on an exited space.
func (as *AddressSpace) WithTable(fn func(*pgtable.Table)) error {
	as.ptl.Lock()
	defer as.ptl.Unlock()
	if as.exited {
		return ErrExited
	}
	fn(as.pt)
	return nil
}
