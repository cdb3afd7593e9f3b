// Package usbarmory is the yolk board package for the USB armory Mk II.
// Importing it on the image selects the board: it pulls in TamaGo's Mk II
// support (UART2 console on the debug accessory, PMIC, LEDs) and yolk's
// i.MX6UL support (board/imx6ul: the memory map, the runtime's RAM size,
// the pool, the command line), and adds the board's identity, Ethernet and
// exit.
//
// The layout is portable data so host tests validate it; the hardware half
// is in files built only for GOOS=tamago.
package usbarmory

import (
	"yolk/board"
	"yolk/board/imx6ul"
)

// Layout is the board's memory map and identity. Only the UA-MKII-LAN
// model wires ENET2 to a PHY; on the others the Ethernet field is still
// ENET2 and link setup reports the absence.
var Layout = board.Info{
	Name:     "usbarmory",
	Model:    "USB armory Mk II",
	Console:  "UART2",
	Ethernet: "ENET2",
	Memory:   imx6ul.Memory,
}
