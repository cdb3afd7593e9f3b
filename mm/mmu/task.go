package mmu

import (
	"runtime"
	"sync/atomic"

	"yolk/mm"
	"yolk/mm/pgtable"
)

// task is a goroutine running with an address space in the window.
type task struct {
	as *mm.AddressSpace
	// state is the task's fault: none, queued (addr and acc name it) or
	// failed (err says why). The abort path writes addr, acc and then
	// state; the fault goroutine reads them after state, and writes err
	// before state.
	state atomic.Uint32
	addr  uint32
	acc   pgtable.Access
	err   error
}

// Run runs fn as a task of as: on a goroutine of its own, with as in the
// window, so that fn's loads and stores at 0x40000000-0x7fffffff are the
// space's memory, through the MMU. Faults are served as they come; one
// that cannot be served (no VMA, a VMA that forbids the access, a swap-in
// that failed) ends the task there, and Run returns it: the *mm.FaultError
// the fault handler gave (SEGV_MAPERR, SEGV_ACCERR, or SIGBUS for a swap
// read that failed). Tasks run one at a time.
//
// fn must do its window accesses in functions that have a stack frame
// (that call something): a task is killed by making it call
// runtime.Goexit from the faulting instruction, and the unwinder finds
// a frameless leaf function's caller through the link register, which the
// injected call has replaced.
func (c *CPU) Run(as *mm.AddressSpace, fn func()) error {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	if err := c.Switch(as); err != nil {
		return err
	}
	t := &task{as: as}
	c.task.Store(t)
	defer c.task.Store(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	if t.state.Load() == faultFailed {
		return t.err
	}
	return nil
}

// taskExit is where a killed task goes: the abort path makes the faulting
// instruction call it (hardware_tamago.go), and Goexit runs the task's
// deferred calls, which tell Run.
func taskExit() {
	runtime.Goexit()
}
