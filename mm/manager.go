package mm

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// Config sets up a Manager.
type Config struct {
	Pool *phys.Pool
	// VerifyZeroed checks that every page handed to an address space is
	// zero before it is mapped, and fails the fault if not. A debug aid
	// for tests and the vm scenario: it reads every new page once more.
	VerifyZeroed bool
	// THP is the initial transparent_hugepage/enabled policy; the zero
	// value is always, Linux's default. SetTHPEnabled changes it.
	THP THPMode
	// NoKswapd leaves the background reclaimer out: reclaim happens only
	// in allocations (direct reclaim) and through Manager.ShrinkAll, for
	// tests that want each step's reclaim to be their own.
	NoKswapd bool
	// NoReclaim installs no direct reclaim either: an allocation below
	// min fails at once, as before mm had reclaim.
	NoReclaim bool
	// Log, if set, gets the kernel's messages (OOM kills, swapon, write
	// errors), one line each without a newline, as printk would print
	// them.
	Log func(string)
	// TLB, if set, hears of every hardware descriptor change in every
	// address space's table: the live MMU (mm/mmu), or a model of one in
	// tests. Nil: the tables are walked by the software MMU alone.
	TLB pgtable.TLB
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

	aborts abortStats // live-MMU faults (abort.go)

	nrAnonPages atomic.Int64 // anonymous frames mapped at least once (NR_ANON_MAPPED)
	// The page cache of every region (filemap.go): pages cached
	// (NR_FILE_PAGES), mapped at least once (NR_FILE_MAPPED), dirty
	// (NR_FILE_DIRTY) and under writeback (NR_WRITEBACK's file part).
	nrFilePages, nrFileMapped, nrFileDirty, nrFileWriteback atomic.Int64
	regionsMu                                               sync.Mutex // regions; a leaf
	regions                                                 map[*Region]struct{}
	nrAnonVMAs                                              atomic.Int64
	nrAVCs                                                  atomic.Int64
	anonVMASeq                                              atomic.Uint64

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

	// Reclaim: the LRU lists, the swap devices and their counters, kswapd.
	lru        lruvec
	reclaimMu  sync.RWMutex // read by reclaim passes, written by Check
	quiesced   atomic.Bool  // Quiesce holds reclaimMu
	swapMu     sync.Mutex   // swapDevs
	swapDevs   [pgtable.MaxSwapType + 1]*swapInfo
	swapOrder  atomic.Pointer[[]*swapInfo] // swapDevs by priority
	swapPrio   int                         // the last default priority given (Linux's least_priority)
	swapTotal  atomic.Int64                // usable slots on every device
	swapUsed   atomic.Int64                // slots in use
	swapCached atomic.Int64                // pages in the swap cache
	writeback  atomic.Int64                // pages under writeback
	vm         vmEvents

	kswapdWake     chan struct{}
	kswapdStop     chan struct{}
	kswapdDone     chan struct{}
	kswapdFailures atomic.Int32

	oomMu     sync.Mutex
	oomVictim *AddressSpace // being reaped
}

// vmEvents are mm's /proc/vmstat event counters.
type vmEvents struct {
	pgscanKswapd, pgscanDirect, pgstealKswapd, pgstealDirect atomic.Uint64
	pgactivate, pgdeactivate, pgmajfault, oomKill            atomic.Uint64
	kswapdWakeups, lazyfreeFail                              atomic.Uint64
	pswpin, pswpout, swapRA                                  atomic.Uint64
	swapinErrors, swapWriteErrors                            atomic.Uint64
	pgpgin, pgpgout                                          atomic.Uint64 // KiB read and written by regions
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
		spaces: map[int]*AddressSpace{}, deferred: map[phys.PFN]struct{}{}, swapPrio: -1}
	if err := m.SetTHPEnabled(cfg.THP); err != nil {
		m.pool.Page(zero).Clear(phys.PGReserved)
		m.pool.Put(zero)
		return nil, err
	}
	m.pool.SetRelease(m.lruRelease)
	if !cfg.NoReclaim {
		m.pool.SetReclaimer(m)
	}
	if !cfg.NoKswapd && !cfg.NoReclaim {
		m.kswapdWake = make(chan struct{}, 1)
		m.kswapdStop = make(chan struct{})
		m.kswapdDone = make(chan struct{})
		go m.kswapd()
		m.pool.SetKswapd(m.wakeKswapd)
	}
	return m, nil
}

func (m *Manager) logf(format string, args ...any) {
	if m.cfg.Log != nil {
		m.cfg.Log(fmt.Sprintf(format, args...))
	}
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
	if m.kswapdStop != nil {
		m.pool.SetKswapd(nil)
		close(m.kswapdStop)
		<-m.kswapdDone
		m.kswapdStop = nil
	}
	m.pool.SetReclaimer(nil)
	for _, si := range m.devices() {
		if err := m.Swapoff(si.dev); err != nil {
			return err
		}
	}
	m.pool.SetRelease(nil)
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
	pt.SetTLB(m.cfg.TLB)
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
// MemAvailable counts, as Linux's si_mem_available does, free memory
// above the high watermark plus the file lists (here the lazily freed
// pages, which reclaim drops without I/O) less what reclaim would leave.
func (m *Manager) Meminfo() []phys.MeminfoLine {
	s := m.Stats()
	lru := m.LRU()
	kb := func(frames int64) uint64 { return uint64(max(frames, 0)) * (phys.PageSize >> 10) }
	lines := m.pool.Meminfo()
	wm := m.pool.Watermarks()
	file := lru.ActiveFile + lru.InactiveFile
	avail := int64(m.pool.FreeFrames()) - int64(wm.High) + file - min(file/2, int64(wm.Low))
	for i := range lines {
		if lines[i].Name == "MemAvailable" {
			lines[i].KB = kb(avail)
		}
	}
	swapTotal, swapUsed := m.swapTotal.Load(), m.swapUsed.Load()
	// Regions are the page cache: Cached, as file pages are (a region is
	// mapped like a file, though Linux would count a block device's own
	// cache as Buffers). Nothing here is Shmem.
	lines = append(lines,
		phys.MeminfoLine{Name: "Buffers", KB: 0},
		phys.MeminfoLine{Name: "Cached", KB: kb(m.nrFilePages.Load())})
	return append(lines,
		phys.MeminfoLine{Name: "SwapCached", KB: kb(m.swapCached.Load())},
		phys.MeminfoLine{Name: "Active", KB: kb(lru.ActiveAnon + lru.ActiveFile)},
		phys.MeminfoLine{Name: "Inactive", KB: kb(lru.InactiveAnon + lru.InactiveFile)},
		phys.MeminfoLine{Name: "Active(anon)", KB: kb(lru.ActiveAnon)},
		phys.MeminfoLine{Name: "Inactive(anon)", KB: kb(lru.InactiveAnon)},
		phys.MeminfoLine{Name: "Active(file)", KB: kb(lru.ActiveFile)},
		phys.MeminfoLine{Name: "Inactive(file)", KB: kb(lru.InactiveFile)},
		phys.MeminfoLine{Name: "SwapTotal", KB: kb(swapTotal)},
		phys.MeminfoLine{Name: "SwapFree", KB: kb(swapTotal - swapUsed)},
		phys.MeminfoLine{Name: "Dirty", KB: kb(m.nrFileDirty.Load())},
		phys.MeminfoLine{Name: "Writeback", KB: kb(m.writeback.Load() + m.nrFileWriteback.Load())},
		phys.MeminfoLine{Name: "AnonPages", KB: kb(s.AnonPages)},
		phys.MeminfoLine{Name: "Mapped", KB: kb(m.nrFileMapped.Load())},
		phys.MeminfoLine{Name: "Shmem", KB: 0},
		phys.MeminfoLine{Name: "PageTables", KB: kb(s.PageTables)},
		phys.MeminfoLine{Name: "AnonHugePages", KB: kb(s.AnonHugePages * hugeNr)},
	)
}

// Vmstat returns /proc/vmstat: phys's counters, then mm's, with Linux's
// names, and last yolk's own, which Linux has no counter for:
//
//	pglazyfree_fail   lazily freed pages reclaim found redirtied or busy
//	pswpin_fail       swap-in reads that failed (the fault got SIGBUS)
//	pswpout_fail      swap-out writes that failed (the page was kept)
func (m *Manager) Vmstat() []phys.VmstatLine {
	s := m.Stats()
	t := &m.thp
	lru := m.LRU()
	v := &m.vm
	return append(m.pool.Vmstat(),
		phys.VmstatLine{Name: "nr_inactive_anon", Value: uint64(lru.InactiveAnon)},
		phys.VmstatLine{Name: "nr_active_anon", Value: uint64(lru.ActiveAnon)},
		phys.VmstatLine{Name: "nr_inactive_file", Value: uint64(lru.InactiveFile)},
		phys.VmstatLine{Name: "nr_active_file", Value: uint64(lru.ActiveFile)},
		phys.VmstatLine{Name: "nr_isolated_anon", Value: uint64(lru.Isolated)},
		phys.VmstatLine{Name: "nr_anon_pages", Value: uint64(s.AnonPages)},
		phys.VmstatLine{Name: "nr_mapped", Value: uint64(m.nrFileMapped.Load())},
		phys.VmstatLine{Name: "nr_file_pages", Value: uint64(m.nrFilePages.Load())},
		phys.VmstatLine{Name: "nr_dirty", Value: uint64(m.nrFileDirty.Load())},
		phys.VmstatLine{Name: "nr_writeback", Value: uint64(m.writeback.Load() + m.nrFileWriteback.Load())},
		phys.VmstatLine{Name: "nr_page_table_pages", Value: uint64(s.PageTables)},
		phys.VmstatLine{Name: "nr_anon_transparent_hugepages", Value: uint64(s.AnonHugePages)},
		phys.VmstatLine{Name: "nr_swapcached", Value: uint64(m.swapCached.Load())},
		phys.VmstatLine{Name: "pgpgin", Value: v.pswpin.Load()*4 + v.pgpgin.Load()},
		phys.VmstatLine{Name: "pgpgout", Value: v.pswpout.Load()*4 + v.pgpgout.Load()},
		phys.VmstatLine{Name: "pswpin", Value: v.pswpin.Load()},
		phys.VmstatLine{Name: "pswpout", Value: v.pswpout.Load()},
		phys.VmstatLine{Name: "pgmajfault", Value: v.pgmajfault.Load()},
		phys.VmstatLine{Name: "pgactivate", Value: v.pgactivate.Load()},
		phys.VmstatLine{Name: "pgdeactivate", Value: v.pgdeactivate.Load()},
		phys.VmstatLine{Name: "pglazyfree", Value: t.lazyfree.Load()},
		phys.VmstatLine{Name: "pglazyfreed", Value: t.lazyfreed.Load()},
		phys.VmstatLine{Name: "pgsteal_kswapd", Value: v.pgstealKswapd.Load()},
		phys.VmstatLine{Name: "pgsteal_direct", Value: v.pgstealDirect.Load()},
		phys.VmstatLine{Name: "pgscan_kswapd", Value: v.pgscanKswapd.Load()},
		phys.VmstatLine{Name: "pgscan_direct", Value: v.pgscanDirect.Load()},
		phys.VmstatLine{Name: "pageoutrun", Value: v.kswapdWakeups.Load()},
		phys.VmstatLine{Name: "oom_kill", Value: v.oomKill.Load()},
		phys.VmstatLine{Name: "swap_ra", Value: v.swapRA.Load()},
		phys.VmstatLine{Name: "thp_fault_alloc", Value: t.faultAlloc.Load()},
		phys.VmstatLine{Name: "thp_fault_fallback", Value: t.faultFallback.Load()},
		phys.VmstatLine{Name: "thp_split_page", Value: t.splitPage.Load()},
		phys.VmstatLine{Name: "thp_split_page_failed", Value: t.splitPageFailed.Load()},
		phys.VmstatLine{Name: "thp_deferred_split_page", Value: t.deferredSplitPage.Load()},
		phys.VmstatLine{Name: "thp_split_pmd", Value: t.splitPMD.Load()},
		phys.VmstatLine{Name: "thp_zero_page_alloc", Value: t.zeroPageAlloc.Load()},
		phys.VmstatLine{Name: "thp_zero_page_alloc_failed", Value: t.zeroPageAllocFailed.Load()},
		phys.VmstatLine{Name: "pglazyfree_fail", Value: v.lazyfreeFail.Load()},
		phys.VmstatLine{Name: "pswpin_fail", Value: v.swapinErrors.Load()},
		phys.VmstatLine{Name: "pswpout_fail", Value: v.swapWriteErrors.Load()},
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
