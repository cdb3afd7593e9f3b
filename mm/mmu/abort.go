package mmu

import (
	"sync/atomic"

	"yolk/mm"
	"yolk/mm/pgtable"
)

// Action is what the exception handler does with the task after a data
// abort.
type Action uint8

const (
	// Retry returns from the exception: the instruction runs again and
	// finds the entry fixed.
	Retry Action = iota
	// Yield diverts the task into the Go scheduler (runtime.asyncPreempt)
	// with the fault queued for the fault goroutine; the instruction runs
	// again when the task is next scheduled.
	Yield
	// Kill ends the task (runtime.Goexit in its own context): the fault
	// goroutine found no way to serve the fault (SEGV, SIGBUS).
	Kill
	// NotOurs: no task runs, or the address is outside the window. The
	// image's default handler reports it and stops: a bug, not a fault.
	NotOurs
)

var actionNames = [...]string{"retry", "yield", "kill", "not ours"}

func (a Action) String() string { return actionNames[a] }

// cpuStats are the abort path's counters. Every field is 32 bits wide: the
// abort path runs on ARMv7, where 64-bit atomics need alignment the
// exception path cannot promise.
type cpuStats struct {
	aborts [NumKinds]atomic.Uint32 // page-fault aborts by kind (DFSR)
	other  atomic.Uint32           // aborts in the window with another status
	// waits are aborts taken again while their fault was still queued,
	// kills aborts that ended their task, by kind.
	waits, kills [NumKinds]atomic.Uint32
	retries      atomic.Uint32 // resolved on g0 by mm.FaultAtomic
	yields       atomic.Uint32 // queued for the fault goroutine
	served       atomic.Uint32 // faults the fault goroutine resolved
	failed       atomic.Uint32 // faults it could not (the task is killed)
	switches     atomic.Uint32
	flushPage    atomic.Uint32 // TLBIMVA
	flushASID    atomic.Uint32 // TLBIASID outside switches
}

// A task's fault states.
const (
	faultNone   uint32 = iota
	faultQueued        // the fault goroutine has it
	faultFailed        // it failed: the next abort kills the task
)

// Abort decides what becomes of a data abort taken by the running task.
// It runs on g0 in the exception, with interrupts masked: it never blocks
// and never allocates. A page fault first goes to mm.FaultAtomic, which
// fixes what needs no memory (the young and dirty emulation); anything
// else is queued for the fault goroutine, which runs the same fault
// handler in goroutine context, and the task yields until it has.
func (c *CPU) Abort(a Abort) Action {
	t := c.task.Load()
	if t == nil || !pgtable.InWindow(a.DFAR) {
		return NotOurs
	}
	k, ok := KindOf(a.Status())
	if !ok {
		c.stats.other.Add(1)
		return NotOurs
	}
	c.stats.aborts[k].Add(1)
	// Every abort goes to the fault handler first, which counts it by the
	// status DFSR gave: its counts and these must be equal.
	if t.as.FaultAtomic(a.DFAR, a.Access(), a.Status()) == mm.FaultFixed {
		t.state.Store(faultNone) // whatever the fault goroutine was at is moot
		c.stats.retries.Add(1)
		return Retry
	}
	switch t.state.Load() {
	case faultQueued:
		c.stats.waits[k].Add(1)
		return Yield
	case faultFailed:
		c.stats.kills[k].Add(1)
		return Kill
	}
	t.addr, t.acc = a.DFAR, a.Access()
	t.state.Store(faultQueued)
	// A non-blocking send on a buffered channel takes the channel's
	// runtime lock and may ready the fault goroutine; the task was at a
	// load or store in its own code, not inside the scheduler, so the
	// runtime's state is whole.
	select {
	case c.kick <- struct{}{}:
	default:
	}
	c.stats.yields.Add(1)
	return Yield
}

// serve is the fault goroutine: it runs the fault handler for the task
// whose fault is queued, in goroutine context, where it may allocate,
// reclaim and wait for swap I/O.
func (c *CPU) serve() {
	for range c.kick {
		t := c.task.Load()
		if t == nil || t.state.Load() != faultQueued {
			continue
		}
		if err := t.as.HandleAbort(t.addr, t.acc); err != nil {
			t.err = err
			c.stats.failed.Add(1)
			t.state.Store(faultFailed)
			continue
		}
		c.stats.served.Add(1)
		t.state.Store(faultNone)
	}
}

// Stats are the live MMU's counters.
type Stats struct {
	// Aborts counts the data aborts taken in the window by kind, as DFSR
	// reported them; Other those with any other status.
	Aborts [NumKinds]uint32
	Other  uint32
	// Every abort reaches the fault handler (mm.FaultAtomic), whose own
	// counts by status must equal Aborts. Then: Retries were fixed there,
	// on g0; Yields were queued for the fault goroutine, which Served or
	// Failed them; Waits were taken again while their fault was still
	// being served, and Kills ended their task (by kind).
	Waits, Kills                    [NumKinds]uint32
	Retries, Yields, Served, Failed uint32
	// Switches of the window to another space; TLB invalidations of one
	// page and of the whole ASID outside switches.
	Switches, FlushPage, FlushASID uint32
}

// Stats returns the counters.
func (c *CPU) Stats() Stats {
	s := &c.stats
	out := Stats{Other: s.other.Load(), Retries: s.retries.Load(), Yields: s.yields.Load(),
		Served: s.served.Load(), Failed: s.failed.Load(), Switches: s.switches.Load(),
		FlushPage: s.flushPage.Load(), FlushASID: s.flushASID.Load()}
	for k := range NumKinds {
		out.Aborts[k], out.Waits[k], out.Kills[k] = s.aborts[k].Load(), s.waits[k].Load(), s.kills[k].Load()
	}
	return out
}
