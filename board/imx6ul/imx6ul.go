//go:build tamago && arm

// Package imx6ul is the part of yolk's board support that every i.MX6UL
// board shares: placing the DMA region and mapping the pool, the boot
// command line and the exit path, each of which depends on whether the SoC
// is silicon or QEMU's model. The board packages (board/mx6ullevk,
// board/usbarmory) add what differs: the layout, the console and the
// Ethernet controller.
package imx6ul

import (
	"github.com/usbarmory/tamago/arm"
	"github.com/usbarmory/tamago/dma"
	"github.com/usbarmory/tamago/soc/nxp/imx6ul"

	"yolk/board"
	"yolk/runtime/semihosting"
)

// Emulated reports whether the SoC is QEMU's model rather than silicon.
func Emulated() bool { return !imx6ul.Native }

// Init prepares memory (see InitMemory) and starts interrupt handling and
// the idle governor (see StartInterrupts).
func Init(m board.MemoryMap) error {
	if err := InitMemory(m); err != nil {
		return err
	}
	StartInterrupts()
	return nil
}

// InitMemory moves TamaGo's default DMA region (ENET rings and buffers)
// from the 128 KiB OCRAM to the board's DMA region in DDR, and maps the
// pool as normal cacheable memory. TamaGo maps everything outside the
// runtime region as device memory: right for DMA, which then needs no
// cache maintenance, but wrong for the pool, since device memory faults on
// unaligned access and is never cached.
func InitMemory(m board.MemoryMap) error {
	if err := dma.Init(uint(m.DMA.Start), int(m.DMA.Size)); err != nil {
		return err
	}
	imx6ul.ARM.ConfigureMMU(uint32(m.Pool.Start), uint32(m.Pool.End()), 0,
		arm.MemoryRegion|arm.TTE_EXECUTE_NEVER)
	return nil
}

// Cmdline returns the boot command line: through semihosting under QEMU;
// on silicon there is none (no debugger is assumed), and ok is false.
func Cmdline() (s string, ok bool, err error) {
	if !Emulated() {
		return "", false, nil
	}
	s, err = semihosting.Cmdline()
	return s, true, err
}

// Exit ends the run with a status: under QEMU through semihosting, so the
// QEMU process exits with it; on silicon by calling signal (to show the
// verdict, e.g. on an LED) and halting the core.
func Exit(code int, signal func(code int)) {
	if Emulated() {
		semihosting.Exit(code)
	}
	if signal != nil {
		signal(code)
	}
	for {
		imx6ul.ARM.WaitInterrupt()
	}
}
