package blk

import (
	"encoding/binary"
	"fmt"
	"sync"

	"yolk/mm/phys"
)

// RAM is a block device in memory, in the manner of Linux's zram: storage is
// taken a 4 KiB page at a time on first write, a page whose bytes are all one
// repeated 32-bit word (most often zero) is kept as that word alone
// (zram's same-filled pages), and trimming or zeroing a page gives its memory
// back. It is a valid swap backend: what it stores costs memory only while
// it holds data.
//
// Pages come from a phys.Pool when one is given, charged there like any other
// kernel allocation and visible in its counters, or from the Go heap
// otherwise. RAM has no volatile cache: a completed write is as durable as
// RAM gets, so it accepts FUA and Flush and needs neither.
type RAM struct {
	name      string
	blockSize int
	size      int64
	pool      *phys.Pool
	ctx       phys.Context

	mu     sync.RWMutex
	pages  []ramPage
	stats  RAMStats
	closed bool
}

// ramPage is one 4 KiB page of the device: absent (reads as zeroes), a
// same-filled page (fill), or a stored page (a pool frame or a heap slice).
type ramPage struct {
	kind ramKind
	fill uint32
	pfn  phys.PFN
	heap []byte
}

type ramKind uint8

const (
	ramAbsent ramKind = iota
	ramSame
	ramStored
)

const ramPageSize = phys.PageSize

// RAMConfig configures a RAM device.
type RAMConfig struct {
	Name      string // for errors; default "ram"
	Size      int64  // bytes, a multiple of BlockSize
	BlockSize int    // 512 to 4096, a power of two; default 4096
	// Pool, when set, supplies the device's pages, allocated with Ctx
	// (default phys.NoIO: a swap device must not recurse into I/O).
	Pool *phys.Pool
	Ctx  phys.Context
}

// RAMStats are zram's mm_stat figures, in pages.
type RAMStats struct {
	OrigDataPages uint64 // pages holding data (stored or same-filled)
	MemUsedPages  uint64 // pages of memory the device holds
	SamePages     uint64 // same-filled pages, which cost no memory
	AllocFailures uint64 // writes that failed for want of memory
}

// NewRAM makes a RAM device.
func NewRAM(cfg RAMConfig) (*RAM, error) {
	if cfg.BlockSize == 0 {
		cfg.BlockSize = ramPageSize
	}
	if cfg.Name == "" {
		cfg.Name = "ram"
	}
	bs := cfg.BlockSize
	if bs < 512 || bs > ramPageSize || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("blk: RAM block size %d: want a power of two from 512 to %d", bs, ramPageSize)
	}
	if cfg.Size <= 0 || cfg.Size%int64(bs) != 0 {
		return nil, fmt.Errorf("blk: RAM size %d: want a positive multiple of the block size %d", cfg.Size, bs)
	}
	if cfg.Pool != nil && cfg.Ctx == 0 {
		cfg.Ctx = phys.NoIO
	}
	return &RAM{
		name:      cfg.Name,
		blockSize: bs,
		size:      cfg.Size,
		pool:      cfg.Pool,
		ctx:       cfg.Ctx,
		pages:     make([]ramPage, (cfg.Size+ramPageSize-1)/ramPageSize),
	}, nil
}

func (r *RAM) BlockSize() int     { return r.blockSize }
func (r *RAM) Size() int64        { return r.size }
func (r *RAM) Features() Features { return TrimFeature | WriteZeroesFeature }
func (r *RAM) String() string     { return r.name }

// Stats returns the device's memory figures.
func (r *RAM) Stats() RAMStats {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.stats
}

func (r *RAM) fail(op Op, off, n int64, err error) error {
	return &RequestError{Device: r.name, Op: op, Off: off, Len: n, Err: err}
}

func (r *RAM) check(op Op, off, n int64) error {
	if r.closed {
		return r.fail(op, off, n, ErrClosed)
	}
	if err := CheckRequest(r.blockSize, r.size, off, n); err != nil {
		return r.fail(op, off, n, err)
	}
	return nil
}

// ReadAt implements Device.
func (r *RAM) ReadAt(p []byte, off int64) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if err := r.check(OpRead, off, int64(len(p))); err != nil {
		return err
	}
	for len(p) > 0 {
		pg, in := off/ramPageSize, int(off%ramPageSize)
		n := min(len(p), ramPageSize-in)
		r.readPage(&r.pages[pg], p[:n], in)
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (r *RAM) readPage(pg *ramPage, dst []byte, in int) {
	switch pg.kind {
	case ramAbsent:
		clear(dst)
	case ramSame:
		fillWords(dst, in, pg.fill)
	case ramStored:
		copy(dst, r.pageBytes(pg)[in:])
	}
}

// fillWords fills dst, which starts at byte in of a page, with the page's
// repeated little-endian word.
func fillWords(dst []byte, in int, w uint32) {
	if w == 0 {
		clear(dst)
		return
	}
	var word [4]byte
	binary.LittleEndian.PutUint32(word[:], w)
	for i := range dst {
		dst[i] = word[(in+i)%4]
	}
}

func (r *RAM) pageBytes(pg *ramPage) []byte {
	if pg.heap != nil {
		return pg.heap
	}
	b, err := r.pool.Frame(pg.pfn)
	if err != nil {
		// The frame was ours from allocation until release: a failure
		// here is a corrupted descriptor, not bad input.
		panic(fmt.Sprintf("blk: RAM page frame %v: %v", pg.pfn, err))
	}
	return b
}

// WriteAt implements Device. A write that runs out of memory part way fails
// with ErrNoSpace (zram's -ENOMEM on a full device); the pages before it hold
// the new data, the rest the old.
func (r *RAM) WriteAt(p []byte, off int64, _ WriteFlags) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.check(OpWrite, off, int64(len(p))); err != nil {
		return err
	}
	start, n0 := off, int64(len(p))
	for len(p) > 0 {
		pg, in := off/ramPageSize, int(off%ramPageSize)
		n := min(len(p), ramPageSize-in)
		if err := r.writePage(&r.pages[pg], p[:n], in); err != nil {
			return r.fail(OpWrite, start, n0, err)
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (r *RAM) writePage(pg *ramPage, src []byte, in int) error {
	// A whole page that is one repeated word costs no memory.
	if in == 0 && len(src) == ramPageSize {
		if w, ok := sameFilled(src); ok {
			r.setSame(pg, w)
			return nil
		}
	}
	if pg.kind != ramStored {
		var old [ramPageSize]byte
		r.readPage(pg, old[:], 0)
		copy(old[in:], src)
		if w, ok := sameFilled(old[:]); ok {
			r.setSame(pg, w)
			return nil
		}
		if err := r.store(pg); err != nil {
			return err
		}
		copy(r.pageBytes(pg), old[:])
		return nil
	}
	copy(r.pageBytes(pg)[in:], src)
	return nil
}

func sameFilled(b []byte) (uint32, bool) {
	w := binary.LittleEndian.Uint32(b)
	for i := 4; i < len(b); i += 4 {
		if binary.LittleEndian.Uint32(b[i:]) != w {
			return 0, false
		}
	}
	return w, true
}

// store gives pg memory of its own.
func (r *RAM) store(pg *ramPage) error {
	if r.pool == nil {
		pg.heap = make([]byte, ramPageSize)
	} else {
		pfn, err := r.pool.AllocPage(r.ctx)
		if err != nil {
			r.stats.AllocFailures++
			return fmt.Errorf("%w: %w", ErrNoSpace, err)
		}
		pg.pfn = pfn
	}
	if pg.kind == ramSame {
		r.stats.SamePages--
	}
	if pg.kind == ramAbsent {
		r.stats.OrigDataPages++
	}
	pg.kind = ramStored
	r.stats.MemUsedPages++
	return nil
}

func (r *RAM) setSame(pg *ramPage, w uint32) {
	r.release(pg)
	pg.kind, pg.fill = ramSame, w
	r.stats.SamePages++
	r.stats.OrigDataPages++
}

// release returns pg to absent, giving back its memory.
func (r *RAM) release(pg *ramPage) {
	switch pg.kind {
	case ramAbsent:
		return
	case ramSame:
		r.stats.SamePages--
	case ramStored:
		if pg.heap == nil {
			if err := r.pool.Put(pg.pfn); err != nil {
				panic(fmt.Sprintf("blk: RAM page frame %v: %v", pg.pfn, err))
			}
		}
		r.stats.MemUsedPages--
	}
	r.stats.OrigDataPages--
	*pg = ramPage{}
}

// Flush implements Device; RAM has no cache to flush.
func (r *RAM) Flush() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return r.fail(OpFlush, 0, 0, ErrClosed)
	}
	return nil
}

// Trim implements Device: whole pages in the range give their memory back,
// partial pages are zeroed.
func (r *RAM) Trim(off, length int64) error { return r.zero(OpTrim, off, length) }

// WriteZeroes implements Device, as Trim: a RAM page of zeroes costs nothing,
// so NoHole changes nothing.
func (r *RAM) WriteZeroes(off, length int64, _ WriteFlags) error {
	return r.zero(OpWriteZeroes, off, length)
}

func (r *RAM) zero(op Op, off, length int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.check(op, off, length); err != nil {
		return err
	}
	for length > 0 {
		pg, in := off/ramPageSize, int(off%ramPageSize)
		n := min(length, int64(ramPageSize-in))
		p := &r.pages[pg]
		if n == ramPageSize || p.kind == ramAbsent {
			r.release(p)
		} else if p.kind == ramStored {
			clear(r.pageBytes(p)[in : in+int(n)])
		} else if err := r.writePage(p, make([]byte, n), in); err != nil {
			return r.fail(op, off, length, err)
		}
		off, length = off+n, length-n
	}
	return nil
}

// Close implements Device: it gives every page back.
func (r *RAM) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	for i := range r.pages {
		r.release(&r.pages[i])
	}
	r.closed = true
	return nil
}
