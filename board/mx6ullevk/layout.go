// Package mx6ullevk is the yolk board package for the NXP MCIMX6ULL-EVK, the
// machine that QEMU emulates as -machine mcimx6ul-evk. Importing it on the
// image selects the board: it pulls in TamaGo's board support (clocks,
// UART1 console, ENET PHY setup), sets the Go runtime's RAM size and
// provides the yolk memory map, Ethernet and exit.
//
// The layout is portable data so host tests validate it; the hardware half
// is in files built only for GOOS=tamago.
package mx6ullevk

import "yolk/board"

// DDR on the MCIMX6ULL-EVK is one 512 MiB DDR3 device behind the MMDC at
// 0x80000000 (IMX6ULLRM, 2.2 ARM Platform Memory Map); QEMU's
// mcimx6ul-evk puts -m RAM at the same address.
const (
	ddrStart = 0x80000000
	ddrSize  = 512 << 20

	// RuntimeSize is TamaGo's ddrSize: the Go runtime (text, heap,
	// goroutine stacks) lives in [ddrStart, ddrStart+RuntimeSize). The
	// image is linked at ddrStart+0x10000; the first 64 KiB hold TamaGo's
	// vector table and its own L1/L2 tables.
	RuntimeSize = 128 << 20

	// dmaSize is enough for ENET1's descriptor rings and frame buffers
	// with room to grow the rings; 4 MiB keeps the pool's end aligned to
	// 4 MiB (an order-10 buddy block).
	dmaSize = 4 << 20
)

// Layout is the board's memory map and identity.
var Layout = board.Info{
	Name:     "mx6ullevk",
	Model:    "NXP MCIMX6ULL-EVK",
	Console:  "UART1",
	Ethernet: "ENET1",
	Memory:   board.Split(board.Region{Start: ddrStart, Size: ddrSize}, RuntimeSize, dmaSize),
}
