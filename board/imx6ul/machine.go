//go:build tamago && arm

package imx6ul

import (
	"io"
	"sync"
	_ "unsafe" // for go:linkname

	"github.com/usbarmory/tamago/soc/nxp/uart"

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
	// ConsoleUART is the UART TamaGo's board prints on, and ConsoleIRQ
	// its interrupt (IMX6ULRM, table 3-1: UART1 is GIC SPI 26, UART2 27).
	ConsoleUART *uart.UART
	ConsoleIRQ  int
}

// console is the image's one console input, made on first use.
var console struct {
	once sync.Once
	in   *Console
}

// Console returns the console's input. Call it after Init, which starts
// interrupt handling; only a scenario that reads the console does, so
// that the receive interrupt is taken only then.
func (m Machine) Console() io.Reader {
	console.once.Do(func() { console.in = NewConsole(m.ConsoleUART, m.ConsoleIRQ) })
	return console.in
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
