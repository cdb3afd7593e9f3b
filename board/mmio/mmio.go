// Package mmio reads and writes 32-bit device registers at physical
// addresses, which TamaGo maps flat: the ENET controller's and the UART's
// registers that yolk drives itself (net/stack, board/imx6ul). It is
// meaningful only on the board; on the host a Reg is an address nothing
// maps.
package mmio

import (
	"sync/atomic"
	"unsafe"
)

// Reg is a 32-bit device register at a physical address. Loads and
// stores are atomic, so the compiler neither splits nor drops them, and
// on ARMv7 they carry the barriers that order them after the memory
// stores that precede them (DMA descriptors, say).
type Reg uint32

func (r Reg) ptr() *uint32 {
	var p unsafe.Pointer
	return (*uint32)(unsafe.Add(p, uintptr(r)))
}

// Read loads the register.
func (r Reg) Read() uint32 { return atomic.LoadUint32(r.ptr()) }

// Write stores v in the register.
func (r Reg) Write(v uint32) { atomic.StoreUint32(r.ptr(), v) }
