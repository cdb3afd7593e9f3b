//go:build tamago && arm

package usbarmory

import (
	"errors"
	_ "unsafe" // for go:linkname

	"github.com/usbarmory/tamago/arm"
	"github.com/usbarmory/tamago/board/usbarmory/mk2" // UART2 console, PMIC, LEDs
	"github.com/usbarmory/tamago/dma"
	"github.com/usbarmory/tamago/soc/nxp/enet"
	"github.com/usbarmory/tamago/soc/nxp/imx6ul"

	"yolk/board"
	"yolk/runtime/semihosting"
)

// See board/mx6ullevk: the runtime region is ours to size.
//
//go:linkname ramSize runtime/goos.RamSize
var ramSize uint32 = RuntimeSize

// Machine is the board the image runs on.
var Machine machine

type machine struct{}

// Info returns the board description and memory map.
func (machine) Info() board.Info {
	info := Layout
	if _, name := mk2.Model(); imx6ul.Native {
		info.Model += " (" + name + ")"
	}
	return info
}

// Emulated reports whether the SoC is QEMU's model rather than silicon.
func (machine) Emulated() bool { return !imx6ul.Native }

// Init places the DMA region and maps the pool (see board/mx6ullevk).
func (machine) Init() error {
	m := Layout.Memory
	if err := dma.Init(uint(m.DMA.Start), int(m.DMA.Size)); err != nil {
		return err
	}
	imx6ul.ARM.ConfigureMMU(uint32(m.Pool.Start), uint32(m.Pool.End()), 0,
		arm.MemoryRegion|arm.TTE_EXECUTE_NEVER)
	return nil
}

// Pool returns the managed pool as a byte slice (flat-mapped DDR).
func (machine) Pool() []byte { return Layout.Memory.Pool.Bytes() }

// Ethernet returns the Ethernet controller: ENET2 on the UA-MKII-LAN (the
// only Mk II with a PHY; the others use the i.MX6ULZ, which has no ENET),
// ENET1 under QEMU, where the first -net nic is attached to it.
func (machine) Ethernet() (*enet.ENET, error) {
	if !imx6ul.Native {
		return imx6ul.ENET1, nil
	}
	if m, name := mk2.Model(); m != mk2.LAN || imx6ul.ENET2 == nil {
		return nil, errors.New("no Ethernet on " + name + " (only the UA-MKII-LAN has a PHY on ENET2)")
	}
	return imx6ul.ENET2, nil
}

// Cmdline returns the boot command line: semihosting under QEMU, none on
// the board.
func (m machine) Cmdline() (string, bool, error) {
	if !m.Emulated() {
		return "", false, nil
	}
	s, err := semihosting.Cmdline()
	return s, true, err
}

// Exit ends the run: under QEMU through semihosting; on the board by
// halting with the white LED on for a failure and the blue one for success,
// so the verdict is visible without a console.
func (m machine) Exit(code int) {
	if m.Emulated() {
		semihosting.Exit(code)
	}
	if code == 0 {
		mk2.LED("blue", true)
	} else {
		mk2.LED("white", true)
	}
	for {
		imx6ul.ARM.WaitInterrupt()
	}
}
