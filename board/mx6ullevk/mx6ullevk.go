//go:build tamago && arm

package mx6ullevk

import (
	"errors"

	_ "github.com/usbarmory/tamago/board/nxp/mx6ullevk" // clocks, UART1 console, ENET PHY
	"github.com/usbarmory/tamago/soc/nxp/enet"
	"github.com/usbarmory/tamago/soc/nxp/imx6ul"

	"yolk/board"
	soc "yolk/board/imx6ul"
)

// Machine is the board the image runs on.
// Its console is UART1, QEMU's first -serial.
var Machine = machine{soc.Machine{Layout: Layout, ConsoleUART: imx6ul.UART1, ConsoleIRQ: imx6ul.BASE_IRQ + 26}}

type machine struct{ soc.Machine }

// Info returns the board description and memory map.
func (machine) Info() board.Info { return Layout }

// Ethernet returns ENET1, the controller QEMU attaches the first -net nic
// to and the EVK's first RJ45 port.
func (machine) Ethernet() (*enet.ENET, error) {
	if imx6ul.ENET1 == nil {
		return nil, errors.New("ENET1 is not present on this SoC")
	}
	return imx6ul.ENET1, nil
}

// Exit ends the run with a status (QEMU's exit status under emulation; a
// halt on the board).
func (machine) Exit(code int) { soc.Exit(code, nil) }
