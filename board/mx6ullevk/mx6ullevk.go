//go:build tamago && arm

package mx6ullevk

import (
	"errors"
	_ "unsafe" // for go:linkname

	"github.com/usbarmory/tamago/arm"
	_ "github.com/usbarmory/tamago/board/nxp/mx6ullevk" // clocks, UART1 console, ENET PHY
	"github.com/usbarmory/tamago/dma"
	"github.com/usbarmory/tamago/soc/nxp/enet"
	"github.com/usbarmory/tamago/soc/nxp/imx6ul"

	"yolk/board"
	"yolk/runtime/semihosting"
)

// TamaGo's Go runtime owns [ramStart, ramStart+ramSize); the rest of DDR is
// ours. Built with the linkramsize tag, which removes the TamaGo board's
// own 512 MiB definition.
//
//go:linkname ramSize runtime/goos.RamSize
var ramSize uint32 = RuntimeSize

// Machine is the board the image runs on.
var Machine machine

type machine struct{}

// Info returns the board description and memory map.
func (machine) Info() board.Info { return Layout }

// Emulated reports whether the SoC is QEMU's model rather than silicon.
func (machine) Emulated() bool { return !imx6ul.Native }

// Init moves TamaGo's default DMA region (ENET rings and buffers) from the
// 128 KiB OCRAM to the board's DMA region in DDR, and maps the pool as
// normal cacheable memory. TamaGo maps everything outside the runtime
// region as device memory, which is right for DMA but wrong for the pool:
// device memory faults on unaligned access and is never cached.
func (machine) Init() error {
	return initMemory(Layout.Memory)
}

func initMemory(m board.MemoryMap) error {
	if err := dma.Init(uint(m.DMA.Start), int(m.DMA.Size)); err != nil {
		return err
	}
	imx6ul.ARM.ConfigureMMU(uint32(m.Pool.Start), uint32(m.Pool.End()), 0,
		arm.MemoryRegion|arm.TTE_EXECUTE_NEVER)
	return nil
}

// Pool returns the managed pool as a byte slice over flat-mapped DDR.
func (machine) Pool() []byte { return Layout.Memory.Pool.Bytes() }

// Ethernet returns ENET1, the controller QEMU attaches the first -net nic
// to and the EVK's first RJ45 port.
func (machine) Ethernet() (*enet.ENET, error) {
	if imx6ul.ENET1 == nil {
		return nil, errors.New("ENET1 is not present on this SoC")
	}
	return imx6ul.ENET1, nil
}

// Cmdline returns the boot command line: semihosting under QEMU, none on
// silicon (no debugger is assumed to be attached).
func (m machine) Cmdline() (string, bool, error) {
	if !m.Emulated() {
		return "", false, nil
	}
	s, err := semihosting.Cmdline()
	return s, true, err
}

// Exit ends the run with a status: under QEMU through semihosting, so the
// QEMU process exits with it; on silicon by halting the core.
func (m machine) Exit(code int) {
	if m.Emulated() {
		semihosting.Exit(code)
	}
	for {
		imx6ul.ARM.WaitInterrupt()
	}
}
