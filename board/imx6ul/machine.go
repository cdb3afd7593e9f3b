//go:build tamago && arm

package imx6ul

import (
	_ "unsafe" // for go:linkname

	"yolk/board"
)

// TamaGo's Go runtime owns [ramStart, ramStart+ramSize); the rest of DDR is
// yolk's. The image is built with the linkramsize tag, which removes the
// TamaGo board's own 512 MiB definition (see linkramsize.go).
//
//go:linkname ramSize runtime/goos.RamSize
var ramSize uint32 = RuntimeSize

// Machine is what the boards share of the image's machine interface; a
// board embeds it and adds its identity, Ethernet controller and exit.
type Machine struct {
	// Layout is the board's memory map and identity.
	Layout board.Info
}

// Emulated reports whether the SoC is QEMU's model rather than silicon.
func (Machine) Emulated() bool { return Emulated() }

// Init places the DMA region, maps the pool and starts interrupt handling.
func (m Machine) Init() error { return Init(m.Layout.Memory) }

// HandleInterrupt routes a GIC interrupt to fn (run as a goroutine, not in
// exception context).
func (Machine) HandleInterrupt(id int, fn func()) { HandleInterrupt(id, fn) }

// Pool returns the managed pool as a byte slice over flat-mapped DDR.
func (m Machine) Pool() []byte { return m.Layout.Memory.Pool.Bytes() }

// Cmdline returns the boot command line (semihosting under QEMU).
func (Machine) Cmdline() (string, bool, error) { return Cmdline() }
