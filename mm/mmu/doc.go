// Package mmu puts an address space's task window into the live MMU of
// the image's Cortex-A7 and serves the data aborts its tasks take with
// mm's fault handler: Linux/ARM's switch_mm, tlb-v7 and do_DataAbort, on
// TamaGo. Off the image the software MMU (mm.AddressSpace.Read, Write) is
// the only path; this package's portable part (the CPU's bookkeeping, the
// abort decisions, the fault goroutine) is tested there against a
// recording TLB model.
//
// # The window in the live table
//
// TamaGo keeps one first-level table (TTBR0, at vbar+0x4000) with a flat
// map; the window 0x40000000-0x7fffffff is 1024 of its entries, 4 KiB of
// it, which mm/pgtable lays out as a slice ready to copy. Switch copies a
// space's slice in and invalidates the tasks' ASID (TLBIASID), so nothing
// of the previous space survives; SwitchOut puts the firmware's entries
// back. The second-level tables are walked where they lie, in the table
// pages mm allocates from the pool (DDR is mapped flat, so their physical
// address is also where the CPU writes them).
//
// Every hardware descriptor mm writes reaches the CPU through
// pgtable.TLB, with the page-table lock held: an L1 change is mirrored
// into the live table while the space is in it; every L2 write has its
// line cleaned to the point of coherency (DCCMVAC), whatever space it
// belongs to, since the walk need not snoop the data cache; a descriptor
// that was valid is invalidated by address (TLBIMVA with the ASID), or
// the whole ASID when a table pointer goes (the walk cache's entries for
// the section). DSB and ISB close each change. Faults are never cached,
// so a fault-to-valid change needs only the clean and the barrier. The
// yolk_drop_tlbi build tag leaves out the invalidation when a writable
// page is write-protected in place, to show the tests failing.
//
// # How an abort travels
//
// A task (Run) is a goroutine running with its space in the window. A
// load or store that the MMU refuses raises a data abort:
//
//  1. The core enters Abort mode with interrupts masked. TamaGo's entry
//     (arm/exception.s) takes the task's stack pointer, pushes r0-r12 and
//     the faulting instruction's address below it, and calls
//     arm.SystemExceptionHandler on g0 (runtime.CallOnG0). Live installs
//     a handler there that takes data aborts in the window and passes
//     everything else to the one before it (TamaGo's, which stops).
//  2. On g0, dataAbort reads DFSR and DFAR, and CPU.Abort decides. A
//     status other than a translation or permission fault is not a page
//     fault and goes on to the previous handler. Every page fault goes to
//     mm.(*AddressSpace).FaultAtomic, which counts it and resolves the
//     young and dirty emulation in place: Retry, and the return from the
//     exception runs the instruction again.
//  3. Anything else (a page to allocate, copy-on-write, swap-in, a fault
//     to refuse) is queued for the fault goroutine, and the task is
//     diverted: the saved return address is replaced by divert
//     (cp15_arm.s), which makes the faulting instruction look like it
//     called runtime.asyncPreempt, the way the runtime's own pushCall
//     does for a preemption signal. asyncPreempt saves every register
//     and the flags, and reschedules; the runtime scans the interrupted
//     frame conservatively, as it must for an arbitrary instruction.
//  4. The fault goroutine runs mm.(*AddressSpace).HandleAbort, which is
//     HandleFault: the same handler the software MMU calls. When the task
//     runs again, asyncPreempt returns to the faulting instruction, which
//     finds its page (or aborts again and waits, if the handler is still
//     at it).
//  5. If the handler refused the fault (SEGV) or could not read the page
//     back (SIGBUS), the next abort kills the task: the return address
//     becomes taskExit, called from the faulting instruction as the
//     runtime injects sigpanic, and runtime.Goexit unwinds the task. Run
//     returns the handler's *mm.FaultError; the image goes on.
//
// # What runs on g0, and why it cannot block
//
// Step 2 runs on g0, in Abort mode, with IRQs masked, on the one core.
// Nothing else can run until it returns: not the goroutine that holds a
// lock it would wait for, not the scheduler, not the interrupt that
// would end a wait. A sync.Mutex that blocks there parks g0, which the
// runtime refuses (it throws); an allocation could enter reclaim and wait
// for swap I/O over the network. So the g0 path only tries locks
// (FaultAtomic's TryRLock and TryLock: a held lock sends the fault to
// the fault goroutine), allocates nothing, and touches no window memory
// (a second abort in Abort mode would overwrite the first one's saved
// state). CPU.mu, which the table hooks take, is never held across
// anything that blocks, so on a core without preemption the abort path
// always finds it free. The one runtime call it makes is a non-blocking
// send on a buffered channel to wake the fault goroutine; the task was at
// a load or store in its own code, not inside the scheduler, so the
// runtime's state is whole.
//
// # Limits
//
// Tasks run at PL1 (TamaGo has no user mode), so the MMU only guards the
// window: a task's store outside it reaches whatever TamaGo maps there.
// A task must do its window accesses in functions with a stack frame (see
// Run): the kill's injected call replaces the link register, which a
// frameless leaf function still needs for its return. One task runs at a
// time, since the window holds one space.
package mmu
