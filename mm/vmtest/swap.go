package vmtest

import (
	"fmt"
	"sync"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// RAMSwap is a swap device in Go memory, enough to drive mm's swap PTEs:
// slots hold a page's bytes and a reference count (swap_map).
type RAMSwap struct {
	Pool *phys.Pool

	mu    sync.Mutex
	slots map[uint32]*slot
	next  uint32
}

type slot struct {
	data  [pgtable.PageSize]byte
	count int
	// written is closed once the slot holds its page's data: a swap-in
	// of a slot reclaim has not written yet waits for it, as a fault
	// waits on the page in the swap cache while it is written out.
	written chan struct{}
}

// NewRAMSwap returns an empty device that allocates swapped-in pages from pool.
func NewRAMSwap(pool *phys.Pool) *RAMSwap {
	return &RAMSwap{Pool: pool, slots: map[uint32]*slot{}}
}

// Alloc takes a new slot with one reference, the swap cache's
// (folio_alloc_swap); Writeback fills it. Reclaim allocates the slot,
// replaces the page's PTEs with it, and only then writes the page out,
// when no PTE can change the page any more.
func (s *RAMSwap) Alloc() pgtable.SwapEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	s.slots[s.next] = &slot{count: 1, written: make(chan struct{})}
	return pgtable.SwapEntry{Type: 0, Offset: s.next}
}

// Writeback copies the page at pfn to the slot e, which the caller holds a
// reference on (swap_writepage).
func (s *RAMSwap) Writeback(e pgtable.SwapEntry, pfn phys.PFN) error {
	b, err := s.Pool.Frame(pfn)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, err := s.lookup(e)
	if err != nil {
		return err
	}
	select {
	case <-sl.written:
		return fmt.Errorf("ramswap: %v written twice", e)
	default:
	}
	copy(sl.data[:], b)
	close(sl.written)
	return nil
}

// Store copies the page at pfn to a new slot with one reference (the swap
// cache's) and returns its entry: Alloc and Writeback at once, for a
// caller that nothing else races with.
func (s *RAMSwap) Store(pfn phys.PFN) (pgtable.SwapEntry, error) {
	e := s.Alloc()
	if err := s.Writeback(e, pfn); err != nil {
		s.Free(e)
		return pgtable.SwapEntry{}, err
	}
	return e, nil
}

// Slots is the number of slots in use.
func (s *RAMSwap) Slots() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.slots)
}

func (s *RAMSwap) lookup(e pgtable.SwapEntry) (*slot, error) {
	sl := s.slots[e.Offset]
	if e.Type != 0 || sl == nil {
		return nil, fmt.Errorf("ramswap: %v is not in use", e)
	}
	return sl, nil
}

// Dup implements mm.Swap.
func (s *RAMSwap) Dup(e pgtable.SwapEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, err := s.lookup(e)
	if err == nil {
		sl.count++
	}
	return err
}

// Free implements mm.Swap.
func (s *RAMSwap) Free(e pgtable.SwapEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, err := s.lookup(e)
	if err != nil {
		panic(err) // mm freed a slot it did not hold: a bug the test must see
	}
	if sl.count--; sl.count == 0 {
		delete(s.slots, e.Offset)
	}
}

// Count implements mm.Swap.
func (s *RAMSwap) Count(e pgtable.SwapEntry) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl, err := s.lookup(e); err == nil {
		return sl.count
	}
	return 0
}

// In implements mm.Swap: a new page with the slot's bytes.
func (s *RAMSwap) In(e pgtable.SwapEntry) (phys.PFN, error) {
	s.mu.Lock()
	sl, err := s.lookup(e)
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	<-sl.written
	pfn, err := s.Pool.AllocPage(phys.User &^ phys.Zeroed)
	if err != nil {
		return 0, err
	}
	b, _ := s.Pool.Frame(pfn)
	s.mu.Lock()
	copy(b, sl.data[:])
	s.mu.Unlock()
	return pfn, nil
}
