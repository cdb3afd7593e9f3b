// Package mx6ullevk is the yolk board package for the NXP MCIMX6ULL-EVK, the
// machine that QEMU emulates as -machine mcimx6ul-evk. Importing it on the
// image selects the board: it pulls in TamaGo's board support (clocks,
// UART1 console, ENET PHY setup) and yolk's i.MX6UL support (board/imx6ul:
// the memory map, the runtime's RAM size, the pool, the command line), and
// adds the board's identity, Ethernet and exit.
//
// The layout is portable data so host tests validate it; the hardware half
// is in files built only for GOOS=tamago.
package mx6ullevk

import (
	"yolk/board"
	"yolk/board/imx6ul"
)

// Layout is the board's memory map and identity.
var Layout = board.Info{
	Name:     "mx6ullevk",
	Model:    "NXP MCIMX6ULL-EVK",
	Console:  "UART1",
	Ethernet: "ENET1",
	Memory:   imx6ul.Memory,
}
