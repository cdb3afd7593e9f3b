//go:build tamago && arm

package mx6ullevk

import (
	"errors"
	_ "unsafe" // for go:linkname

	_ "github.com/usbarmory/tamago/board/nxp/mx6ullevk" // clocks, UART1 console, ENET PHY
	"github.com/usbarmory/tamago/soc/nxp/enet"
	"github.com/usbarmory/tamago/soc/nxp/imx6ul"

	"yolk/board"
	soc "yolk/board/imx6ul"
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
func (machine) Emulated() bool { return soc.Emulated() }

// Init places the DMA region, maps the pool and starts interrupt handling.
func (machine) Init() error { return soc.Init(Layout.Memory) }

// HandleInterrupt routes a GIC interrupt to fn (run as a goroutine, not in
// exception context).
func (machine) HandleInterrupt(id int, fn func()) { soc.HandleInterrupt(id, fn) }

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

// Cmdline returns the boot command line (semihosting under QEMU).
func (machine) Cmdline() (string, bool, error) { return soc.Cmdline() }

// Exit ends the run with a status (QEMU's exit status under emulation; a
// halt on the board).
func (machine) Exit(code int) { soc.Exit(code, nil) }
