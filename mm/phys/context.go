package phys

import (
	"fmt"
	"strings"
)

// Context says what an allocation may do to get memory, replacing Linux's
// GFP flags and the task flags (PF_MEMALLOC) that change their meaning.
// The flags combine; the named contexts below are the usual combinations.
type Context uint32

const (
	// DirectReclaim: the caller may sleep and reclaim memory itself
	// (__GFP_DIRECT_RECLAIM).
	DirectReclaim Context = 1 << iota
	// StartIO: reclaim on the caller's behalf may start I/O, such as
	// writing pages to swap (__GFP_IO). Without it, reclaim only drops
	// clean memory.
	StartIO
	// Atomic: the caller never sleeps, and may dip below min, down to 3/8
	// of it, to succeed (GFP_ATOMIC: ALLOC_MIN_RESERVE|ALLOC_NON_BLOCK).
	Atomic
	// Memalloc: the caller frees memory (reclaim, and the I/O it waits
	// for), and may take everything below min (PF_MEMALLOC or
	// __GFP_MEMALLOC). It never reclaims itself: that would recurse.
	// Frames it gets only because of this are marked PGPfmemalloc.
	Memalloc
	// NoMemalloc: never use the reserve, even with Memalloc
	// (__GFP_NOMEMALLOC).
	NoMemalloc
	// Zeroed: clear the memory before returning it (__GFP_ZERO).
	Zeroed
	// Compound: make a block of order > 0 one compound page, head and
	// tails (__GFP_COMP).
	Compound
	// MovableAlloc and ReclaimableAlloc choose the migrate type
	// (__GFP_MOVABLE, __GFP_RECLAIMABLE); neither means Unmovable.
	MovableAlloc
	ReclaimableAlloc
	nrContextFlags = iota
)

// Named contexts.
const (
	// Kernel is GFP_KERNEL: may sleep, reclaim and start I/O.
	Kernel = DirectReclaim | StartIO
	// NoIO is GFP_NOIO: may reclaim clean memory but start no I/O (block
	// device and network code that reclaim itself may wait on).
	NoIO = DirectReclaim
	// Nowait is GFP_NOWAIT: neither sleeps nor dips into the reserve.
	Nowait Context = 0
	// User is GFP_HIGHUSER_MOVABLE|__GFP_ZERO: an anonymous page for a
	// task.
	User = Kernel | MovableAlloc | Zeroed
	// HugeUser is a transparent huge page: movable, zeroed, compound.
	HugeUser = User | Compound
)

var contextNames = [nrContextFlags]string{
	"DirectReclaim", "StartIO", "Atomic", "Memalloc", "NoMemalloc", "Zeroed",
	"Compound", "Movable", "Reclaimable",
}

// String names the flags, e.g. "DirectReclaim|StartIO|Zeroed"; the
// context with no flags is "Nowait".
func (c Context) String() string {
	if c == 0 {
		return "Nowait"
	}
	var parts []string
	for i := 0; i < nrContextFlags; i++ {
		if c&(1<<i) != 0 {
			parts = append(parts, contextNames[i])
		}
	}
	if rest := c &^ (1<<nrContextFlags - 1); rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint32(rest)))
	}
	return strings.Join(parts, "|")
}

// migrateType is the migrate type an allocation in c is grouped with.
func (p *Pool) migrateType(c Context) MigrateType {
	switch {
	case !p.grouping:
		return Unmovable
	case c&MovableAlloc != 0:
		return Movable
	case c&ReclaimableAlloc != 0:
		return Reclaimable
	}
	return Unmovable
}

// mayUseReserve reports whether c may allocate below min with no
// watermark at all (Linux's gfp_pfmemalloc_allowed).
func (c Context) mayUseReserve() bool { return c&Memalloc != 0 && c&NoMemalloc == 0 }

// throttleable reports whether c is an ordinary direct reclaimer, the
// kind that waits when half of the reserve is gone.
func (c Context) throttleable() bool {
	return c&DirectReclaim != 0 && c&(Memalloc|Atomic) == 0
}
