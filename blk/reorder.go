// Reorder queue for pipelined sequential reads.
//
// Swap-in read-ahead and journal recovery read a long range of a device and
// want it in order, but they only get a network device's bandwidth with many
// reads in flight, and the NBD client completes those in any order: it runs
// them over several connections, and a server may answer out of order. The
// reorder queue keeps up to Window reads in flight, holds the blocks that
// land ahead of the one the consumer needs (its out-of-order queue, like
// TCP's ofo queue), and hands the blocks to the consumer strictly in offset
// order.
//
// # Blocks and slots
//
// The range [start, end) is cut into blocks of one page: block i is at
// start + i*PageSize and is PageSize long, except that the last one may be
// shorter (a multiple of the device's block size). The consumer's position
// is next, the block it needs next (TCP's rcv_nxt). Every block from next up
// that the queue knows anything about is a slot in a ring indexed by block
// number modulo the ring's length, a power of two; a slot is
//
//	absent   no frame and no read: never read yet, or pruned (then reread
//	         is set, and its next read counts as a refetch)
//	claimed  a reader has taken it and is getting it a frame
//	flight   a read is filling its frame
//	ready    its frame holds the block
//	failed   its read failed; it keeps its frame and the error (so that a
//	         device failing fast cannot run the reads ahead without bound),
//	         and is pruned like a ready block: reading it again is a retry
//
// Two positions move up with next: scan, below which no slot from next up is
// absent, and hi, at and above which no slot has ever been claimed. Reads are
// always issued for the lowest absent block (the one at scan), so a read for
// block i starts only when every block in [next, i) holds or awaits a frame:
// the distance from next to hi never exceeds the number of frames charged
// plus one, and the ring, which grows by doubling when a claim would not fit,
// stays about as long as the largest budget it has had. Pruning leaves holes
// (absent slots below hi); scan drops back to the lowest one, which is how
// pruned blocks get read again in offset order before anything above them.
//
// # Memory: the charge and the budget
//
// Each block in flight or buffered holds one frame from the pool, allocated
// with the configured context (default phys.NoIO: read-ahead of swap must
// not recurse into I/O). The charge is the number of frames the queue holds
// or is about to hold: reads in flight, blocks buffered (ready or failed),
// claims getting a frame, and spare frames (below). The block last handed to
// the consumer stays in its frame until the following Next; that one frame
// belongs to the consumer and is not charged.
//
// Budget bounds the charge. A reader takes the lowest absent block only while
// the charge (less spare frames, which the new read would use) is below the
// budget, with one exception that is the queue's progress guarantee: the
// block the consumer needs next always gets a frame and a read if it has
// none, even over budget, from the first reader free (if all Window readers
// are busy with blocks above it, one of those reads completes first). So with a constant budget and a pool that gives,
// the charge never exceeds the budget and nothing is ever pruned, whatever
// the Window: the budget clamps the pipeline to min(Window, Budget) reads, as
// TCP clamps the window it advertises to what its receive buffer can take
// (rcv_ssthresh). Reading blocks only to drop them would cost the network
// what it costs TCP: a retransmission, here a refetch.
//
// # Pruning
//
// The charge goes over budget when the budget drops below what is already
// committed: SetBudget (the memory-pressure event), or the pool refusing a
// frame. Then the queue prunes, following Linux's tcp_prune_ofo_queue since
// "tcp: refine tcp_prune_ofo_queue() to not drop all packets" (net-next,
// 2016): it drops buffered blocks from the far end, the highest offset
// first, and stops as soon as the charge is within the limit. The old rule,
// purge the whole out-of-order queue, threw away work that was already paid
// for and would be needed next; the far end is what the consumer needs last,
// so it is the cheapest to read again, and the blocks just above next are
// kept. The block the consumer needs next is never pruned: it would be needed
// at once. Pruned blocks become absent slots with reread set; the ordinary
// issuing rule reads them again, lowest first, when the budget allows, and
// Stats counts those reads as refetches.
//
// A prune pass runs
//
//   - when a read lands and the charge is over budget (PruneLanded): what was
//     in flight when the budget shrank arrives on top of it;
//   - on SetBudget below the charge (PruneBudget);
//   - when the next-needed block claims a frame at a full budget
//     (PruneRoom), TCP making room for in-sequence data: the first frame
//     pruned goes to it;
//   - when the pool refuses a frame for a block (PrunePool): exactly one
//     buffered block above it is pruned, if there is one, and its frame is
//     given to the lower block, which the consumer needs sooner.
//
// Spare frames, which hold no data, are given up before any block (but for
// one kept for a next-needed block not yet claimed, below). Reads in
// flight are never cancelled: the device is writing into their frames, which
// therefore cannot go back to the pool before the read returns, and a read
// that lands may find the budget back up. So a read in flight above a pruned
// block simply lands and becomes a buffered block like any other, kept if
// the charge is then within budget and otherwise the first candidate of the
// next prune pass (it is often the highest block). That is why the charge can
// stay over budget for as long as reads issued before a shrink are in
// flight, and why a pass that finds nothing more to prune stops short of its
// limit rather than touching next.
//
// # Pressure from the pool
//
// A failed allocation marks the queue under pressure. Until the pool has
// free memory above its high watermark again (kswapd's notion of balanced),
// readers start no read that needs a new frame from the pool, except for the
// next-needed block, and frames the consumer gives back are kept as spares
// (within budget) for the following reads instead of going back to the pool,
// where they would fall below the watermarks and be refused to us again. The
// next-needed block, refused a frame, takes one from the top of the
// out-of-order queue (PrunePool); failing that, it waits for a frame from the
// consumer or from a read that lands, and retries the pool with a backoff.
// Under pressure or not, the frame the consumer gives back stays with the
// queue whenever the next-needed block has none yet: the pool might not give
// it back (it would be below the watermarks), and a queue holding no frame at
// all could only wait for the pool. So the queue keeps reading, at the size
// it had when the pool ran short, and needs the pool again only to grow; once
// it has had a frame, the consumer makes progress whatever the pool does. A
// budget of 0 is treated as 1: one frame, recycled from block to block, is
// all progress needs.
//
// # Concurrency and locking
//
// Window reader goroutines, started by NewReorder and stopped by Close, do
// the reads: a fixed set, rather than a goroutine per block. One mutex,
// Reorder.mu, protects every field below it: the ring, the positions, the
// counts, the spare frames, the statistics. Nothing calls the device with it
// held, nor allocates from the pool (allocation may reclaim, and reclaim may
// shrink this very queue through SetBudget); returning frames to the pool
// and reading its watermarks happen under it, since phys's lock comes last
// and phys calls out of neither. The Trace hook runs with it held. Readers
// wait on work, the consumer on ready.

package blk

import (
	"fmt"
	"io"
	"sync"
	"time"

	"yolk/mm/phys"
)

// ReorderConfig configures a reorder queue.
type ReorderConfig struct {
	// Window is the most reads in flight, at least 1.
	Window int
	// Budget is the most frames held, in flight and buffered together; 0
	// means 1. SetBudget changes it.
	Budget int
	// Pool supplies the frames, allocated with Ctx (default phys.NoIO).
	Pool *phys.Pool
	Ctx  phys.Context
	// Trace, when set, is called after every prune pass that dropped a
	// block, with the queue's lock held: it must not call the queue.
	Trace func(PruneEvent)
}

// PruneReason says what started a prune pass.
type PruneReason uint8

const (
	// PruneLanded: a read landed while the charge was over budget.
	PruneLanded PruneReason = iota
	// PruneBudget: SetBudget lowered the budget below the charge.
	PruneBudget
	// PruneRoom: the next-needed block needed a frame at a full budget.
	PruneRoom
	// PrunePool: the pool refused a frame; a block above the one that
	// needed it gave up its own.
	PrunePool
)

var pruneReasonNames = [...]string{"landed", "budget", "room", "pool"}

func (r PruneReason) String() string {
	if int(r) < len(pruneReasonNames) {
		return pruneReasonNames[r]
	}
	return fmt.Sprintf("reason%d", r)
}

// PruneEvent describes one prune pass.
type PruneEvent struct {
	Reason PruneReason
	Next   int64   // offset the consumer needed next
	For    int64   // PruneRoom, PrunePool: the offset that needed a frame; else -1
	Pruned []int64 // offsets dropped, highest first
	Kept   int64   // highest offset still buffered afterwards, or -1
	Charge int     // the charge afterwards
	Limit  int     // the charge the pass pruned down to
}

// ReorderStats are a reorder queue's counters and current state.
type ReorderStats struct {
	Reads         uint64 // reads issued, refetches included
	Refetches     uint64 // reads of blocks that had been pruned
	Pruned        uint64 // blocks pruned
	PruneEvents   uint64 // prune passes that dropped at least one block
	AllocFailures uint64 // frames the pool refused
	ReadErrors    uint64 // failed blocks handed to the consumer

	MaxHeld     int // most frames held at once (the consumer's block not counted)
	MaxInFlight int // most reads in flight at once

	Held     int  // frames held now
	InFlight int  // reads in flight now
	Buffered int  // blocks buffered now (the out-of-order queue and next)
	Budget   int  // the budget now
	Pressure bool // the pool has refused a frame and not recovered since
}

// Reorder reads a range of a device with several reads in flight and hands
// the blocks out in order. See the comment at the top of this file.
type Reorder struct {
	dev        Device
	pool       *phys.Pool
	ctx        phys.Context
	trace      func(PruneEvent)
	start, end int64
	nblk       int64 // blocks in the range

	wg   sync.WaitGroup
	done chan struct{} // closed when Close has finished

	mu       sync.Mutex
	work     sync.Cond // readers wait for a block to read or a frame
	ready    sync.Cond // Next waits for the next block to land
	ring     []roSlot  // slots of blocks [next, next+len(ring))
	next     int64     // the block the consumer needs next
	scan     int64     // no absent slot in [next, scan)
	hi       int64     // no slot at or above hi has been claimed
	budget   int
	nFlight  int        // slots in flight
	nBuf     int        // slots ready or failed
	nClaim   int        // slots claimed
	spare    []phys.PFN // frames held for reads yet to start
	lent     phys.PFN   // the consumer's block's frame, if hasLent
	hasLent  bool
	starved  bool // the next-needed block's reader is waiting for a frame
	pressure bool // the pool refused a frame and has not recovered
	closed   bool
	stats    ReorderStats
}

type roState uint8

const (
	roAbsent roState = iota
	roClaimed
	roFlight
	roReady
	roFailed
)

type roSlot struct {
	state  roState
	reread bool // pruned: the next read is a refetch
	pfn    phys.PFN
	err    error
}

const (
	roBackoffMin = 100 * time.Microsecond
	roBackoffMax = 10 * time.Millisecond
)

// NewReorder starts reading [start, end) of dev. Both ends must be aligned to
// the device's block size, which must divide phys.PageSize. The reads start
// at once; Close must be called to stop them and give the frames back.
func NewReorder(dev Device, start, end int64, cfg ReorderConfig) (*Reorder, error) {
	if dev == nil || cfg.Pool == nil {
		return nil, fmt.Errorf("blk: reorder: need a device and a pool")
	}
	bs := dev.BlockSize()
	if bs <= 0 || phys.PageSize%bs != 0 {
		return nil, fmt.Errorf("blk: reorder: device block size %d does not divide the page size %d", bs, phys.PageSize)
	}
	if err := CheckRequest(bs, dev.Size(), start, end-start); err != nil {
		return nil, fmt.Errorf("blk: reorder: range [%d, %d): %w", start, end, err)
	}
	if cfg.Window < 1 {
		return nil, fmt.Errorf("blk: reorder: window %d: want at least 1", cfg.Window)
	}
	if cfg.Budget < 0 {
		return nil, fmt.Errorf("blk: reorder: budget %d: want at least 0", cfg.Budget)
	}
	if cfg.Ctx == 0 {
		cfg.Ctx = phys.NoIO
	}
	r := &Reorder{
		dev:    dev,
		pool:   cfg.Pool,
		ctx:    cfg.Ctx,
		trace:  cfg.Trace,
		start:  start,
		end:    end,
		nblk:   (end - start + phys.PageSize - 1) / phys.PageSize,
		done:   make(chan struct{}),
		budget: max(cfg.Budget, 1),
	}
	r.work.L = &r.mu
	r.ready.L = &r.mu
	n := 8
	for n < min(max(cfg.Window, r.budget)+2, 1<<16) {
		n *= 2
	}
	r.ring = make([]roSlot, n)
	r.stats.Budget = r.budget
	r.wg.Add(cfg.Window)
	for range cfg.Window {
		go r.reader()
	}
	return r, nil
}

// Next returns the next block of the range: its offset and its bytes, which
// stay valid until the following call of Next or Close. It waits for the
// block to land. A block whose read failed is returned as (offset, nil, the
// read's error), in its turn, after the blocks before it; the following call
// goes on with the block after it. At the end of the range Next returns
// (end, nil, io.EOF). Next must not be called from two goroutines at once.
func (r *Reorder) Next() (off int64, data []byte, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hasLent {
		r.hasLent = false
		r.giveBack(r.lent)
	}
	for {
		if r.closed {
			return 0, nil, fmt.Errorf("blk: reorder queue: %w", ErrClosed)
		}
		if r.next >= r.nblk {
			return r.end, nil, io.EOF
		}
		if st := r.slot(r.next).state; st == roReady || st == roFailed {
			break
		}
		r.ready.Wait()
	}
	i := r.next
	s := r.slot(i)
	pfn, err := s.pfn, s.err
	*s = roSlot{}
	r.nBuf--
	r.next++
	r.scan = max(r.scan, r.next)
	r.work.Broadcast()
	off, n := r.block(i)
	if err != nil {
		r.stats.ReadErrors++
		r.giveBack(pfn)
		return off, nil, err
	}
	r.lent, r.hasLent = pfn, true
	return off, r.frame(pfn)[:n:n], nil
}

// SetBudget changes the budget, in frames; less than 1 means 1. Lowering it
// below the charge prunes the out-of-order queue from the far end at once;
// reads in flight count until they land.
func (r *Reorder) SetBudget(frames int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.budget = max(frames, 1)
	r.stats.Budget = r.budget
	if r.charge() > r.budget {
		r.pruneTo(r.budget, r.next, PruneBudget, -1)
	}
	r.work.Broadcast()
}

// Stats returns the queue's counters and state.
func (r *Reorder) Stats() ReorderStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Held = r.held()
	s.InFlight = r.nFlight
	s.Buffered = r.nBuf
	s.Pressure = r.pressure
	return s
}

// Close stops issuing reads, waits for those in flight, and gives every frame
// back to the pool, the consumer's block's included. Later calls of Next fail
// with ErrClosed. It does not close the device.
func (r *Reorder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.done
		return nil
	}
	r.closed = true
	r.work.Broadcast()
	r.ready.Broadcast()
	r.mu.Unlock()

	r.wg.Wait()

	r.mu.Lock()
	for i := r.next; i < r.hi; i++ {
		if s := r.slot(i); s.state == roReady || s.state == roFailed {
			r.putFrame(s.pfn)
			*s = roSlot{}
			r.nBuf--
		}
	}
	for _, pfn := range r.spare {
		r.putFrame(pfn)
	}
	r.spare = nil
	if r.hasLent {
		r.putFrame(r.lent)
		r.hasLent = false
	}
	r.mu.Unlock()
	close(r.done)
	return nil
}

// reader is one of the Window goroutines that issue reads.
func (r *Reorder) reader() {
	defer r.wg.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		i, ok := r.claim()
		if !ok {
			return
		}
		if r.slot(i).state == roClaimed && !r.getFrame(i) {
			continue
		}
		s := r.slot(i)
		r.stats.Reads++
		if s.reread {
			r.stats.Refetches++
			s.reread = false
		}
		off, n := r.block(i)
		buf := r.frame(s.pfn)[:n]
		// s is not used past here: the ring may grow while we read.
		r.mu.Unlock()
		err := r.dev.ReadAt(buf, off)
		r.mu.Lock()
		r.land(i, err)
	}
}

// claim waits for a block to read and claims it; it reports false once the
// queue is closed. The claimed slot is in flight already if a spare frame or
// a pruned one was at hand, and claimed otherwise.
func (r *Reorder) claim() (int64, bool) {
	for {
		if r.closed {
			return 0, false
		}
		for r.scan < r.hi && r.slot(r.scan).state != roAbsent {
			r.scan++
		}
		if i := r.scan; i < r.nblk && (i == r.next || r.mayIssue()) {
			r.take(i)
			return i, true
		}
		r.work.Wait()
	}
}

// mayIssue reports whether a read ahead of the next-needed block may start.
func (r *Reorder) mayIssue() bool {
	if r.nFlight+r.nBuf+r.nClaim >= r.budget {
		return false
	}
	if r.pressure && r.pool.WatermarkOK(0, r.pool.Watermarks().High) {
		r.pressure = false // the pool is balanced again
	}
	// Under pressure, only a spare frame can start a read ahead.
	return !r.pressure || len(r.spare) > 0
}

// take claims block i, the lowest absent one.
func (r *Reorder) take(i int64) {
	if need := i - r.next + 1; need > int64(len(r.ring)) {
		r.grow(need)
	}
	r.slot(i).state = roClaimed
	r.nClaim++
	r.hi = max(r.hi, i+1)
	r.scan = i + 1
	if n := len(r.spare); n > 0 {
		pfn := r.spare[n-1]
		r.spare = r.spare[:n-1]
		r.bind(i, pfn)
	} else if i == r.next && r.charge() > r.budget {
		off, _ := r.block(i)
		r.pruneTo(r.budget, r.next, PruneRoom, off)
	}
}

// grow makes the ring hold at least need slots from next.
func (r *Reorder) grow(need int64) {
	n := len(r.ring)
	for int64(n) < need {
		n *= 2
	}
	ring := make([]roSlot, n)
	for i := r.next; i < r.hi; i++ {
		ring[i&int64(n-1)] = *r.slot(i)
	}
	r.ring = ring
}

// getFrame allocates a frame for claimed block i, unlocking around the
// allocation. When the pool refuses, it takes a spare frame or prunes one
// from above i; failing that, if i is the next-needed block it waits for a
// frame and retries the pool with a backoff, and otherwise it gives up the
// claim. It reports whether i is now in flight.
func (r *Reorder) getFrame(i int64) bool {
	backoff := roBackoffMin
	for {
		r.mu.Unlock()
		pfn, err := r.pool.AllocPage(r.ctx)
		r.mu.Lock()
		if err == nil {
			switch {
			case r.slot(i).state == roFlight:
				// Fed a frame meanwhile (feed).
				r.putFrame(pfn)
				return true
			case r.closed:
				r.putFrame(pfn)
				r.unclaim(i)
				return false
			}
			r.bind(i, pfn)
			return true
		}
		r.stats.AllocFailures++
		r.pressure = true
		if ok, done := r.starve(i, backoff); done {
			return ok
		}
		backoff = min(2*backoff, roBackoffMax)
	}
}

// starve finds claimed block i a frame after the pool refused one. It
// returns done=false when the pool should be tried again.
func (r *Reorder) starve(i int64, backoff time.Duration) (ok, done bool) {
	var t *time.Timer
	fired := false
	defer func() {
		if t != nil {
			t.Stop()
		}
		r.starved = false
	}()
	for {
		switch {
		case r.slot(i).state == roFlight:
			return true, true // fed while we waited
		case r.closed:
			r.unclaim(i)
			return false, true
		case len(r.spare) > 0:
			pfn := r.spare[len(r.spare)-1]
			r.spare = r.spare[:len(r.spare)-1]
			r.bind(i, pfn)
			return true, true
		}
		off, _ := r.block(i)
		if r.pruneTo(r.charge()-1, i, PrunePool, off) > 0 {
			return true, true // the pruned block's frame went to i
		}
		if i != r.next {
			// A read ahead: not worth waiting for. The pressure flag
			// stops readers from asking the pool again for now.
			r.unclaim(i)
			return false, true
		}
		if fired {
			return false, false
		}
		if t == nil {
			t = time.AfterFunc(backoff, func() {
				r.mu.Lock()
				fired = true
				r.work.Broadcast()
				r.mu.Unlock()
			})
		}
		// Wait for a frame: the consumer's (giveBack) or a landed
		// block's (land) is handed over by feed.
		r.starved = true
		r.work.Wait()
	}
}

// unclaim returns claimed block i to absent.
func (r *Reorder) unclaim(i int64) {
	r.slot(i).state = roAbsent
	r.nClaim--
	r.scan = min(r.scan, i)
}

// bind gives claimed block i a frame: its read may start.
func (r *Reorder) bind(i int64, pfn phys.PFN) {
	s := r.slot(i)
	s.state, s.pfn = roFlight, pfn
	r.nClaim--
	r.nFlight++
	r.stats.MaxInFlight = max(r.stats.MaxInFlight, r.nFlight)
	r.stats.MaxHeld = max(r.stats.MaxHeld, r.held())
	if r.starved && i == r.next {
		// Its reader is waiting in starve.
		r.starved = false
		r.work.Broadcast()
	}
}

// land records the end of block i's read.
func (r *Reorder) land(i int64, err error) {
	s := r.slot(i)
	s.state = roReady
	if err != nil {
		s.state, s.err = roFailed, err
	}
	r.nFlight--
	r.nBuf++
	if r.starved {
		// The next-needed block is waiting for a frame and there is
		// now one above it.
		off, _ := r.block(r.next)
		r.pruneTo(r.charge()-1, r.next, PrunePool, off)
	}
	if r.charge() > r.budget {
		r.pruneTo(r.budget, r.next, PruneLanded, -1)
	}
	if i == r.next {
		r.ready.Signal()
	}
}

// giveBack takes back a frame from the consumer. The next-needed block gets
// it if its reader is getting it a frame; a spare keeps it if that block has
// not been claimed yet, or under pressure; otherwise the pool does. A queue
// that gave its last frame to the pool while the next block's reader is
// still finding out that the pool is dry would have nothing left to read
// into: the frame the consumer gives back is what keeps the queue going when
// the pool cannot.
func (r *Reorder) giveBack(pfn phys.PFN) {
	if r.feed(pfn) {
		return
	}
	if !r.closed && r.next < r.nblk {
		keep := r.slot(r.next).state == roAbsent ||
			r.pressure && r.charge() < r.budget && r.scan < r.nblk
		if keep {
			r.spare = append(r.spare, pfn)
			r.stats.MaxHeld = max(r.stats.MaxHeld, r.held())
			r.work.Broadcast()
			return
		}
	}
	r.putFrame(pfn)
}

// feed gives pfn to the next-needed block if it is claimed: its reader is
// waiting for a frame (starve), or asking the pool for one (getFrame, which
// then gives back what it got).
func (r *Reorder) feed(pfn phys.PFN) bool {
	if r.next >= r.nblk || r.slot(r.next).state != roClaimed {
		return false
	}
	r.bind(r.next, pfn)
	return true
}

// pruneTo is a prune pass: it gives up spare frames (but one the next-needed
// block may need), then drops buffered blocks above floor from the highest
// down, while the charge is over limit.
// The frames go to block want (-1: none) if it is claimed, then to the
// next-needed block if it is claimed (feed), then back to the pool. It
// returns the number of blocks pruned.
func (r *Reorder) pruneTo(limit int, floor int64, why PruneReason, wantOff int64) int {
	want := int64(-1)
	if wantOff >= 0 {
		want = (wantOff - r.start) / phys.PageSize
	}
	dispose := func(pfn phys.PFN) {
		switch {
		case want >= 0 && r.slot(want).state == roClaimed:
			r.bind(want, pfn)
		case r.feed(pfn):
		default:
			r.putFrame(pfn)
		}
	}
	// A spare kept for a next-needed block not yet claimed stays (see
	// giveBack): it may be the last frame the queue can get.
	keep := 0
	if r.next < r.nblk && r.slot(r.next).state == roAbsent {
		keep = 1
	}
	for r.charge() > limit && len(r.spare) > keep {
		pfn := r.spare[len(r.spare)-1]
		r.spare = r.spare[:len(r.spare)-1]
		dispose(pfn)
	}
	var pruned []int64
	n := 0
	j := r.hi - 1
	for ; j > floor && r.charge() > limit; j-- {
		s := r.slot(j)
		if s.state != roReady && s.state != roFailed {
			continue
		}
		pfn := s.pfn
		*s = roSlot{reread: true}
		r.nBuf--
		r.scan = min(r.scan, j)
		n++
		if r.trace != nil {
			off, _ := r.block(j)
			pruned = append(pruned, off)
		}
		dispose(pfn)
	}
	if n == 0 {
		return 0
	}
	r.stats.Pruned += uint64(n)
	r.stats.PruneEvents++
	if r.trace != nil {
		kept := int64(-1)
		for ; j >= r.next; j-- {
			if s := r.slot(j); s.state == roReady || s.state == roFailed {
				kept, _ = r.block(j)
				break
			}
		}
		next, _ := r.block(r.next)
		r.trace(PruneEvent{
			Reason: why,
			Next:   next,
			For:    wantOff,
			Pruned: pruned,
			Kept:   kept,
			Charge: r.charge(),
			Limit:  limit,
		})
	}
	return n
}

// charge is the number of frames held or about to be.
func (r *Reorder) charge() int { return r.nFlight + r.nBuf + r.nClaim + len(r.spare) }

// held is the number of frames held.
func (r *Reorder) held() int { return r.nFlight + r.nBuf + len(r.spare) }

func (r *Reorder) slot(i int64) *roSlot { return &r.ring[i&int64(len(r.ring)-1)] }

// block returns block i's offset and length.
func (r *Reorder) block(i int64) (int64, int) {
	off := r.start + i*phys.PageSize
	return off, int(min(phys.PageSize, r.end-off))
}

func (r *Reorder) frame(pfn phys.PFN) []byte {
	b, err := r.pool.Frame(pfn)
	if err != nil {
		// The frame has been ours since allocation: a failure here is
		// a corrupted descriptor, not bad input.
		panic(fmt.Sprintf("blk: reorder frame %v: %v", pfn, err))
	}
	return b
}

func (r *Reorder) putFrame(pfn phys.PFN) {
	if err := r.pool.Put(pfn); err != nil {
		panic(fmt.Sprintf("blk: reorder frame %v: %v", pfn, err))
	}
}
