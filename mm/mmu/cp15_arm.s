//go:build tamago && arm

#include "textflag.h"

// The ARMv7 system register and maintenance operations the live MMU uses
// (ARMv7-A Architecture Reference Manual, B4.1 and B4.2), and the two
// trampolines the abort path resumes a task at.

// func readDFSR() uint32
TEXT ·readDFSR(SB),NOSPLIT,$0-4
	MRC	15, 0, R0, C5, C0, 0
	MOVW	R0, ret+0(FP)
	RET

// func readDFAR() uint32
TEXT ·readDFAR(SB),NOSPLIT,$0-4
	MRC	15, 0, R0, C6, C0, 0
	MOVW	R0, ret+0(FP)
	RET

// func readTTBR0() uint32
TEXT ·readTTBR0(SB),NOSPLIT,$0-4
	MRC	15, 0, R0, C2, C0, 0
	MOVW	R0, ret+0(FP)
	RET

// func readCONTEXTIDR() uint32
TEXT ·readCONTEXTIDR(SB),NOSPLIT,$0-4
	MRC	15, 0, R0, C13, C0, 1
	MOVW	R0, ret+0(FP)
	RET

// func dccmvac(mva uint32): clean data cache line by MVA to PoC.
TEXT ·dccmvac(SB),NOSPLIT,$0-4
	MOVW	mva+0(FP), R0
	MCR	15, 0, R0, C7, C10, 1
	RET

// The invalidations begin with a DSB: the descriptor write and its clean
// must be complete before the TLB entry goes, or a walk in between could
// load the old descriptor again (B3.10.1, the sequence Linux's
// set_pte_ext and flush_tlb_page make).

// func tlbimva(mvaASID uint32): invalidate unified TLB by MVA and ASID.
TEXT ·tlbimva(SB),NOSPLIT,$0-4
	MOVW	mvaASID+0(FP), R0
	WORD	$0xf57ff04f	// dsb sy
	MCR	15, 0, R0, C8, C7, 1
	RET

// func tlbiasid(asid uint32): invalidate unified TLB by ASID.
TEXT ·tlbiasid(SB),NOSPLIT,$0-4
	MOVW	asid+0(FP), R0
	WORD	$0xf57ff04f	// dsb sy
	MCR	15, 0, R0, C8, C7, 2
	RET

// func barrier(): DSB, then ISB.
TEXT ·barrier(SB),NOSPLIT,$0-0
	WORD	$0xf57ff04f	// dsb sy
	WORD	$0xf57ff06f	// isb sy
	RET

// func readSPSR() uint32: the saved status of the mode the exception
// interrupted.
TEXT ·readSPSR(SB),NOSPLIT,$0-4
	WORD	$0xe14f0000	// mrs r0, spsr
	MOVW	R0, ret+0(FP)
	RET

// func usrSP() uint32: the System mode stack pointer, from the exception
// mode (MRS banked register, ARMv7 Virtualization Extensions, as TamaGo's
// own exception entry uses).
TEXT ·usrSP(SB),NOSPLIT,$0-4
	WORD	$0xe1050200	// mrs r0, SP_usr
	MOVW	R0, ret+0(FP)
	RET

// func setUsrLR(lr uint32): the System mode link register.
TEXT ·setUsrLR(SB),NOSPLIT,$0-4
	MOVW	lr+0(FP), R0
	WORD	$0xe126f200	// msr LR_usr, r0
	RET

// divert is where a task that must wait for its fault resumes, with every
// register as it was at the faulting instruction, whose address the abort
// path left 128 bytes below the stack pointer (below the 64 bytes an
// interrupt's entry may push there). It makes the instruction look like it
// called runtime.asyncPreempt, the way the runtime's pushCall does for a
// preemption signal: the link register goes to the stack slot asyncPreempt
// and the unwinder know of, the faulting PC becomes the return address.
// asyncPreempt saves every register and the flags, reschedules, and
// returns to the faulting instruction, which runs again.
TEXT ·divert(SB),NOSPLIT|NOFRAME,$0-0
	MOVW.W	R14, -4(R13)
	MOVW	-124(R13), R14
	B	runtime·asyncPreempt(SB)

// func divertPC() uint32
TEXT ·divertPC(SB),NOSPLIT,$0-4
	MOVW	$·divert(SB), R0
	MOVW	R0, ret+0(FP)
	RET

// func taskExitPC() uint32
TEXT ·taskExitPC(SB),NOSPLIT,$0-4
	MOVW	$·taskExit(SB), R0
	MOVW	R0, ret+0(FP)
	RET
