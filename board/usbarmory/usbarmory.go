//go:build tamago && arm

package usbarmory

import (
	"errors"

	"github.com/usbarmory/tamago/board/usbarmory/mk2" // UART2 console, PMIC, LEDs
	"github.com/usbarmory/tamago/soc/nxp/enet"
	"github.com/usbarmory/tamago/soc/nxp/imx6ul"

	"yolk/board"
	soc "yolk/board/imx6ul"
)

// Machine is the board the image runs on.
// Its console is UART2, the debug accessory's serial port (QEMU's second -serial).
var Machine = machine{soc.Machine{Layout: Layout, ConsoleUART: imx6ul.UART2, ConsoleIRQ: imx6ul.BASE_IRQ + 27}}

type machine struct{ soc.Machine }

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
