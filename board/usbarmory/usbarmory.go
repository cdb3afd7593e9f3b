//go:build tamago && arm

package usbarmory

import (
	"errors"
	_ "unsafe" // for go:linkname

	"github.com/usbarmory/tamago/board/usbarmory/mk2" // UART2 console, PMIC, LEDs
	"github.com/usbarmory/tamago/soc/nxp/enet"
	"github.com/usbarmory/tamago/soc/nxp/imx6ul"

	"yolk/board"
	soc "yolk/board/imx6ul"
)

// See board/mx6ullevk: the runtime region is ours to size.
//
//go:linkname ramSize runtime/goos.RamSize
var ramSize uint32 = RuntimeSize

// Machine is the board the image runs on.
var Machine machine

type machine struct{}

// Info returns the board description, with the Mk II model read from its
// fuses on silicon, and the memory map. Under QEMU the network is on
// ENET1, where the emulator attaches the first -net nic (see Ethernet).
func (machine) Info() board.Info {
	info := Layout
	if soc.Emulated() {
		info.Ethernet = "ENET1"
	} else {
		_, name := mk2.Model()
		info.Model += " (" + name + ")"
	}
	return info
}

// Emulated reports whether the SoC is QEMU's model rather than silicon.
func (machine) Emulated() bool { return soc.Emulated() }

// Init places the DMA region, maps the pool and starts interrupt handling.
func (machine) Init() error { return soc.Init(Layout.Memory) }

// HandleInterrupt routes a GIC interrupt to fn (run as a goroutine, not in
// exception context).
func (machine) HandleInterrupt(id int, fn func()) { soc.HandleInterrupt(id, fn) }

// Pool returns the managed pool as a byte slice over flat-mapped DDR.
func (machine) Pool() []byte { return Layout.Memory.Pool.Bytes() }

// Ethernet returns the Ethernet controller: ENET2 on the UA-MKII-LAN (the
// only Mk II with a PHY; the others use the i.MX6ULZ, which has no ENET),
// ENET1 under QEMU, where the first -net nic is attached to it.
func (machine) Ethernet() (*enet.ENET, error) {
	if soc.Emulated() {
		return imx6ul.ENET1, nil
	}
	if m, name := mk2.Model(); m != mk2.LAN || imx6ul.ENET2 == nil {
		return nil, errors.New("no Ethernet on " + name + " (only the UA-MKII-LAN has a PHY on ENET2)")
	}
	return imx6ul.ENET2, nil
}

// Cmdline returns the boot command line (semihosting under QEMU; none on
// the board, where parameters are built in with CMDLINE=).
func (machine) Cmdline() (string, bool, error) { return soc.Cmdline() }

// Exit ends the run: under QEMU through semihosting; on the board by
// halting with the blue LED on for a pass and the white one for a failure,
// so the verdict is visible without a console.
func (machine) Exit(code int) {
	soc.Exit(code, func(code int) {
		if code == 0 {
			mk2.LED("blue", true)
		} else {
			mk2.LED("white", true)
		}
	})
}
