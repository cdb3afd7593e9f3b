package phys

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// Sizes. A huge page is one ARMv7 section (1 MiB, order 8) and a pageblock
// is one huge page, as Linux sets pageblock_order to HPAGE_PMD_ORDER.
const (
	PageShift = 12
	PageSize  = 1 << PageShift

	// MaxOrder is the largest block the buddy allocator keeps: 2^10 frames,
	// 4 MiB (Linux's MAX_PAGE_ORDER).
	MaxOrder = 10
	// NrOrders is the number of block sizes, orders 0 to MaxOrder.
	NrOrders = MaxOrder + 1

	// HugeOrder is the order of a 1 MiB huge page (an ARMv7 section).
	HugeOrder = 8
	// PageblockOrder is the order of the unit migrate types are kept in.
	PageblockOrder = HugeOrder
	// PageblockFrames is the number of frames in a pageblock.
	PageblockFrames = 1 << PageblockOrder
)

// PFN is a page frame number: a physical address shifted right by
// PageShift. Frames are named by PFN everywhere outside this package.
type PFN uint32

// Addr returns the physical address of the frame.
func (f PFN) Addr() uint64 { return uint64(f) << PageShift }

func (f PFN) String() string { return fmt.Sprintf("pfn %#x", uint32(f)) }

// Flags are a frame's PG_* flags. Names and meanings follow Linux's
// include/linux/page-flags.h where a Linux flag means the same thing.
type Flags uint32

const (
	PGLocked      Flags = 1 << iota // page is locked for I/O or migration
	PGReferenced                    // referenced since last scanned (LRU aging)
	PGUptodate                      // contents are valid
	PGDirty                         // contents differ from backing store
	PGLRU                           // on an LRU list (mm owns the links)
	PGActive                        // on the active LRU list
	PGWorkingset                    // refaulted recently
	PGWriteback                     // being written to backing store
	PGReclaim                       // to be reclaimed when writeback ends
	PGSwapBacked                    // anonymous: backed by swap, not a file
	PGSwapCache                     // in the swap cache (Private holds the entry)
	PGUnevictable                   // may not be reclaimed
	PGMlocked                       // mlocked
	PGPrivate                       // Private is in use
	PGReserved                      // never freed: the zero page, boot data
	PGHead                          // head of a compound page
	PGTail                          // tail of a compound page
	PGPfmemalloc                    // allocated from the reserve below min
	PGBuddy                         // head of a free block on a buddy list (phys only)
	PGPCP                           // free, on the pageset (phys only)
	nrFlags       = iota
)

var flagNames = [nrFlags]string{
	"locked", "referenced", "uptodate", "dirty", "lru", "active", "workingset",
	"writeback", "reclaim", "swapbacked", "swapcache", "unevictable", "mlocked",
	"private", "reserved", "head", "tail", "pfmemalloc", "buddy", "pcp",
}

// String renders flags the way Linux's %pGp does: names joined by '|'.
func (f Flags) String() string {
	if f == 0 {
		return "0"
	}
	var b strings.Builder
	for i := 0; i < nrFlags; i++ {
		if f&(1<<i) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('|')
		}
		b.WriteString(flagNames[i])
	}
	if rest := f &^ (1<<nrFlags - 1); rest != 0 {
		fmt.Fprintf(&b, "|%#x", uint32(rest))
	}
	return b.String()
}

// checkAtFree are the flags that make freeing a frame a bug (Linux's
// PAGE_FLAGS_CHECK_AT_FREE): the frame is still on a list, under I/O,
// pinned in memory, or never to be freed.
const checkAtFree = PGLocked | PGLRU | PGWriteback | PGSwapCache |
	PGUnevictable | PGMlocked | PGReserved | PGBuddy | PGPCP

// Page is the descriptor of one frame: Linux's struct page.
//
// While the frame is free every field belongs to phys. While it is
// allocated, the owner fields (Mapping, Index, Private) and the list links
// belong to the owner; flags, refcount and mapcount may be changed by
// anyone holding a reference, with the atomic methods below.
type Page struct {
	flags    uint32 // Flags; atomic while allocated
	refcount int32  // atomic; 0 while free and on compound tails
	mapcount int32  // atomic; page table entries mapping the frame (mm)
	order    uint8  // free: block order; allocated head: allocation order
	mt       uint8  // migrate type the block was allocated as, or listed as while free
	_        uint16
	next     uint32 // list links, as frame index + 1 (0: none)
	prev     uint32
	head     uint32 // tails: index + 1 of the compound head

	// Mapping is the owner's object for the frame: mm's anon_vma for an
	// anonymous page. phys never looks into it and clears it on free.
	Mapping any
	// Index is the frame's page offset in its mapping (Linux's page->index).
	Index uint64
	// Private is owner data: the swap entry of a swap-cache page.
	Private uint64
}

// Flags returns a snapshot of the frame's flags.
func (p *Page) Flags() Flags { return Flags(atomic.LoadUint32(&p.flags)) }

// Test reports whether every flag in f is set.
func (p *Page) Test(f Flags) bool { return p.Flags()&f == f }

// Set sets the flags in f.
func (p *Page) Set(f Flags) { atomic.OrUint32(&p.flags, uint32(f)) }

// Clear clears the flags in f.
func (p *Page) Clear(f Flags) { atomic.AndUint32(&p.flags, ^uint32(f)) }

// TestAndSet sets f and reports whether all of it was already set
// (Linux's TestSetPageLocked and friends).
func (p *Page) TestAndSet(f Flags) bool {
	return Flags(atomic.OrUint32(&p.flags, uint32(f)))&f == f
}

// TestAndClear clears f and reports whether any of it was set
// (TestClearPageReferenced and friends).
func (p *Page) TestAndClear(f Flags) bool {
	return Flags(atomic.AndUint32(&p.flags, ^uint32(f)))&f != 0
}

// RefCount is the number of references to the frame (page_count).
func (p *Page) RefCount() int32 { return atomic.LoadInt32(&p.refcount) }

// MapCount is the number of page table entries mapping the frame
// (page_mapcount); mm maintains it.
func (p *Page) MapCount() int32 { return atomic.LoadInt32(&p.mapcount) }

// IncMapCount adds a mapping and returns the new count.
func (p *Page) IncMapCount() int32 { return atomic.AddInt32(&p.mapcount, 1) }

// DecMapCount removes a mapping and returns the new count.
func (p *Page) DecMapCount() int32 { return atomic.AddInt32(&p.mapcount, -1) }

// Order is the order of the allocation a head frame starts (0 for a
// single frame); for a compound page, its compound order.
func (p *Page) Order() int { return int(p.order) }

// Pfmemalloc reports whether the frame was handed out from the reserve.
func (p *Page) Pfmemalloc() bool { return p.Test(PGPfmemalloc) }

// Compound reports whether the frame is part of a compound page.
func (p *Page) Compound() bool { return p.Flags()&(PGHead|PGTail) != 0 }
