// Package semihosting is the image's line to the debugger or emulator that
// runs it: ARM semihosting ("Semihosting for AArch32 and AArch64", ARM
// DUI0471 / IHI0071), which QEMU implements when started with -semihosting.
//
// yolk uses two operations:
//
//   - SYS_GET_CMDLINE (0x15): QEMU returns the image name followed by the
//     -append text; this is how boot parameters reach the image.
//   - SYS_EXIT_EXTENDED (0x20) with the block {ADP_Stopped_ApplicationExit,
//     code}: QEMU exits with that code, so a scenario's verdict becomes
//     the QEMU process's exit status. Plain SYS_EXIT (0x18) on AArch32
//     carries no code, which is why the extended form is used.
//
// A semihosting call is an "SVC 0x123456" in ARM state. Outside an emulator
// or debugger that traps into the exception vectors, so callers must only
// use this package where semihosting is known to be present (the board
// packages check for emulation first).
package semihosting

// Operation numbers and the exit reason (IHI0071, 6.1 and 5.4).
const (
	SysGetCmdline    = 0x15
	SysExitExtended  = 0x20
	ApplicationExit  = 0x20026 // ADP_Stopped_ApplicationExit
	CmdlineBufferLen = 4096
)
