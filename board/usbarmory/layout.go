// Package usbarmory is the yolk board package for the USB armory Mk II.
// Importing it on the image selects the board: it pulls in TamaGo's Mk II
// support (UART2 console on the debug accessory, PMIC, LEDs), sets the Go
// runtime's RAM size and provides the yolk memory map, Ethernet and exit.
//
// The layout is portable data so host tests validate it; the hardware half
// is in files built only for GOOS=tamago.
package usbarmory

import "yolk/board"

// The standard USB armory Mk II has one 512 MiB DDR3 device behind the MMDC
// at 0x80000000 (i.MX6ULZ/i.MX6UL, IMX6ULLRM 2.2 ARM Platform Memory Map).
// The 1 GiB variant boots with the same map and leaves the upper half
// unused.
const (
	ddrStart = 0x80000000
	ddrSize  = 512 << 20

	// RuntimeSize is TamaGo's ddrSize (see board/mx6ullevk).
	RuntimeSize = 128 << 20

	dmaSize = 4 << 20
)

// Layout is the board's memory map and identity. Only the UA-MKII-LAN
// model wires ENET2 to a PHY; on the others the Ethernet field is still
// ENET2 and link setup reports the absence.
var Layout = board.Info{
	Name:     "usbarmory",
	Model:    "USB armory Mk II",
	Console:  "UART2",
	Ethernet: "ENET2",
	Memory:   board.Split(board.Region{Start: ddrStart, Size: ddrSize}, RuntimeSize, dmaSize),
}
