package mm

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// Swap is what mm needs from a swap device for the swap PTEs it keeps:
// the reclaim code that owns the device installs it.
//
// The hooks are called under mm's locks (see the package doc): Dup, Free
// and Count with a page-table lock held, so they must not wait for I/O or
// memory (a short lock of their own is fine); In with only the mmap lock
// held, so it may do both.
type Swap interface {
	// Dup takes a reference on a slot for a new swap PTE: fork copied one,
	// or try_to_unmap installed one (swap_duplicate).
	Dup(pgtable.SwapEntry) error
	// Free drops a swap PTE's reference on its slot (swap_free).
	Free(pgtable.SwapEntry)
	// In returns a page holding the slot's data, with a reference for the
	// caller (swapin_readahead). mm maps it and then calls Free for the
	// PTE it replaced.
	In(pgtable.SwapEntry) (phys.PFN, error)
	// Count is the number of references to a slot (swap_swapcount), for
	// smaps' SwapPss.
	Count(pgtable.SwapEntry) int
}

// Config sets up a Manager.
type Config struct {
	Pool *phys.Pool
	// Swap, if set, backs swap PTEs. Without it TryToUnmap can only
	// discard, and a swap PTE is never made.
	Swap Swap
	// VerifyZeroed checks that every page handed to an address space is
	// zero before it is mapped, and fails the fault if not. A debug aid
	// for tests and the vm scenario: it reads every new page once more.
	VerifyZeroed bool
}

// Manager is the memory manager of the machine: the address spaces it has
// made, the shared zero page, and the counters /proc/meminfo reports.
type Manager struct {
	cfg  Config
	pool *phys.Pool

	zeroPFN phys.PFN
	zeroPA  uint32

	mu      sync.Mutex // the registry
	spaces  map[int]*AddressSpace
	lastPID int

	nrAnonPages atomic.Int64 // anonymous pages mapped at least once (NR_ANON_MAPPED)
	nrAnonVMAs  atomic.Int64
	nrAVCs      atomic.Int64
	anonVMASeq  atomic.Uint64
}

// New makes a Manager over cfg.Pool and allocates the zero page.
func New(cfg Config) (*Manager, error) {
	if cfg.Pool == nil {
		return nil, errorf("no page allocator")
	}
	zero, err := cfg.Pool.AllocPage(phys.Kernel | phys.Zeroed)
	if err != nil {
		return nil, fmt.Errorf("mm: zero page: %w", err)
	}
	cfg.Pool.Page(zero).Set(phys.PGReserved)
	return &Manager{cfg: cfg, pool: cfg.Pool, zeroPFN: zero, zeroPA: uint32(zero.Addr()), spaces: map[int]*AddressSpace{}}, nil
}

// Pool is the page allocator the Manager maps pages from.
func (m *Manager) Pool() *phys.Pool { return m.pool }

// ZeroPFN is the frame of the shared zero page.
func (m *Manager) ZeroPFN() phys.PFN { return m.zeroPFN }

// Close releases the zero page. Every address space must have exited.
func (m *Manager) Close() error {
	m.mu.Lock()
	n := len(m.spaces)
	m.mu.Unlock()
	if n != 0 {
		return errorf("close: %d address spaces still live", n)
	}
	pg := m.pool.Page(m.zeroPFN)
	pg.Clear(phys.PGReserved)
	return m.pool.Put(m.zeroPFN)
}

// NewAddressSpace makes an empty address space with the next free PID.
func (m *Manager) NewAddressSpace() (*AddressSpace, error) {
	pt, err := pgtable.New(m.pool, phys.Kernel)
	if err != nil {
		return nil, err
	}
	as := &AddressSpace{mgr: m, pt: pt}
	m.mu.Lock()
	for {
		m.lastPID++
		if m.lastPID >= 1<<22 { // PID_MAX_LIMIT
			m.lastPID = 1
		}
		if m.spaces[m.lastPID] == nil {
			break
		}
	}
	as.pid = m.lastPID
	m.spaces[as.pid] = as
	m.mu.Unlock()
	return as, nil
}

// AddressSpace returns the live address space with the given PID, or nil.
func (m *Manager) AddressSpace(pid int) *AddressSpace {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.spaces[pid]
}

// AddressSpaces returns the live address spaces by PID.
func (m *Manager) AddressSpaces() []*AddressSpace {
	m.mu.Lock()
	out := make([]*AddressSpace, 0, len(m.spaces))
	for _, as := range m.spaces {
		out = append(out, as)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

func (m *Manager) unregister(as *AddressSpace) {
	m.mu.Lock()
	delete(m.spaces, as.pid)
	m.mu.Unlock()
}

// Stats are mm's counters.
type Stats struct {
	AddressSpaces  int
	VMAs           int
	AnonPages      int64 // pages mapped anonymously (AnonPages in meminfo)
	PageTables     int64 // frames used by page tables
	AnonVMAs       int64
	AnonVMAChains  int64
	SwapEntries    int64 // swap PTEs
	ResidentPages  int64 // sum of every space's resident anon pages
	ZeroPageMapped int64 // PTEs mapping the zero page
}

// Stats gathers the counters; each address space is read under its
// page-table lock.
func (m *Manager) Stats() Stats {
	s := Stats{AnonPages: m.nrAnonPages.Load(), AnonVMAs: m.nrAnonVMAs.Load(), AnonVMAChains: m.nrAVCs.Load()}
	for _, as := range m.AddressSpaces() {
		as.ptl.Lock()
		s.AddressSpaces++
		s.VMAs += as.nrVMAs
		if as.pt != nil {
			s.PageTables += int64(as.pt.Pages())
		}
		s.ZeroPageMapped += as.zeroMapped
		s.SwapEntries += as.swapents
		s.ResidentPages += as.rss
		as.ptl.Unlock()
	}
	return s
}

// Meminfo returns /proc/meminfo: phys's lines with mm's in Linux's order.
func (m *Manager) Meminfo() []phys.MeminfoLine {
	s := m.Stats()
	kb := func(frames int64) uint64 { return uint64(frames) * (phys.PageSize >> 10) }
	return append(m.pool.Meminfo(),
		phys.MeminfoLine{Name: "AnonPages", KB: kb(s.AnonPages)},
		phys.MeminfoLine{Name: "PageTables", KB: kb(s.PageTables)},
	)
}
