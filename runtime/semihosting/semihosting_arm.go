//go:build tamago && arm

package semihosting

import (
	"fmt"
	"unsafe"
)

// call performs one semihosting operation with R0=op, R1=arg and returns R0.
// Defined in semihosting_arm.s.
func call(op uint32, arg uintptr) int32

// The parameter blocks and the command-line buffer are package variables:
// the emulator reads and writes them by address while the call is in
// flight, so they must not live on a goroutine stack that could move.
var (
	cmdlineBuf   [CmdlineBufferLen]byte
	cmdlineBlock [2]uint32
	exitBlock    [2]uint32
)

// Cmdline returns the command line the emulator was started with.
func Cmdline() (string, error) {
	cmdlineBlock[0] = uint32(uintptr(unsafe.Pointer(&cmdlineBuf[0])))
	cmdlineBlock[1] = uint32(len(cmdlineBuf))
	if r := call(SysGetCmdline, uintptr(unsafe.Pointer(&cmdlineBlock))); r != 0 {
		return "", fmt.Errorf("semihosting: SYS_GET_CMDLINE failed (%d): command line longer than %d bytes?", r, len(cmdlineBuf))
	}
	n := cmdlineBlock[1]
	if n > uint32(len(cmdlineBuf)) {
		return "", fmt.Errorf("semihosting: SYS_GET_CMDLINE returned length %d for a %d byte buffer", n, len(cmdlineBuf))
	}
	return string(cmdlineBuf[:n]), nil
}

// Exit stops the emulator with the given status. It returns only if the
// emulator ignored the request.
func Exit(code int) {
	exitBlock[0] = ApplicationExit
	exitBlock[1] = uint32(code)
	call(SysExitExtended, uintptr(unsafe.Pointer(&exitBlock)))
}
