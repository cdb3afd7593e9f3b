//go:build tamago && arm

package usbarmory

import (
	"io"
	"sync"

	"github.com/usbarmory/tamago/soc/nxp/imx6ul"

	soc "yolk/board/imx6ul"
)

// uart2IRQ is UART2's interrupt: GIC SPI 27 (IMX6ULRM, table 3-1).
const uart2IRQ = imx6ul.BASE_IRQ + 27

var console = sync.OnceValue(func() *soc.Console { return soc.NewConsole(imx6ul.UART2, uart2IRQ) })

// Console returns the console's input, UART2: the debug accessory's
// serial port on the Mk II (QEMU's second -serial). Call it after Init,
// which starts interrupt handling.
func (machine) Console() io.Reader { return console() }
