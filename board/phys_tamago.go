//go:build tamago

package board

import "unsafe"

// Bytes returns the region as a byte slice over physical memory. TamaGo's
// MMU maps DDR flat (virtual = physical), and the region is outside the Go
// heap, so the garbage collector never looks at or moves it. The pointer is
// built with unsafe.Add from nil, the form TamaGo's dma package uses for
// the same job.
func (r Region) Bytes() []byte {
	var p unsafe.Pointer
	return unsafe.Slice((*byte)(unsafe.Add(p, uintptr(r.Start))), r.Size)
}
