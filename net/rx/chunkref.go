package rx

import (
	"unsafe"

	"gvisor.dev/gvisor/pkg/buffer"
)

// gVisor does not say when a chunk of its buffer pools is freed, and TCP
// keeps a clone of each segment's packet (sharing its chunks) after the
// packet itself is released. The receiver keeps a view of each charged
// chunk of its own and reads the chunk's reference count: when only its
// own view is left, the stack has let go of the memory.
//
// This reads two unexported parts of gVisor's buffer package, pinned by
// go.mod and checked by TestChunkRefs: View's chunk pointer, by mirroring
// View's layout, and chunkRefs.ReadRefs, by linkname (the count's atomic
// layout differs between 32- and 64-bit).

// viewLayout mirrors buffer.View.
type viewLayout struct {
	buffer.ViewEntry
	read, write int
	chunk       unsafe.Pointer // *chunk, whose first field is its chunkRefs
}

// The mirror must be exactly as large as View; a field added or moved
// breaks this line's build (a negative array length) before it breaks a
// charge.
var _ [unsafe.Sizeof(buffer.View{}) - unsafe.Sizeof(viewLayout{})]byte
var _ [unsafe.Sizeof(viewLayout{}) - unsafe.Sizeof(buffer.View{})]byte

//go:linkname chunkReadRefs gvisor.dev/gvisor/pkg/buffer.(*chunkRefs).ReadRefs
func chunkReadRefs(refs unsafe.Pointer) int64

// chunkRefs returns the number of references to v's chunk, v's own
// included.
func chunkRefs(v *buffer.View) int64 {
	return chunkReadRefs((*viewLayout)(unsafe.Pointer(v)).chunk)
}
