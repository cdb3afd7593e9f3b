//go:build tamago && arm

package mx6ullevk

import (
	"io"
	"sync"

	"github.com/usbarmory/tamago/soc/nxp/imx6ul"

	soc "yolk/board/imx6ul"
)

// uart1IRQ is UART1's interrupt: GIC SPI 26 (IMX6ULRM, table 3-1).
const uart1IRQ = imx6ul.BASE_IRQ + 26

var console = sync.OnceValue(func() *soc.Console { return soc.NewConsole(imx6ul.UART1, uart1IRQ) })

// Console returns the console's input, UART1 (QEMU's first -serial).
// Call it after Init, which starts interrupt handling.
func (machine) Console() io.Reader { return console() }
