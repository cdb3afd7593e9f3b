// Package vmcheck drives mm with random sequences of address-space
// operations and checks every step against a reference model: the
// differential property test of mm, shared by the host tests, the fuzz
// target and the image's vm scenario.
//
// The model is deliberately naive: per address space, a map from page
// address to the page's protection and contents, where fork copies the
// map and a write copies the contents it changes. With a journaled region
// (Config.Region, region.go), a page may map a page of the region, shared
// (its contents are the region's, which the model keeps once for every
// space) or private (the region's until this space writes it, then a
// copy of its own, which fork shares like anonymous memory), and what the
// journal holds must be the model's region after every msync and sync.
// Whatever mm does with page tables, anon_vmas, copy-on-write, swap, the
// page cache and writeback, every byte read must be what the model says,
// every refused access must be refused for the model's reason at the
// model's address, and after every step mm.Check (which compares every
// page table with the rmap walks, map counts and counters) must pass.
//
// It is a checker, not a test package: like Linux's in-kernel VM
// self-checks (CONFIG_DEBUG_VM_PGTABLE runs at boot), it runs on the
// image as well as under go test, so it imports no testing package and
// reports through errors and Stats; the go test drivers live in its
// _test files.
package vmcheck

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"

	"yolk/mm"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// Source supplies the random choices: math/rand for property tests, the
// fuzzer's bytes for fuzzing.
type Source interface {
	// Intn returns a value in [0, n).
	Intn(n int) int
}

// Config bounds a run.
type Config struct {
	Steps int
	// MaxSpaces caps the live address spaces (default 6).
	MaxSpaces int
	// CheckEvery runs mm.Check after every CheckEvery-th step (default 1).
	CheckEvery int
	// ViewEvery also checks the MMU's and smaps' views (views.go) at every
	// ViewEvery-th check (default 1): they cost more than Check itself.
	ViewEvery int
	// Midway, if set, is called once halfway through, with the spaces
	// live: for a caller that wants to show /proc files of a busy system.
	Midway func()
	// EachStep, if set, is called after every step. The image's scenario
	// yields the processor there: TamaGo preempts no goroutine, so a loop
	// that never blocks would starve the garbage collector's workers.
	EachStep func(step int)
	// OwnPool says that the Manager is the pool's only user: every check
	// then also accounts for every frame (mm.Manager.CheckFrames).
	OwnPool bool
	// Fill, when not 0, makes one write in Fill a fill: a few bytes into
	// each page of a run of up to FillPages (default 128), which builds
	// the working set up beyond a small pool, so that reclaim runs all
	// the time.
	Fill, FillPages int
	// SwapErrors says that the swap device may fail reads: an access may
	// then stop with a SwapError fault (SIGBUS) at a page the model says
	// it may access, having done what came before; nothing else changes.
	// Off, any SwapError is a failure.
	SwapErrors bool
	// Region, if set, is a journaled region (NewRegion) that mmap maps
	// shared and private beside anonymous memory, with msync, background
	// writeback and Sync as operations, and every page's durable contents
	// checked against the model after each of them and at the end. It
	// must be unmapped and clean; the caller closes it after Run.
	Region *Region
	// Memory is how loads and stores reach a space: nil for the
	// software MMU (AddressSpace.Read and Write); the live MMU on the
	// image (mm/mmu), which must give the same bytes and stop at the same
	// faults.
	Memory Memory
}

// Memory moves bytes between a space and the runner.
type Memory interface {
	Read(as *mm.AddressSpace, addr uint32, buf []byte) error
	Write(as *mm.AddressSpace, addr uint32, data []byte) error
}

func (r *runner) mem() Memory {
	if r.cfg.Memory == nil {
		return softMMU{}
	}
	return r.cfg.Memory
}

// softMMU is the default Memory.
type softMMU struct{}

func (softMMU) Read(as *mm.AddressSpace, addr uint32, buf []byte) error { return as.Read(addr, buf) }
func (softMMU) Write(as *mm.AddressSpace, addr uint32, data []byte) error {
	return as.Write(addr, data)
}

// Stats count what a run did.
type Stats struct {
	Steps, Checks                            int
	Ops                                      map[string]int
	Refused                                  int // operations the model expected to fail, and that failed
	MaxSpaces, MaxVMAs, MaxPages, MaxAnonVMA int64
	// MaxWorkingSet is the most distinct pages holding data in the model
	// at once, sampled every 64 steps: the memory the spaces need,
	// which pressure runs make larger than the pool.
	MaxWorkingSet int64
	// Events are mm's huge page and lazy-free counters (vmstat) at the end.
	Events map[string]uint64
	// SwapFaults counts accesses stopped by a failed swap-in read
	// (Config.SwapErrors).
	SwapFaults int
	// With a region: msyncs refused with ErrMsyncTooBig, checks of
	// durable contents against the model, the region's figures at the
	// end (mm.RegionStats), and the page cache pages reclaim dropped
	// (every page read and no longer cached: only reclaim drops pages
	// while the region is open), clean or once written back.
	MsyncRefused, DurableChecks int
	Region                      mm.RegionStats
	RegionDropped               int64
}

// EventNames are the vmstat events a run reports in Stats.Events.
var EventNames = []string{"thp_fault_alloc", "thp_fault_fallback", "thp_zero_page_alloc",
	"thp_split_pmd", "thp_split_page", "thp_deferred_split_page", "pglazyfree", "pglazyfreed",
	"pswpout", "pswpin", "pgsteal_kswapd", "pgsteal_direct", "pgactivate", "pgdeactivate", "pgmajfault", "swap_ra"}

// The arena: operations aim at the top 4 MiB of the window (where mmap's
// top-down search puts mappings anyway) so that they keep hitting each
// other, two table pages' worth.
const (
	sectionPages = pgtable.PTEsPerTable
	arenaPages   = 1024
	arenaStart   = pgtable.WindowEnd - arenaPages*pgtable.PageSize
	pageSize     = pgtable.PageSize
)

type page struct {
	prot     mm.Prot
	dontfork bool
	hugepage bool            // MADV_HUGEPAGE
	nohuge   bool            // MADV_NOHUGEPAGE
	data     *[pageSize]byte // nil: zero; never written in place
	// lazy: MADV_FREE'd with data and not written since, so reclaim may
	// discard it; a read sees data until the discard and zeroes after.
	lazy bool
	// maybeZero: lazy with data. Reclaim (kswapd beside the runner, direct
	// reclaim in any allocation) may drop it at any moment, so a read may
	// see its data or, from the drop on, zeroes.
	maybeZero bool
	// file: the page maps page idx of the region, shared or private. A
	// shared one has no data of its own; a private one has data once
	// this space has written it (its anonymous copy), and reads the
	// region's page until then (runner.content).
	file, shared bool
	idx          uint32
}

type space struct {
	as    *mm.AddressSpace
	pages map[uint32]*page
}

type runner struct {
	mgr    *mm.Manager
	src    Source
	cfg    Config
	spaces []*space
	stats  Stats
	buf    []byte

	// concurrent: reclaimers run beside this runner (RunConcurrent).
	concurrent bool

	// reg is the region's model (Config.Region), or nil.
	reg *regionModel

	// checkMMU's frame maps, kept to be reused: the mappings through which
	// each frame is readable, and where each writable frame is written.
	readers map[uint32]int
	writer  map[uint32]where
	// ... and with a region, what each frame read is (frameTag), and the
	// frame each region page is read from.
	frameIdx, idxFrame map[uint32]uint32
}

// Run performs cfg.Steps random operations on address spaces of mgr, which
// must have been created with swap as its Swap (nil: no reclaim ops) and
// VerifyZeroed set, and have no address spaces. Every space is exited
// before it returns, and a region (Config.Region) synced and checked
// page by page against the model; the caller checks the pool for leaks.
func Run(mgr *mm.Manager, src Source, cfg Config) (Stats, error) {
	if cfg.MaxSpaces <= 0 {
		cfg.MaxSpaces = 6
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = 1
	}
	if cfg.ViewEvery <= 0 {
		cfg.ViewEvery = 1
	}
	if cfg.FillPages <= 0 {
		cfg.FillPages = 128
	}
	r := &runner{mgr: mgr, src: src, cfg: cfg, stats: Stats{Ops: map[string]int{}},
		readers: map[uint32]int{}, writer: map[uint32]where{}}
	var err error
	if cfg.Region != nil {
		r.reg, err = newRegionModel(cfg.Region)
	}
	if err == nil {
		err = r.run()
	}
	r.stats.Events = map[string]uint64{}
	for _, n := range EventNames {
		r.stats.Events[n], _ = mgr.VmstatValue(n)
	}
	for _, s := range r.spaces {
		if xerr := s.as.Exit(); err == nil && xerr != nil {
			err = xerr
		}
	}
	if err == nil {
		if err = mgr.Check(); err == nil {
			err = swapLeak(mgr)
		}
	}
	if err == nil && r.reg != nil {
		// Every store is durable after a final Sync.
		err = r.sync()
	}
	if r.reg != nil {
		r.stats.Region = r.reg.R.Stats()
		r.stats.RegionDropped = int64(r.stats.Region.PagesRead) - r.stats.Region.Cached
	}
	return r.stats, err
}

func (r *runner) run() error {
	for step := 0; step < r.cfg.Steps; step++ {
		if len(r.spaces) == 0 {
			as, err := r.mgr.NewAddressSpace()
			if err != nil {
				return err
			}
			r.spaces = append(r.spaces, &space{as: as, pages: map[uint32]*page{}})
		}
		s := r.spaces[r.src.Intn(len(r.spaces))]
		name, err := r.step(s)
		r.stats.Ops[name]++
		r.stats.Steps++
		if err != nil {
			return fmt.Errorf("step %d (%s, pid %d): %w", step, name, s.as.PID(), err)
		}
		if err := r.compareVMAs(s); err != nil {
			return fmt.Errorf("step %d (%s, pid %d): %w", step, name, s.as.PID(), err)
		}
		if (step+1)%r.cfg.CheckEvery == 0 {
			r.stats.Checks++
			if err := r.check(); err != nil {
				return fmt.Errorf("step %d (%s, pid %d): %w", step, name, s.as.PID(), err)
			}
		}
		r.account()
		if r.cfg.Midway != nil && step == r.cfg.Steps/2 {
			r.cfg.Midway()
		}
		if r.cfg.EachStep != nil {
			r.cfg.EachStep(step)
		}
	}
	return nil
}

// check is the oracle after a step: mm's own invariants, then the
// hardware descriptors and smaps judged against the model.
func (r *runner) check() error {
	if r.concurrent || r.cfg.ViewEvery == 1 {
		for _, s := range r.spaces {
			for a := range s.pages {
				if err := r.resolve(s, a); err != nil {
					return err
				}
			}
		}
	}
	// kswapd may run at any moment: the views must see the same state
	// as Check.
	return r.mgr.Quiesce(func() error {
		if err := r.mgr.Check(); err != nil {
			return err
		}
		if r.cfg.OwnPool {
			if err := r.mgr.CheckFrames(); err != nil {
				return err
			}
		}
		if r.stats.Checks%r.cfg.ViewEvery != 0 {
			return nil
		}
		if err := r.checkMMU(); err != nil {
			return err
		}
		return r.checkSmaps()
	})
}

func (r *runner) account() {
	st := r.mgr.Stats()
	r.stats.MaxSpaces = max(r.stats.MaxSpaces, int64(st.AddressSpaces))
	r.stats.MaxVMAs = max(r.stats.MaxVMAs, int64(st.VMAs))
	r.stats.MaxPages = max(r.stats.MaxPages, st.AnonPages)
	if r.stats.Steps%64 == 0 {
		r.stats.MaxWorkingSet = max(r.stats.MaxWorkingSet, r.workingSet())
	}
	r.stats.MaxAnonVMA = max(r.stats.MaxAnonVMA, st.AnonVMAs)
}

// workingSet counts the distinct data pages of every space's model (a
// page shared since fork is one).
func (r *runner) workingSet() int64 {
	seen := map[*[pageSize]byte]bool{}
	for _, s := range r.spaces {
		for _, p := range s.pages {
			if p.data != nil {
				seen[p.data] = true
			}
		}
	}
	return int64(len(seen))
}

func (r *runner) step(s *space) (string, error) {
	if r.reg != nil {
		switch n := r.src.Intn(400); {
		case n < 12:
			return "msync", r.msync(s)
		case n < 16:
			return "writeback", r.writeback()
		case n < 17:
			return "sync", r.sync()
		}
	}
	switch n := r.src.Intn(100); {
	case n < 14:
		return "mmap", r.mmap(s)
	case n < 20:
		return "munmap", r.munmap(s)
	case n < 27:
		return "mprotect", r.mprotect(s)
	case n < 33:
		return "madvise", r.madvise(s)
	case n < 37:
		return "fork", r.fork(s)
	case n < 40:
		return "exit", r.exit(s)
	case n < 62:
		return "write", r.write(s)
	case n < 84:
		return "read", r.read(s)
	case n < 90:
		return "reclaim", r.reclaim(s)
	case n < 94:
		return "referenced", r.referenced(s)
	case n < 98:
		return "discard", r.discard(s)
	case n < 99:
		return "split", r.split(s)
	default:
		return "thp", r.thp()
	}
}

// Address and length choices: mostly page aligned inside the arena, with
// a few that stray.
func (r *runner) addr() uint32 {
	return arenaStart + uint32(r.src.Intn(arenaPages))*pageSize
}

func (r *runner) pages() uint32 { return uint32(1 + r.src.Intn(16)) }

func (r *runner) prot() mm.Prot {
	if r.src.Intn(10) == 0 {
		return mm.ProtNone
	}
	return mm.Prot(1 + r.src.Intn(7))
}

func (r *runner) refused(err error) {
	if err != nil {
		r.stats.Refused++
	}
}

func expectErr(got, want error) error {
	if want == nil && got == nil || want != nil && errors.Is(got, want) {
		return nil
	}
	return fmt.Errorf("got error %v, want %v", got, want)
}

func (r *runner) mmap(s *space) error {
	// A third of the mappings map the region, if there is one: shared or
	// private, from a page offset that mostly fits.
	var file, shared bool
	if r.reg != nil && r.src.Intn(3) == 0 {
		file, shared = true, r.src.Intn(2) == 0
	}
	npages := r.pages()
	huge := !file && r.src.Intn(3) == 0 // whole sections, often section aligned
	if huge {
		npages = sectionPages * uint32(1+r.src.Intn(2))
	}
	var off uint32
	if file {
		n := uint32(len(r.reg.data))
		if off = uint32(r.src.Intn(int(n))); r.src.Intn(4) != 0 && npages <= n {
			off = uint32(r.src.Intn(int(n - npages + 1)))
		}
	}
	size := npages * pageSize
	prot := r.prot()
	var flags mm.MapFlags
	var hint uint32
	switch r.src.Intn(4) {
	case 0:
		flags, hint = mm.MapFixed, r.addr()
	case 1:
		flags, hint = mm.MapFixedNoReplace, r.addr()
	case 2:
		hint = r.addr()
	}
	if huge && hint != 0 && r.src.Intn(2) == 0 {
		hint &^= pgtable.SectionSize - 1
	}
	mmap := func(hint, size uint32) (uint32, error) {
		if !file {
			return s.as.Mmap(hint, size, prot, flags)
		}
		mf := mm.MapPrivate
		if shared {
			mf = mm.MapShared
		}
		return s.as.MmapRegion(hint, size, prot, flags|mf, r.reg.R, uint64(off)*pageSize)
	}
	fixed := flags != 0
	if file && uint64(off)+uint64(npages) > uint64(len(r.reg.data)) {
		// A mapping must lie inside the region: it has no end to grow.
		_, err := mmap(hint, size)
		r.refused(err)
		return expectErr(err, mm.ErrInvalid)
	}
	if fixed && uint64(hint)+uint64(size) > uint64(pgtable.WindowEnd) {
		_, err := mmap(hint, size)
		r.refused(err)
		return expectErr(err, mm.ErrInvalid)
	}
	if flags == mm.MapFixedNoReplace && !s.free(hint, npages) {
		_, err := mmap(hint, size)
		r.refused(err)
		return expectErr(err, mm.ErrExist)
	}
	addr, err := mmap(hint, size-uint32(r.src.Intn(pageSize))) // unaligned lengths round up
	if err != nil {
		return err
	}
	var want uint32
	switch {
	case fixed:
		want = hint
	case hint != 0 && uint64(hint)+uint64(size) <= uint64(pgtable.WindowEnd) && s.free(hint, npages):
		want = hint
	case hint == 0 && npages%sectionPages == 0 && s.topDown(npages+sectionPages) != 0:
		// Whole sections with no hint: aligned, in the highest gap that
		// holds a section more (thp_get_unmapped_area).
		a := s.topDown(npages + sectionPages)
		want = (a + (npages+sectionPages)*pageSize - size) &^ (pgtable.SectionSize - 1)
	default:
		want = s.topDown(npages)
	}
	if addr != want {
		return fmt.Errorf("mmap(%#x, %d pages, %v) returned %#08x, want %#08x", hint, npages, flags, addr, want)
	}
	for i := uint32(0); i < npages; i++ {
		s.pages[addr+i*pageSize] = &page{prot: prot, file: file, shared: shared, idx: off + i}
	}
	return nil
}

func (s *space) free(addr, npages uint32) bool {
	for i := uint32(0); i < npages; i++ {
		if s.pages[addr+i*pageSize] != nil {
			return false
		}
	}
	return true
}

// topDown is where Linux's top-down search puts npages: the highest free
// run of pages.
func (s *space) topDown(npages uint32) uint32 {
	run := uint32(0)
	for a := pgtable.WindowEnd - pageSize; a >= pgtable.WindowStart; a -= pageSize {
		if s.pages[a] != nil {
			run = 0
			continue
		}
		if run++; run == npages {
			return a
		}
	}
	return 0
}

func (r *runner) munmap(s *space) error {
	addr, npages := r.addr(), r.pages()
	size := npages * pageSize
	err := s.as.Munmap(addr, size)
	if uint64(addr)+uint64(size) > uint64(pgtable.WindowEnd) {
		r.refused(err)
		return expectErr(err, mm.ErrInvalid)
	}
	if err != nil {
		return err
	}
	for i := uint32(0); i < npages; i++ {
		delete(s.pages, addr+i*pageSize)
	}
	return nil
}

func (r *runner) mprotect(s *space) error {
	addr, npages := r.addr(), r.pages()
	prot := r.prot()
	err := s.as.Mprotect(addr, npages*pageSize, prot)
	var want error
	for i := uint32(0); i < npages; i++ {
		a := uint64(addr) + uint64(i)*pageSize
		p := s.pages[uint32(a)]
		if a >= uint64(pgtable.WindowEnd) || p == nil {
			want = mm.ErrNotMapped
			break
		}
		p.prot = prot
	}
	r.refused(want)
	return expectErr(err, want)
}

var advices = []mm.Advice{mm.MadvDontneed, mm.MadvDontneed, mm.MadvDontfork, mm.MadvDofork,
	mm.MadvFree, mm.MadvFree, mm.MadvFree, mm.MadvHugepage, mm.MadvNohugepage}

func (r *runner) madvise(s *space) error {
	addr, npages := r.addr(), r.pages()
	if r.src.Intn(4) == 0 {
		// A section's worth, often exactly one: MADV_FREE keeps those
		// whole.
		addr &^= pgtable.SectionSize - 1
		npages = sectionPages - 4 + uint32(r.src.Intn(9))
	}
	if uint64(addr)+uint64(npages)*pageSize > uint64(pgtable.WindowEnd) {
		npages = (pgtable.WindowEnd - addr) / pageSize
	}
	advice := advices[r.src.Intn(len(advices))]
	err := s.as.Madvise(addr, npages*pageSize, advice)
	var want error
advise:
	for i := uint32(0); i < npages; i++ {
		a := addr + i*pageSize
		p := s.pages[a]
		switch {
		case p == nil:
			want = mm.ErrNotMapped
		case advice == mm.MadvFree && p.file:
			// Only anonymous memory is freed lazily: EINVAL at the first
			// area of the region, the areas before it advised, none
			// after, holes or not.
			want = mm.ErrInvalid
			break advise
		case advice == mm.MadvDontneed:
			// A private mapping's copy goes, and the region shows
			// through again; a shared page is the region's still.
			p.data, p.lazy, p.maybeZero = nil, false, false
		case advice == mm.MadvFree:
			// Reclaim may drop it from now on (and MADV_FREE drops it at
			// once if it is swapped out): a read sees its data or zeroes
			// until it is written again.
			p.lazy = p.data != nil
			p.maybeZero = p.data != nil
		case advice == mm.MadvHugepage:
			p.hugepage, p.nohuge = true, false
		case advice == mm.MadvNohugepage:
			p.hugepage, p.nohuge = false, true
		default:
			p.dontfork = advice == mm.MadvDontfork
		}
	}
	r.refused(want)
	return expectErr(err, want)
}

func (r *runner) fork(s *space) error {
	if len(r.spaces) >= r.cfg.MaxSpaces {
		return nil
	}
	child, err := s.as.Fork()
	if err != nil {
		return err
	}
	cs := &space{as: child, pages: map[uint32]*page{}}
	for a, p := range s.pages {
		if !p.dontfork {
			q := *p
			cs.pages[a] = &q
		}
	}
	r.spaces = append(r.spaces, cs)
	return nil
}

func (r *runner) exit(s *space) error {
	for i, t := range r.spaces {
		if t == s {
			r.spaces = append(r.spaces[:i], r.spaces[i+1:]...)
		}
	}
	return s.as.Exit()
}

// span picks an access: a start somewhere in the arena (usually near
// mapped memory) and a length up to a page and a half.
func (r *runner) span(s *space) (uint32, int) {
	addr := r.addr() + uint32(r.src.Intn(pageSize))
	if len(s.pages) > 0 && r.src.Intn(4) != 0 {
		// Start inside a mapped page: walk up from the random address.
		for a := addr &^ (pageSize - 1); a < pgtable.WindowEnd; a += pageSize {
			if s.pages[a] != nil {
				addr = a + uint32(r.src.Intn(pageSize))
				break
			}
		}
	}
	n := 1 + r.src.Intn(pageSize*3/2)
	if uint64(addr)+uint64(n) > uint64(pgtable.WindowEnd) {
		n = int(pgtable.WindowEnd - addr)
	}
	return addr, n
}

// expectAccess is where the model says an access of n bytes at addr
// stops: the faulting address and reason, or ok.
func (s *space) expectAccess(addr uint32, n int, acc pgtable.Access) (uint32, mm.FaultReason, bool) {
	for a := uint64(addr); a < uint64(addr)+uint64(n); a = (a &^ (pageSize - 1)) + pageSize {
		p := s.pages[uint32(a)&^(pageSize-1)]
		switch {
		case p == nil:
			return uint32(a), mm.MapError, false
		case acc == pgtable.AccessWrite && p.prot&mm.ProtWrite == 0,
			acc == pgtable.AccessRead && p.prot == mm.ProtNone:
			return uint32(a), mm.AccessError, false
		}
	}
	return 0, 0, true
}

// swapFault reports where an access of n bytes at addr stopped if err is a
// failed swap-in that the run allows (Config.SwapErrors), at a page
// before where the model says the access stops (want, or the end).
func (r *runner) swapFault(err error, addr uint32, n int, want uint32, ok bool) (uint32, bool) {
	var fe *mm.FaultError
	if !r.cfg.SwapErrors || !errors.As(err, &fe) || fe.Reason != mm.SwapError {
		return 0, false
	}
	end := uint64(addr) + uint64(n)
	if !ok {
		end = uint64(want)
	}
	if uint64(fe.Addr)+pageSize <= uint64(addr) || uint64(fe.Addr) >= end {
		return 0, false
	}
	r.stats.SwapFaults++
	return max(fe.Addr, addr), true
}

func checkFault(err error, addr uint32, reason mm.FaultReason, ok bool) error {
	var fe *mm.FaultError
	switch {
	case ok && err == nil:
		return nil
	case ok:
		return fmt.Errorf("unexpected error: %w", err)
	case !errors.As(err, &fe):
		return fmt.Errorf("got %v, want a %v fault at %#08x", err, reason, addr)
	case fe.Addr != addr || fe.Reason != reason:
		return fmt.Errorf("got %v, want a %v fault at %#08x", err, reason, addr)
	}
	return nil
}

func (r *runner) write(s *space) error {
	if r.cfg.Fill > 0 && r.src.Intn(r.cfg.Fill) == 0 {
		return r.fill(s)
	}
	addr, n := r.span(s)
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(r.src.Intn(256))
	}
	// A lazily freed page that still has its data may yet be dropped by
	// reclaim (kswapd beside the runner, RunConcurrent's reclaimers)
	// after resolve has read it and before the write lands; the write
	// then goes to a fresh zero page. Those pages are settled once the
	// write has ended their laziness.
	var unsettled []uint32
	for a := addr &^ (pageSize - 1); uint64(a) < uint64(addr)+uint64(n); a += pageSize {
		if err := r.resolve(s, a); err != nil {
			return err
		}
		if p := s.pages[a]; p != nil && p.maybeZero {
			unsettled = append(unsettled, a)
		}
	}
	err := r.mem().Write(s.as, addr, data)
	faddr, reason, ok := s.expectAccess(addr, n, pgtable.AccessWrite)
	if at, lost := r.swapFault(err, addr, n, faddr, ok); lost {
		err, faddr, ok = nil, at, true
		data = data[:at-addr]
	} else if !ok {
		r.refused(err)
		data = data[:faddr-addr]
	}
	// The model takes the bytes that were written before any fault.
	for off := 0; off < len(data); {
		a := addr + uint32(off)
		pa := a &^ (pageSize - 1)
		off += r.store(s.pages[pa], a-pa, data[off:])
	}
	if err := checkFault(err, faddr, reason, ok); err != nil {
		return err
	}
	for _, a := range unsettled {
		if err := r.settleLazy(s, a, addr, len(data)); err != nil {
			return err
		}
	}
	return nil
}

// settleLazy reads back a page that was lazily freed with data when a write
// of [addr, addr+n) began: if reclaim dropped it before the write landed,
// only the written bytes are there, on zeroes, and the model takes that.
// A page the write never reached is still lazy and left as it is.
func (r *runner) settleLazy(s *space, a, addr uint32, n int) error {
	p := s.pages[a]
	if p == nil || p.maybeZero || p.data == nil || uint64(a) >= uint64(addr)+uint64(n) {
		return nil
	}
	var got [pageSize]byte
	if err := r.mem().Read(s.as, a, got[:]); err != nil {
		if _, lost := r.swapFault(err, a, pageSize, 0, true); lost {
			return nil // unread: the model keeps the likelier content
		}
		return fmt.Errorf("settling %#08x: %w", a, err)
	}
	if got == *p.data {
		return nil
	}
	lo := max(addr, a) - a
	hi := uint32(min(uint64(addr)+uint64(n), uint64(a)+pageSize) - uint64(a))
	var fresh [pageSize]byte
	copy(fresh[lo:hi], p.data[lo:hi])
	if got != fresh {
		return fmt.Errorf("write %#08x after MADV_FREE: the page is neither its data nor zeroes under the bytes written", a)
	}
	p.data = &fresh
	return nil
}

// fill writes a few bytes into each writable page of a run of up to 128
// pages from a random address: a task touching its memory, which builds
// the working set up beyond the pool so that reclaim has work.
func (r *runner) fill(s *space) error {
	addr := r.addr()
	for i, n := 0, 1+r.src.Intn(r.cfg.FillPages); i < n && addr < pgtable.WindowEnd; i, addr = i+1, addr+pageSize {
		p := s.pages[addr]
		if p == nil || p.prot&mm.ProtWrite == 0 {
			continue
		}
		if err := r.resolve(s, addr); err != nil {
			return err
		}
		lazy := p.maybeZero // see write
		off := uint32(r.src.Intn(pageSize - 16))
		var b [16]byte
		for j := range b {
			b[j] = byte(r.src.Intn(256))
		}
		if err := r.mem().Write(s.as, addr+off, b[:]); err != nil {
			if _, lost := r.swapFault(err, addr+off, len(b), 0, true); lost {
				continue
			}
			return fmt.Errorf("fill %#08x: %w", addr+off, err)
		}
		r.store(p, off, b[:])
		if lazy {
			if err := r.settleLazy(s, addr, addr+off, len(b)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *runner) read(s *space) error {
	addr, n := r.span(s)
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	got := r.buf[:n]
	err := r.mem().Read(s.as, addr, got)
	faddr, reason, ok := s.expectAccess(addr, n, pgtable.AccessRead)
	if at, lost := r.swapFault(err, addr, n, faddr, ok); lost {
		got = got[:at-addr]
	} else if err := checkFault(err, faddr, reason, ok); err != nil {
		return err
	} else if !ok {
		r.refused(err)
		got = got[:faddr-addr]
	}
	var zero [pageSize]byte
	for off := 0; off < len(got); {
		a := addr + uint32(off)
		pa := a &^ (pageSize - 1)
		want := &zero
		p := s.pages[pa]
		if c := r.content(p); c != nil {
			want = c
		}
		w := want[a-pa:]
		c := min(len(w), len(got)-off)
		if p.maybeZero {
			// While it is lazily freed a read sees its data, or zeroes
			// for good once reclaim has dropped it. (Bytes that are zero
			// in the data too tell nothing.)
			isData, isZero := bytes.Equal(got[off:off+c], w[:c]), bytes.Equal(got[off:off+c], zero[:c])
			if isZero && !isData {
				p.data, p.lazy, p.maybeZero = nil, false, false
				w = zero[a-pa:]
			}
		}
		if !bytes.Equal(got[off:off+c], w[:c]) {
			i := 0
			for got[off+i] == w[i] {
				i++
			}
			return fmt.Errorf("read %#08x: byte %#02x, model says %#02x", a+uint32(i), got[off+i], w[i])
		}
		off += c
	}
	return nil
}

// resolve reads a maybeZero page: its old data (it stays maybeZero), or
// zeroes if reclaim has dropped it.
func (r *runner) resolve(s *space, a uint32) error {
	p := s.pages[a]
	if p == nil || !p.maybeZero || p.prot == mm.ProtNone {
		return nil
	}
	if p.data == nil {
		p.maybeZero = false
		return nil
	}
	var got [pageSize]byte
	if err := r.mem().Read(s.as, a, got[:]); err != nil {
		if _, lost := r.swapFault(err, a, pageSize, 0, true); lost {
			return nil // unread: it stays maybeZero
		}
		return fmt.Errorf("resolving %#08x: %w", a, err)
	}
	var zero [pageSize]byte
	switch {
	case got == *p.data && got == zero:
		return nil // zero data: the read cannot tell, and need not
	case got == *p.data:
		return nil // still there; reclaim may drop it yet
	case got == zero:
		p.data, p.lazy = nil, false
	default:
		return fmt.Errorf("read %#08x after MADV_FREE: neither its data nor zeroes", a)
	}
	p.maybeZero = false
	return nil
}

// pickPage chooses a page of s that mm has an anonymous page for.
func (r *runner) pickPage(s *space) (uint32, phys.PFN, bool) {
	if len(s.pages) == 0 {
		return 0, 0, false
	}
	start := r.addr()
	for i := uint32(0); i < arenaPages; i++ {
		a := arenaStart + (start-arenaStart+i*pageSize)%(arenaPages*pageSize)
		if s.pages[a] == nil {
			continue
		}
		if pfn, ok := s.as.FollowPage(a); ok {
			return a, pfn, true
		}
	}
	return 0, 0, false
}

// reclaim pushes memory out as a user can: MADV_PAGEOUT of a few pages
// (swapped out, or dropped if lazily freed) or MADV_COLD, or a proactive
// reclaim of a batch from the LRU lists, which reaches every space
// through the rmap. Nothing in the model changes but lazily freed pages,
// which may read as zeroes from then on (they are maybeZero already): the
// next access must bring the same bytes back.
func (r *runner) reclaim(s *space) error {
	switch r.src.Intn(3) {
	case 0:
		r.mgr.ProactiveReclaim(1 + r.src.Intn(64))
		return nil
	}
	addr, pfn, ok := r.pickPage(s)
	if !ok {
		return nil
	}
	r.mgr.Pool().Put(pfn)
	n := uint32(1 + r.src.Intn(16))
	advice := mm.MadvPageout
	if r.src.Intn(3) == 0 {
		advice = mm.MadvCold
	}
	err := s.as.Madvise(addr, n*pageSize, advice)
	for i := uint32(0); i < n && err == nil; i++ {
		if s.pages[addr+i*pageSize] == nil {
			return fmt.Errorf("madvise(%#08x, %d pages, %d) over a hole succeeded", addr, n, advice)
		}
	}
	if errors.Is(err, mm.ErrNotMapped) || errors.Is(err, mm.ErrInvalid) {
		r.refused(err)
		return nil
	}
	return err
}

// swapLeak reports slots left when no space is left: only swap cache
// pages may still hold slots (one each), and the pool's books must
// agree.
func swapLeak(mgr *mm.Manager) error {
	if ref, _ := mgr.SwapSlots(); ref != 0 {
		return fmt.Errorf("%d swap slots still named by PTEs after every space exited", ref)
	}
	return nil
}

// lockedPage picks a page of s as reclaim would take it: a reference and
// the lock on its head (the whole compound page).
func (r *runner) lockedPage(s *space) (phys.PFN, phys.PFN, func(), bool) {
	_, pfn, ok := r.pickPage(s)
	if !ok {
		return 0, 0, nil, false
	}
	pool := r.mgr.Pool()
	head := pool.CompoundHead(pfn)
	for pool.Page(head).TestAndSet(phys.PGLocked) {
		runtime.Gosched() // kswapd has it, for a moment
	}
	return pfn, head, func() {
		pool.Page(head).Clear(phys.PGLocked)
		pool.Put(pfn)
	}, true
}

// mapCount is every mapping of the page at head: sections and small
// PTEs of each frame (folio_mapcount).
func (r *runner) mapCount(head phys.PFN) int {
	pool := r.mgr.Pool()
	lc, large := pool.LargeCounts(head)
	if !large {
		return int(pool.Page(head).MapCount())
	}
	n := int(lc.Entire())
	for i := phys.PFN(0); i < sectionPages; i++ {
		n += int(pool.Page(head + i).MapCount())
	}
	return n
}

// discard runs reclaim's hook for lazily freed pages on a page. Whatever
// it unmaps reads zeroes from then on, so every page it unmapped must be
// one the model says may be: freed with MADV_FREE and not written since
// (or never written at all).
func (r *runner) discard(s *space) error {
	pfn, head, release, ok := r.lockedPage(s)
	if !ok {
		return nil
	}
	if r.isCachePage(head) {
		// Reclaim takes page cache pages elsewhere (shrinkFilePage):
		// DiscardLazyFree is for anonymous pages alone.
		release()
		return nil
	}
	before, err := r.mappings(head)
	var d mm.Discard
	if err == nil {
		d, err = r.mgr.DiscardLazyFree(pfn)
	}
	var after map[mm.Mapping]bool
	if err == nil {
		after, err = r.mappings(head)
	}
	release()
	if err != nil {
		return err
	}
	if d == mm.Discarded && len(after) != 0 {
		return fmt.Errorf("discard of %v reported done with %d mappings left", head, len(after))
	}
	for mp := range before {
		if after[mp] {
			continue
		}
		n := uint32(1)
		if mp.Huge {
			n = sectionPages
		}
		t := r.spaceOf(mp.AS)
		for i := uint32(0); i < n; i++ {
			a := mp.Addr + i*pageSize
			p := t.pages[a]
			if p == nil {
				return fmt.Errorf("discard (%v) unmapped %#08x in pid %d, which the model has unmapped", d, a, mp.AS.PID())
			}
			if p.data != nil && !p.lazy {
				return fmt.Errorf("discard (%v) dropped %#08x in pid %d, written after MADV_FREE (or never freed)", d, a, mp.AS.PID())
			}
			p.data, p.lazy = nil, false
		}
	}
	return nil
}

func (r *runner) mappings(head phys.PFN) (map[mm.Mapping]bool, error) {
	out := map[mm.Mapping]bool{}
	err := r.mgr.RmapWalk(head, func(mp mm.Mapping) { out[mp] = true })
	return out, err
}

func (r *runner) spaceOf(as *mm.AddressSpace) *space {
	for _, t := range r.spaces {
		if t.as == as {
			return t
		}
	}
	return nil
}

// split splits huge pages: the deferred split queue's scan, or one page
// the way reclaim does. Neither may change a byte.
func (r *runner) split(s *space) error {
	if r.src.Intn(2) == 0 {
		r.mgr.DeferredSplitScan(1 + r.src.Intn(4))
		return nil
	}
	pfn, head, release, ok := r.lockedPage(s)
	if !ok {
		return nil
	}
	if !r.mgr.Pool().Page(head).Compound() {
		release()
		return nil
	}
	err := r.mgr.SplitHugePage(pfn)
	pool := r.mgr.Pool()
	if err == nil {
		pool.Page(pfn).Clear(phys.PGLocked)
		pool.Put(pfn)
		return nil
	}
	release()
	if errors.Is(err, mm.ErrBusy) {
		// kswapd has it, or one of its mappers' page tables, right now.
		r.refused(err)
		return nil
	}
	return fmt.Errorf("split of %v: %w", pfn, err)
}

// thp switches the global policy, mostly to always.
func (r *runner) thp() error {
	mode := mm.THPAlways
	switch n := r.src.Intn(8); {
	case n == 0:
		mode = mm.THPNever
	case n < 3:
		mode = mm.THPMadvise
	}
	return r.mgr.SetTHPEnabled(mode)
}

// referenced ages a page: page_referenced must report exactly the young
// PTEs among its mappings, and clear them.
func (r *runner) referenced(s *space) error {
	pfn, head, release, ok := r.lockedPage(s)
	if !ok {
		return nil
	}
	maps := 0
	err := r.mgr.RmapWalk(pfn, func(mm.Mapping) { maps++ })
	var young int
	if err == nil {
		young, err = r.mgr.PageReferenced(pfn)
	}
	var again int
	if err == nil {
		again, err = r.mgr.PageReferenced(pfn)
	}
	want := r.mapCount(head)
	release()
	switch {
	case err != nil:
		return err
	case maps != want:
		return fmt.Errorf("rmap walk of %v found %d mappings, map count %d", pfn, maps, want)
	case young > maps || again != 0:
		return fmt.Errorf("page_referenced of %v: %d young of %d, then %d", pfn, young, maps, again)
	}
	return nil
}

// compareVMAs checks the space's VMAs against the model page by page.
func (r *runner) compareVMAs(s *space) error {
	if !r.live(s) {
		return nil
	}
	n := 0
	for _, v := range s.as.VMAs() {
		for a := uint64(v.Start); a < uint64(v.End); a += pageSize {
			p := s.pages[uint32(a)]
			if p == nil {
				return fmt.Errorf("VMA %#08x-%#08x maps %#08x, which the model has unmapped", v.Start, v.End, a)
			}
			if mm.Prot(v.Flags&7) != p.prot || (v.Flags&mm.VMDontCopy != 0) != p.dontfork ||
				(v.Flags&mm.VMHugepage != 0) != p.hugepage || (v.Flags&mm.VMNoHugepage != 0) != p.nohuge {
				return fmt.Errorf("VMA %#08x-%#08x flags %#x at %#08x, model has %+v", v.Start, v.End, v.Flags, a, *p)
			}
			if (v.Region != nil) != p.file || (v.Flags&mm.VMShared != 0) != p.shared ||
				p.file && (v.Region != r.reg.R || v.Pgoff+uint32(a-uint64(v.Start))/pageSize != p.idx) {
				return fmt.Errorf("VMA %#08x-%#08x (region %v, flags %#x, page offset %d) at %#08x, model has %+v", v.Start, v.End, v.Region != nil, v.Flags, v.Pgoff, a, *p)
			}
			n++
		}
	}
	if n != len(s.pages) {
		return fmt.Errorf("VMAs cover %d pages, the model maps %d", n, len(s.pages))
	}
	return nil
}

func (r *runner) live(s *space) bool {
	for _, t := range r.spaces {
		if t == s {
			return true
		}
	}
	return false
}
