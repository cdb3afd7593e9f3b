package mm

import (
	"errors"
	"fmt"

	"yolk/mm/pgtable"
)

// Errors of the address-space calls, named after the errno Linux returns.
var (
	// ErrInvalid: a misaligned address, a zero or overflowing length, a
	// range outside the task window, an unknown advice (EINVAL).
	ErrInvalid = errors.New("mm: invalid argument")
	// ErrNoRoom: no free range of the requested size in the window (ENOMEM).
	ErrNoRoom = errors.New("mm: no room in the address space")
	// ErrNotMapped: part of the range is not mapped (ENOMEM from mprotect
	// and madvise).
	ErrNotMapped = errors.New("mm: range not fully mapped")
	// ErrExited: the address space has exited.
	ErrExited = errors.New("mm: address space has exited")
	// ErrBusy: a huge page could not be split now, because a page-table
	// lock of a space mapping it was taken or someone else holds a
	// reference to it (EAGAIN from split_huge_page); it stays whole.
	ErrBusy = errors.New("mm: page busy")
)

func errorf(format string, args ...any) error { return fmt.Errorf("mm: "+format, args...) }

// FaultReason says why a fault could not be resolved: the si_code a task
// would see with SIGSEGV, or the VM_FAULT_* outcome that is not a signal.
type FaultReason uint8

const (
	// MapError: no VMA covers the address (SEGV_MAPERR).
	MapError FaultReason = iota + 1
	// AccessError: a VMA covers it but forbids the access (SEGV_ACCERR).
	AccessError
	// OutOfMemory: a page (or page table) could not be allocated
	// (VM_FAULT_OOM).
	OutOfMemory
	// SwapError: the page could not be read back from swap, or from the
	// region a mapping maps (VM_FAULT_SIGBUS).
	SwapError
)

var reasonNames = [...]string{MapError: "SEGV_MAPERR", AccessError: "SEGV_ACCERR", OutOfMemory: "VM_FAULT_OOM", SwapError: "VM_FAULT_SIGBUS"}

func (r FaultReason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return fmt.Sprintf("FaultReason(%d)", uint8(r))
}

// FaultError is a fault that could not be resolved: the access is refused
// (what a task would get a signal for) or memory ran out.
type FaultError struct {
	Addr   uint32
	Access pgtable.Access
	Reason FaultReason
	Err    error // the allocation or read error behind OutOfMemory/SwapError
}

func (e *FaultError) Error() string {
	s := fmt.Sprintf("mm: %v fault at %#08x: %v", e.Access, e.Addr, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *FaultError) Unwrap() error { return e.Err }
