package phys

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// MigrateType says how an allocation can be moved or reclaimed, and
// labels each pageblock with the kind of allocation it holds. Values and
// names follow Linux's enum migratetype.
type MigrateType uint8

const (
	Unmovable   MigrateType = iota // kernel data: page tables, buffers
	Movable                        // user pages: can be migrated or swapped
	Reclaimable                    // caches that can be dropped
	NrMigrateTypes
)

var migrateTypeNames = [NrMigrateTypes]string{"Unmovable", "Movable", "Reclaimable"}

func (m MigrateType) String() string {
	if m < NrMigrateTypes {
		return migrateTypeNames[m]
	}
	return fmt.Sprintf("MigrateType(%d)", uint8(m))
}

// Config describes a pool to manage.
type Config struct {
	// Mem is the pool's memory; its length is a multiple of PageSize.
	Mem []byte
	// Base is the physical address of Mem[0], aligned to a pageblock
	// (1 MiB) so that huge pages are sections. Mem must end below 4 GiB.
	Base uint64

	// MinFreeKbytes sets the min watermark as Linux's vm.min_free_kbytes;
	// 0 derives it from the pool size as Linux does.
	MinFreeKbytes int
	// WatermarkScaleFactor spaces low and high above min, in units of
	// 1/10000 of the pool (vm.watermark_scale_factor); 0 means Linux's
	// default, 10.
	WatermarkScaleFactor int
	// NoGrouping turns off grouping by mobility (Linux's
	// page_group_by_mobility_disabled): every allocation is Unmovable.
	NoGrouping bool
	// ThrottleTimeout bounds how long a throttled direct reclaimer waits
	// for kswapd (Linux waits up to a second); 0 means 1s.
	ThrottleTimeout time.Duration
	// MaxReclaimRetries bounds the slow path's rounds of direct reclaim
	// (Linux's MAX_RECLAIM_RETRIES); 0 means 16.
	MaxReclaimRetries int
}

// Reclaimer frees memory on behalf of an allocation that failed: mm's
// direct reclaim. Reclaim is called with no phys lock held; it should
// allocate, if at all, with a Memalloc context, and return how many frames
// it freed (0 when it could make no progress). ctx tells it what the
// allocating caller allows (StartIO: it may write pages out).
type Reclaimer interface {
	Reclaim(order int, ctx Context) (freed int)
}

// Pool is a zone of page frames and its buddy allocator.
type Pool struct {
	// Set by New and never changed.
	mem             []byte
	base            PFN
	n               uint32 // frames
	pages           []Page
	grouping        bool
	throttleTimeout time.Duration
	maxRetries      int
	hooks           atomic.Pointer[hooks]

	mu                         sync.Mutex
	free                       [NrOrders]freeArea
	pcp                        pageset
	blockMT                    []MigrateType
	nrFree                     uint64 // frames on the free lists and the pageset
	wm                         Watermarks
	minFreeKbytes, scaleFactor int
	stat                       Stats
	// Direct reclaimers throttled below half the reserve wait for wake to
	// be closed, which happens when free memory is back above min.
	throttled int
	wake      chan struct{}
	// hopeless: kswapd has given up (SetReclaimHopeless).
	hopeless bool
}

type freeArea struct {
	lists [NrMigrateTypes]List
	nr    uint64 // blocks of this order, all types
}

type hooks struct {
	reclaimer Reclaimer
	kswapd    func(order int)
	release   func(PFN)
}

// ErrConfig is wrapped by every error New returns for a bad Config.
var ErrConfig = errors.New("phys: bad pool configuration")

// New takes over the memory in cfg and returns a pool with all of it free.
func New(cfg Config) (*Pool, error) {
	size := uint64(len(cfg.Mem))
	switch {
	case size == 0:
		return nil, fmt.Errorf("%w: no memory", ErrConfig)
	case size%PageSize != 0:
		return nil, fmt.Errorf("%w: size %d is not a multiple of %d", ErrConfig, size, PageSize)
	case cfg.Base%(PageblockFrames*PageSize) != 0:
		return nil, fmt.Errorf("%w: base %#x is not aligned to a %d KiB pageblock", ErrConfig, cfg.Base, PageblockFrames*PageSize>>10)
	case cfg.Base+size > 1<<32 || cfg.Base+size < cfg.Base:
		return nil, fmt.Errorf("%w: [%#x, %#x) does not fit in 32-bit physical memory", ErrConfig, cfg.Base, cfg.Base+size)
	case cfg.MinFreeKbytes < 0 || cfg.WatermarkScaleFactor < 0 || cfg.ThrottleTimeout < 0 || cfg.MaxReclaimRetries < 0:
		return nil, fmt.Errorf("%w: negative tunable", ErrConfig)
	}
	n := uint32(size / PageSize)
	p := &Pool{
		mem:             cfg.Mem,
		base:            PFN(cfg.Base >> PageShift),
		n:               n,
		pages:           make([]Page, n),
		grouping:        !cfg.NoGrouping,
		throttleTimeout: cfg.ThrottleTimeout,
		maxRetries:      cfg.MaxReclaimRetries,
		blockMT:         make([]MigrateType, (n+PageblockFrames-1)/PageblockFrames),
		scaleFactor:     cfg.WatermarkScaleFactor,
	}
	if p.throttleTimeout == 0 {
		p.throttleTimeout = time.Second
	}
	if p.maxRetries == 0 {
		p.maxRetries = 16
	}
	if p.scaleFactor == 0 {
		p.scaleFactor = 10
	}
	p.hooks.Store(&hooks{})

	// Linux marks every pageblock Movable at boot; the first unmovable
	// allocations steal what they need. Without grouping there is one
	// type, and it is Unmovable.
	initial := Movable
	if !p.grouping {
		initial = Unmovable
	}
	for b := range p.blockMT {
		p.blockMT[b] = initial
	}

	// Hand the memory to the buddy lists in the largest aligned blocks
	// that fit, as memblock_free_pages does at boot.
	for i := uint32(0); i < n; {
		order := MaxOrder
		for order > 0 && (uint32(p.pfn(i))&(1<<order-1) != 0 || i+1<<order > n) {
			order--
		}
		p.addFree(i, order, p.blockMT[i/PageblockFrames])
		p.nrFree += 1 << order
		i += 1 << order
	}
	p.pcp.init(uint64(n))

	if err := p.setWatermarks(cfg.MinFreeKbytes, p.scaleFactor); err != nil {
		return nil, err
	}
	p.stat.ManagedPages = uint64(n)
	return p, nil
}

// SetReclaimer installs direct reclaim. Without one, an allocation that
// fails against the watermarks fails at once.
func (p *Pool) SetReclaimer(r Reclaimer) { p.setHooks(func(h *hooks) { h.reclaimer = r }) }

// SetKswapd installs the hook that wakes the background reclaimer. It is
// called, without locks held, whenever an allocation finds free memory
// below low; it must not block.
func (p *Pool) SetKswapd(wake func(order int)) { p.setHooks(func(h *hooks) { h.kswapd = wake }) }

// SetRelease installs the hook that takes a frame off its owner's list
// when its last reference is dropped while PGLRU is set (Linux's
// __folio_put calling lruvec_del_folio): mm's LRU lists hold no
// reference, so whoever drops the last one, anywhere, must unlink the
// frame before it is freed. The hook runs with no phys lock held and
// must clear PGLRU; the frame (a compound page's head) is still
// allocated with one reference, and no one else can take another except
// through TryGet while finding it on the list.
func (p *Pool) SetRelease(release func(PFN)) { p.setHooks(func(h *hooks) { h.release = release }) }

// SetReclaimHopeless tells the allocator that background reclaim has
// given up (kswapd failed MAX_RECLAIM_RETRIES times in a row): ordinary
// direct reclaimers are no longer throttled waiting for it, and those
// waiting are woken, as Linux's allow_direct_reclaim does since 2024
// ("mm: vmscan: prevent infinite loop in throttle_direct_reclaim").
func (p *Pool) SetReclaimHopeless(hopeless bool) {
	p.mu.Lock()
	p.hopeless = hopeless
	if hopeless {
		p.wakeAllThrottled()
	}
	p.mu.Unlock()
}

// WakeThrottled wakes every throttled direct reclaimer, as kswapd does
// when it goes to sleep (wake_up_all on pfmemalloc_wait): they retry the
// allocation and, failing it, reclaim for themselves.
func (p *Pool) WakeThrottled() {
	p.mu.Lock()
	p.wakeAllThrottled()
	p.mu.Unlock()
}

// setHooks replaces the hooks with a changed copy; allocations read them
// without a lock.
func (p *Pool) setHooks(change func(*hooks)) {
	for {
		old := p.hooks.Load()
		h := *old
		change(&h)
		if p.hooks.CompareAndSwap(old, &h) {
			return
		}
	}
}

func (p *Pool) wakeKswapd(order int) {
	if wake := p.hooks.Load().kswapd; wake != nil {
		wake(order)
	}
}

// Start is the pool's first frame.
func (p *Pool) Start() PFN { return p.base }

// End is the frame after the pool's last.
func (p *Pool) End() PFN { return p.base + PFN(p.n) }

// Frames is the number of frames in the pool.
func (p *Pool) Frames() int { return int(p.n) }

// Contains reports whether f is a frame of the pool.
func (p *Pool) Contains(f PFN) bool { return f >= p.base && f-p.base < PFN(p.n) }

// ErrRange is wrapped by every error for a frame or address outside the
// pool.
var ErrRange = errors.New("outside the pool")

// PFNOf returns the frame holding physical address addr.
func (p *Pool) PFNOf(addr uint64) (PFN, error) {
	if addr>>PageShift > uint64(^uint32(0)) || !p.Contains(PFN(addr>>PageShift)) {
		return 0, fmt.Errorf("phys: address %#x: %w [%#x, %#x)", addr, ErrRange, p.Start().Addr(), p.End().Addr())
	}
	return PFN(addr >> PageShift), nil
}

// Page returns f's descriptor, or nil if f is not a frame of the pool.
func (p *Pool) Page(f PFN) *Page {
	if !p.Contains(f) {
		return nil
	}
	return &p.pages[f-p.base]
}

// PFNOfPage returns the frame a descriptor describes; ok is false if pg
// is not one of the pool's descriptors.
func (p *Pool) PFNOfPage(pg *Page) (f PFN, ok bool) {
	off := uintptr(unsafe.Pointer(pg)) - uintptr(unsafe.Pointer(unsafe.SliceData(p.pages)))
	i := off / unsafe.Sizeof(Page{})
	if off%unsafe.Sizeof(Page{}) != 0 || i >= uintptr(p.n) {
		return 0, false
	}
	return p.pfn(uint32(i)), true
}

// Frame returns the 4 KiB of memory of frame f.
func (p *Pool) Frame(f PFN) ([]byte, error) { return p.Block(f, 0) }

// Block returns the memory of the 2^order-frame block starting at f,
// which must be aligned to its order and lie inside the pool. The slice's
// capacity ends with the block.
func (p *Pool) Block(f PFN, order int) ([]byte, error) {
	if order < 0 || order > MaxOrder {
		return nil, fmt.Errorf("phys: block at %v: order %d out of range [0, %d]", f, order, MaxOrder)
	}
	if uint32(f)&(1<<order-1) != 0 {
		return nil, fmt.Errorf("phys: %v is not aligned to order %d", f, order)
	}
	if !p.Contains(f) || !p.Contains(f+PFN(1)<<order-1) {
		return nil, fmt.Errorf("phys: order-%d block at %v: %w", order, f, ErrRange)
	}
	return p.bytes(p.index(f), order), nil
}

func (p *Pool) bytes(i uint32, order int) []byte {
	lo := uint64(i) << PageShift
	hi := lo + PageSize<<order
	return p.mem[lo:hi:hi]
}

// pfn converts a frame index into its PFN.
func (p *Pool) pfn(i uint32) PFN { return p.base + PFN(i) }

// index converts a PFN the caller vouches for into a frame index.
func (p *Pool) index(f PFN) uint32 {
	if !p.Contains(f) {
		panic(fmt.Sprintf("phys: %v is not in the pool [%#x, %#x)", f, uint32(p.base), uint32(p.End())))
	}
	return uint32(f - p.base)
}

// blockType returns the migrate type of frame i's pageblock.
func (p *Pool) blockType(i uint32) MigrateType { return p.blockMT[i/PageblockFrames] }

// PageblockType returns the migrate type of the pageblock holding f; ok
// is false if f is not in the pool.
func (p *Pool) PageblockType(f PFN) (mt MigrateType, ok bool) {
	if !p.Contains(f) {
		return 0, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blockType(uint32(f - p.base)), true
}
