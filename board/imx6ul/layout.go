package imx6ul

import "yolk/board"

// Both boards have one 512 MiB DDR3 device behind the MMDC at 0x80000000
// (IMX6ULLRM, 2.2 ARM Platform Memory Map); QEMU's mcimx6ul-evk puts -m RAM
// at the same address. The 1 GiB USB armory variant boots with the same
// map and leaves the upper half unused.
const (
	DDRStart = 0x80000000
	DDRSize  = 512 << 20

	// RuntimeSize is TamaGo's ddrSize: the Go runtime (text, heap,
	// goroutine stacks) lives in [DDRStart, DDRStart+RuntimeSize). The
	// image is linked at DDRStart+0x10000; the first 64 KiB hold TamaGo's
	// vector table and its own L1/L2 tables.
	RuntimeSize = 128 << 20

	// DMASize is enough for the ENET descriptor rings and frame buffers
	// with room to grow the rings; 4 MiB keeps the pool's end aligned to
	// 4 MiB (an order-10 buddy block).
	DMASize = 4 << 20
)

// Memory is the memory map every i.MX6UL board of yolk's has: the runtime
// region, the pool, and the DMA region at the top of DDR.
var Memory = board.Split(board.Region{Start: DDRStart, Size: DDRSize}, RuntimeSize, DMASize)
