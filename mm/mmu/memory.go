package mmu

import (
	"bytes"
	"errors"
	"fmt"
	"unsafe"

	"yolk/mm"
)

// Memory reads and writes address spaces with plain loads and stores
// through the live MMU, each access a task (Run), and holds every byte to
// the software MMU's view of the same space: it is vmcheck's Memory on
// the image. Off the image there is no live MMU to make one with.
type Memory struct {
	CPU *CPU
	// Compared counts the bytes held to the software MMU's view; Raced
	// the reads the software MMU saw differently once, while reclaim
	// dropped a lazily freed page between the two, and then the same.
	Compared, Raced int64
}

// window is the task window's bytes [va, va+n) as a slice: loads and
// stores through it are the space's memory, by way of the MMU.
func window(va uint32, n int) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(nil), uintptr(va))), n)
}

// Read loads [addr, addr+len(buf)) into buf as a task of as, then reads
// the same bytes through the software MMU and compares. A fault that ends
// the task is returned as the software MMU would return it, with the
// bytes before it in buf.
func (m *Memory) Read(as *mm.AddressSpace, addr uint32, buf []byte) error {
	w := window(addr, len(buf))
	hwErr := m.CPU.Run(as, func() { load(buf, w) })
	soft := make([]byte, len(buf))
	swErr := as.Read(addr, soft)
	if err := sameFault(hwErr, swErr); err != nil {
		return fmt.Errorf("read %#08x+%d: %w", addr, len(buf), err)
	}
	// Both reads stopped at the same fault, or one at a failed swap-in
	// (the device's doing): compare what both transferred.
	n := min(transferred(addr, len(buf), hwErr), transferred(addr, len(buf), swErr))
	if !bytes.Equal(buf[:n], soft[:n]) {
		// Reclaim may have dropped a lazily freed page between the two
		// reads: then a second load sees what the software MMU saw.
		again := make([]byte, len(buf))
		if err := m.CPU.Run(as, func() { load(again, w) }); sameFault(err, swErr) != nil || !bytes.Equal(again[:n], soft[:n]) {
			i := 0
			for buf[i] == soft[i] {
				i++
			}
			return fmt.Errorf("live MMU read %#02x at %#08x, the software MMU %#02x", buf[i], addr+uint32(i), soft[i])
		}
		m.Raced++
	}
	m.Compared += int64(n)
	return hwErr
}

// Write stores data at addr as a task of as, then reads back through the
// software MMU what the stores before any fault wrote.
func (m *Memory) Write(as *mm.AddressSpace, addr uint32, data []byte) error {
	w := window(addr, len(data))
	hwErr := m.CPU.Run(as, func() { store(w, data) })
	n := transferred(addr, len(data), hwErr)
	soft := make([]byte, n)
	if swErr := as.Read(addr, soft); swErr != nil {
		if isSwapError(swErr) {
			return hwErr // the read back could not swap in; the store is judged by the model
		}
		return fmt.Errorf("reading back %#08x+%d after a store: %w", addr, n, swErr)
	}
	if !bytes.Equal(soft, data[:n]) {
		i := 0
		for soft[i] == data[i] {
			i++
		}
		return fmt.Errorf("live MMU stored %#02x at %#08x, the software MMU reads %#02x", data[i], addr+uint32(i), soft[i])
	}
	m.Compared += int64(n)
	return hwErr
}

// transferred is how many bytes of an access of n at addr went through
// before err stopped it.
func transferred(addr uint32, n int, err error) int {
	var fe *mm.FaultError
	if errors.As(err, &fe) {
		return int(fe.Addr - addr)
	}
	return n
}

// sameFault reports how two accesses' errors differ, if they do: the live
// and the software MMU must stop at the same address for the same reason.
func sameFault(hw, sw error) error {
	var hf, sf *mm.FaultError
	switch {
	case hw == nil && sw == nil:
		return nil
	case isSwapError(hw) || isSwapError(sw):
		return nil // a swap-in that failed: the device's doing, either time
	case errors.As(hw, &hf) && errors.As(sw, &sf):
		if hf.Addr == sf.Addr && hf.Reason == sf.Reason && hf.Access == sf.Access {
			return nil
		}
	}
	return fmt.Errorf("the live MMU faulted with %v, the software MMU with %v", hw, sw)
}

func isSwapError(err error) bool {
	var fe *mm.FaultError
	return errors.As(err, &fe) && fe.Reason == mm.SwapError
}

// load and store are the task's code: plain loads and stores, a word at a
// time where aligned. Each calls keepFrame, so that each has a stack
// frame (Run says why).
func load(dst, w []byte) {
	i := 0
	for ; i < len(w) && uintptr(unsafe.Pointer(&w[i]))&3 != 0; i++ {
		dst[i] = w[i]
	}
	for ; i+4 <= len(w); i += 4 {
		v := *(*uint32)(unsafe.Pointer(&w[i]))
		dst[i], dst[i+1], dst[i+2], dst[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	for ; i < len(w); i++ {
		dst[i] = w[i]
	}
	keepFrame()
}

func store(w, src []byte) {
	i := 0
	for ; i < len(w) && uintptr(unsafe.Pointer(&w[i]))&3 != 0; i++ {
		w[i] = src[i]
	}
	for ; i+4 <= len(w); i += 4 {
		*(*uint32)(unsafe.Pointer(&w[i])) = uint32(src[i]) | uint32(src[i+1])<<8 | uint32(src[i+2])<<16 | uint32(src[i+3])<<24
	}
	for ; i < len(w); i++ {
		w[i] = src[i]
	}
	keepFrame()
}

//go:noinline
func keepFrame() {}
