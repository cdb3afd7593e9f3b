//go:build tamago && arm

package mmu

import (
	"sync"
	"unsafe"

	"github.com/usbarmory/tamago/arm"

	"yolk/mm/pgtable"
)

// Defined in cp15_arm.s.
func readDFSR() uint32
func readDFAR() uint32
func readTTBR0() uint32
func readCONTEXTIDR() uint32
func dccmvac(mva uint32)
func tlbimva(mvaASID uint32)
func tlbiasid(asid uint32)
func barrier()
func readSPSR() uint32
func usrSP() uint32
func setUsrLR(lr uint32)
func divert()
func divertPC() uint32
func taskExitPC() uint32

// core is the Cortex-A7 the image runs on. The live first-level table is
// the one TTBR0 points at (TamaGo's, at vbar+0x4000: arm/mmu.go), the
// translation regime TamaGo set up has TTBCR.N = 0, and every task
// mapping is not-global, tagged with the ASID in CONTEXTIDR.
type core struct {
	l1   uint32 // physical (= virtual: DDR is mapped flat) address of the L1 table
	asid uint32
}

func word(addr uint32) *uint32 { return (*uint32)(unsafe.Add(unsafe.Pointer(nil), uintptr(addr))) }

func (h *core) entry(va uint32) *uint32 { return word(h.l1 + 4*(va>>pgtable.SectionShift)) }

func (h *core) ReadL1(va uint32) pgtable.L1 { return pgtable.L1(*h.entry(va)) }

func (h *core) WriteL1(va uint32, d pgtable.L1) {
	p := h.entry(va)
	*p = uint32(d)
	dccmvac(uint32(uintptr(unsafe.Pointer(p))))
}

func (h *core) Clean(pa uint32)          { dccmvac(pa) }
func (h *core) InvalidatePage(va uint32) { tlbimva(va&^(pgtable.PageSize-1) | h.asid) }
func (h *core) InvalidateASID()          { tlbiasid(h.asid) }
func (h *core) Barrier()                 { barrier() }

var (
	liveOnce sync.Once
	live     *CPU
)

// Live returns the image's live MMU, taking over data aborts in the task
// window on first use; aborts anywhere else still reach the handler that
// was there before (TamaGo's, which reports and stops).
func Live() (*CPU, error) {
	liveOnce.Do(func() {
		hw := &core{l1: readTTBR0() &^ (1<<14 - 1), asid: readCONTEXTIDR() & 0xff}
		live = New(hw)
		prev := arm.SystemExceptionHandler
		arm.SystemExceptionHandler = func(off int) {
			if off == arm.DATA_ABORT && live.dataAbort() {
				return
			}
			prev(off)
		}
	})
	return live, nil
}

// dataAbort serves a data abort, on g0 in Abort mode with interrupts
// masked. TamaGo's exception entry (arm/exception.s) has pushed the
// task's r0-r12 and the faulting instruction's address below the task's
// stack pointer, and pops them when this returns; the address is the
// last word, just below SP. Retry leaves it; Yield and Kill replace it, so
// that the task resumes somewhere else with every register intact.
func (c *CPU) dataAbort() bool {
	// Tasks are goroutines, which run in System mode; an abort taken in
	// any other mode (an exception handler touching the window) is no
	// task's, and its registers are not where divert looks.
	const modeMask, systemMode = 0x1f, 0x1f
	if readSPSR()&modeMask != systemMode {
		return false
	}
	a := Abort{DFSR: readDFSR(), DFAR: readDFAR()}
	act := c.Abort(a)
	if act == NotOurs {
		return false
	}
	sp := usrSP()
	pc := word(sp - 4)
	switch act {
	case Yield:
		*word(sp - 128) = *pc
		*pc = divertPC()
	case Kill:
		// A call of taskExit from the faulting instruction, the way the
		// runtime injects sigpanic: the return address is the faulting
		// PC, so tracebacks and Goexit's unwinding see the task's frames.
		setUsrLR(*pc)
		*pc = taskExitPC()
	}
	return true
}
