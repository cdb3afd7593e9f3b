package mmu

import (
	"sync"
	"sync/atomic"

	"yolk/mm"
	"yolk/mm/pgtable"
)

// Hardware is what the live MMU needs of the CPU: the task window's slice
// of the live first-level table and the ARMv7 cache and TLB maintenance
// operations. On the image it is the core itself (hardware_tamago.go); in
// host tests, a recording model that checks every change is invalidated.
type Hardware interface {
	// ReadL1 and WriteL1 read and write the live first-level descriptor
	// of the section at va; WriteL1 also cleans the descriptor's line to
	// the point of coherency (DCCMVAC), for the table walk.
	ReadL1(va uint32) pgtable.L1
	WriteL1(va uint32, d pgtable.L1)
	// Clean cleans the data cache line holding physical address pa to
	// the point of coherency (DCCMVAC): a second-level descriptor the
	// table walk must see.
	Clean(pa uint32)
	// InvalidatePage drops the TLB's entries for va in the tasks' ASID,
	// and the walk cache's for it (TLBIMVA).
	InvalidatePage(va uint32)
	// InvalidateASID drops every entry of the tasks' ASID (TLBIASID).
	InvalidateASID()
	// Barrier completes the maintenance before the next access (DSB,
	// ISB).
	Barrier()
}

// CPU is the live MMU of the image's one core: the address space switched
// into the window, the TLB maintenance its tables' changes need, the data
// aborts its tasks take (abort.go) and the tasks themselves (task.go).
// It is mm's pgtable.TLB: give it to mm.Config.TLB.
type CPU struct {
	hw Hardware

	// mu guards cur and the live window. Table changes report in with
	// their page-table lock held and take mu inside it; Switch takes a
	// space's page-table lock, then mu. On the image nothing blocks while
	// holding mu, so the abort path on g0 always finds it free.
	mu  sync.Mutex
	cur *pgtable.Table
	// firmware is what the window held before the first switch: TamaGo's
	// flat device mapping, put back when no space is switched in.
	firmware [pgtable.WindowSections]pgtable.L1

	// runMu admits one task at a time (task.go); task is the running one.
	runMu sync.Mutex
	task  atomic.Pointer[task]
	kick  chan struct{}

	stats cpuStats
}

// New returns the live MMU driving hw, and starts its fault goroutine.
// It saves what the window holds now, to put it back between spaces.
func New(hw Hardware) *CPU {
	c := &CPU{hw: hw, kick: make(chan struct{}, 1)}
	for i := range c.firmware {
		c.firmware[i] = hw.ReadL1(sectionVA(uint32(i)))
	}
	go c.serve()
	return c
}

// Close stops the fault goroutine. No task may be running. The image's
// live MMU is never closed; tests close theirs.
func (c *CPU) Close() {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	close(c.kick)
}

func sectionVA(i uint32) uint32 { return pgtable.WindowStart + i<<pgtable.SectionShift }

// Switch makes as the space the window shows (switch_mm): its first-level
// descriptors are copied into the live table and the tasks' ASID is
// invalidated, so that no translation of the previous space survives.
// Switching to the space already in place does nothing, so its TLB
// entries stay (and every change to it must invalidate its own).
func (c *CPU) Switch(as *mm.AddressSpace) error {
	return as.WithTable(func(t *pgtable.Table) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.cur == t {
			return
		}
		var w [pgtable.WindowSections]pgtable.L1
		t.L1Window(&w)
		c.load(&w)
		c.cur = t
		c.stats.switches.Add(1)
	})
}

// SwitchOut puts the firmware's window back.
func (c *CPU) SwitchOut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.switchOutLocked()
}

func (c *CPU) switchOutLocked() {
	if c.cur == nil {
		return
	}
	c.load(&c.firmware)
	c.cur = nil
}

// load writes a whole window into the live table and invalidates what the
// TLB holds of the previous one.
func (c *CPU) load(w *[pgtable.WindowSections]pgtable.L1) {
	for i, d := range w {
		va := sectionVA(uint32(i))
		if c.hw.ReadL1(va) != d {
			c.hw.WriteL1(va, d)
		}
	}
	c.hw.InvalidateASID()
	c.hw.Barrier()
}

// L1 is the pgtable.TLB hook for a first-level change: mirrored into the
// live table when t is switched in, with the old translation invalidated.
// A table pointer that goes away takes the walk cache's entries for its
// whole section with it, which TLBIMVA of one address does not promise:
// the ASID is invalidated then (table pages are freed rarely).
func (c *CPU) L1(t *pgtable.Table, va uint32, old, new pgtable.L1) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t != c.cur {
		return
	}
	c.hw.WriteL1(va, new)
	switch old.Kind() {
	case pgtable.KindFault:
		// Faults are never cached: nothing to invalidate.
	case pgtable.KindTable:
		c.hw.InvalidateASID()
		c.stats.flushASID.Add(1)
	default:
		c.hw.InvalidatePage(va)
		c.stats.flushPage.Add(1)
	}
	c.hw.Barrier()
}

// L2 is the pgtable.TLB hook for a second-level change: the descriptor's
// line is cleaned whatever space it belongs to (the walk reads it where
// it lies, whenever the space is next switched in), and a translation it
// replaces is invalidated if the space is in the window now.
func (c *CPU) L2(t *pgtable.Table, va, pa uint32, old, new pgtable.L2) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hw.Clean(pa)
	if t == c.cur && old.Kind() != pgtable.KindFault && !dropInvalidation(old, new) {
		c.hw.InvalidatePage(va)
		c.stats.flushPage.Add(1)
	}
	c.hw.Barrier()
}

// Destroyed is the pgtable.TLB hook for a table being freed: if it is in
// the window, the firmware's entries go back first.
func (c *CPU) Destroyed(t *pgtable.Table) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t == c.cur {
		c.switchOutLocked()
	}
}

// Installed reports whether t is the table in the window.
func (c *CPU) Installed(t *pgtable.Table) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return t == c.cur
}

var _ pgtable.TLB = (*CPU)(nil)
