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
	// THP is the initial transparent_hugepage/enabled policy; the zero
	// value is always, Linux's default. SetTHPEnabled changes it.
	THP THPMode
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

	nrAnonPages atomic.Int64 // anonymous frames mapped at least once (NR_ANON_MAPPED)
	nrAnonVMAs  atomic.Int64
	nrAVCs      atomic.Int64
	anonVMASeq  atomic.Uint64

	thpMode atomic.Int32 // THPMode
	thp     thpStats

	// The huge zero page, made on first use and kept until Close.
	hugeZeroMu  sync.Mutex
	hugeZeroPA  atomic.Uint32
	hugeZeroPFN phys.PFN
	// hugeZeroChecks picks the frame of it Check reads next.
	hugeZeroChecks atomic.Uint32

	// The deferred split queue: compound pages mapped in part.
	deferredMu sync.Mutex
	deferred   map[phys.PFN]struct{}
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
	m := &Manager{cfg: cfg, pool: cfg.Pool, zeroPFN: zero, zeroPA: uint32(zero.Addr()),
		spaces: map[int]*AddressSpace{}, deferred: map[phys.PFN]struct{}{}}
	if err := m.SetTHPEnabled(cfg.THP); err != nil {
		m.pool.Page(zero).Clear(phys.PGReserved)
		m.pool.Put(zero)
		return nil, err
	}
	return m, nil
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
	err := m.pool.Put(m.zeroPFN)
	if m.hugeZeroPA.Load() != 0 {
		m.pool.Page(m.hugeZeroPFN).Clear(phys.PGReserved)
		if herr := m.pool.Put(m.hugeZeroPFN); err == nil {
			err = herr
		}
		m.hugeZeroPA.Store(0)
	}
	return err
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
	AnonHugePages  int64 // compound pages mapped whole by a section (NR_ANON_THPS)
	HugeZeroMapped int64 // sections mapping the huge zero page
	DeferredSplit  int   // compound pages on the deferred split queue
}

// Stats gathers the counters; each address space is read under its
// page-table lock.
func (m *Manager) Stats() Stats {
	s := Stats{AnonPages: m.nrAnonPages.Load(), AnonVMAs: m.nrAnonVMAs.Load(), AnonVMAChains: m.nrAVCs.Load(),
		AnonHugePages: m.thp.nrAnonTHPs.Load()}
	m.deferredMu.Lock()
	s.DeferredSplit = len(m.deferred)
	m.deferredMu.Unlock()
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
		s.HugeZeroMapped += as.hugeZeroMapped
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
		phys.MeminfoLine{Name: "AnonHugePages", KB: kb(s.AnonHugePages * hugeNr)},
	)
}

// Vmstat returns /proc/vmstat: phys's counters, then mm's, with Linux's
// names.
func (m *Manager) Vmstat() []phys.VmstatLine {
	s := m.Stats()
	t := &m.thp
	return append(m.pool.Vmstat(),
		phys.VmstatLine{Name: "nr_anon_pages", Value: uint64(s.AnonPages)},
		phys.VmstatLine{Name: "nr_page_table_pages", Value: uint64(s.PageTables)},
		phys.VmstatLine{Name: "nr_anon_transparent_hugepages", Value: uint64(s.AnonHugePages)},
		phys.VmstatLine{Name: "pglazyfree", Value: t.lazyfree.Load()},
		phys.VmstatLine{Name: "pglazyfreed", Value: t.lazyfreed.Load()},
		phys.VmstatLine{Name: "thp_fault_alloc", Value: t.faultAlloc.Load()},
		phys.VmstatLine{Name: "thp_fault_fallback", Value: t.faultFallback.Load()},
		phys.VmstatLine{Name: "thp_split_page", Value: t.splitPage.Load()},
		phys.VmstatLine{Name: "thp_split_page_failed", Value: t.splitPageFailed.Load()},
		phys.VmstatLine{Name: "thp_deferred_split_page", Value: t.deferredSplitPage.Load()},
		phys.VmstatLine{Name: "thp_split_pmd", Value: t.splitPMD.Load()},
		phys.VmstatLine{Name: "thp_zero_page_alloc", Value: t.zeroPageAlloc.Load()},
		phys.VmstatLine{Name: "thp_zero_page_alloc_failed", Value: t.zeroPageAllocFailed.Load()},
	)
}

// VmstatValue returns one /proc/vmstat counter by name.
func (m *Manager) VmstatValue(name string) (uint64, bool) {
	for _, l := range m.Vmstat() {
		if l.Name == name {
			return l.Value, true
		}
	}
	return 0, false
}
