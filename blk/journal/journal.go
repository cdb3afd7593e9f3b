package journal

import (
	"errors"
	"fmt"
	"sync"

	"yolk/blk"
	"yolk/mm/phys"
	"yolk/runtime/workqueue"
)

// Errors a journal returns; test with errors.Is.
var (
	// ErrAborted: an I/O error stopped the journal, as jbd2 aborts. Every
	// commit not yet acknowledged fails with it; what was acknowledged is
	// in the log and comes back by recovery on the next Open.
	ErrAborted = errors.New("journal aborted")
	// ErrClosed: the journal has been closed.
	ErrClosed = errors.New("journal closed")
	// ErrTooBig: a handle asked for more blocks than a transaction holds.
	ErrTooBig = errors.New("journal: handle larger than a transaction")
	// ErrBadRecord: a record's home block or size is not acceptable.
	ErrBadRecord = errors.New("journal: bad record")
	// ErrBadLogBlock: ReadBlock read a block's log copy and it does not
	// match the checksum its descriptor gave it when it was committed.
	ErrBadLogBlock = errors.New("journal: log copy fails its checksum")
)

// Config says how to run a journal.
type Config struct {
	// Name appears in errors and in the work queue's name.
	Name string
	// Pool supplies the commit buffers, allocated at Open with Ctx
	// (default phys.Kernel): nothing is allocated from it afterwards.
	Pool *phys.Pool
	Ctx  phys.Context
	// Queue runs every journal I/O. Nil makes one with MemReclaim, so that
	// commits reclaim waits on never wait for memory; a queue passed in
	// should be one too (a plain queue is how tests show the deadlock).
	Queue *workqueue.Queue
	// Buffers is the number of transaction buffers: one taking handles
	// while another is written. Default 2, at least 2. One more buffer is
	// kept for checkpoint and recovery, which read transactions back from
	// the log.
	Buffers int
}

// Stats are a journal's counters since Open.
type Stats struct {
	Commits           uint64 // transactions made durable
	Handles           uint64 // handles committed
	Records           uint64 // data blocks committed
	LogBlocks         uint64 // blocks written to the log (data, descriptors, commits)
	Checkpoints       uint64 // checkpoint passes
	CheckpointRecords uint64 // records written to their home blocks
	// CheckpointSkipped are records a checkpoint did not write home,
	// and CheckpointTxSkipped transactions it did not even read back: a
	// later transaction had replaced them.
	CheckpointSkipped, CheckpointTxSkipped uint64
	LogFullWaits                           uint64 // commits that had to checkpoint first for log space
	MaxGroup                               uint64 // most handles in one transaction
	MaxUsed                                uint64 // most log blocks live at once
	LogReads                               uint64 // ReadBlock calls served from a log copy
	HomeReads                              uint64 // ReadBlock calls served from the home block
}

// Journal is an open journal. Its methods may be called from any goroutine.
type Journal struct {
	dev    blk.Device
	cfg    Config
	layout Layout
	bs     int
	L      uint64 // blocks in the circular log
	name   string
	queue  *workqueue.Queue
	ownQ   bool
	fua    bool // the device honours FUA
	flush  bool // the device has a cache to flush

	recovery Recovery

	// ckptMu serialises checkpoints (the background work and a commit
	// that needs room); it is taken before logMu and mu.
	ckptMu sync.Mutex
	// logMu keeps log space from being reused under a ReadBlock: readers
	// hold it shared for the whole of their lookup and I/O, and the
	// checkpoint holds it exclusively, without I/O, to move the tail
	// (free log space and drop its log map entries). Close takes it to
	// wait for readers. Taken after ckptMu, before mu.
	logMu sync.RWMutex
	// ckHomes collects the homes a checkpoint writes, to drop their log
	// map entries once the tail has moved; under ckptMu. Its capacity,
	// the log's length, bounds the records of the transactions in it.
	ckHomes []uint64

	mu   sync.Mutex
	cond sync.Cond
	err  error // set once: aborted or closed
	// closed is set by Close, whether or not the journal had aborted.
	closed bool
	// logMap locates the log copy of every home block written by an
	// acknowledged transaction not yet checkpointed (ReadBlock).
	logMap logMap
	// running takes handles; nil while every buffer is busy.
	running *txBuf
	// committing is being written; at most one at a time, so that a
	// transaction is acknowledged only after every earlier one is durable
	// (recovery stops at the first gap).
	committing *txBuf
	// inLog are the transactions with log space, oldest first: the
	// committed ones waiting to be checkpointed and, last once placed,
	// the one being written. Its capacity, fixed at Open, is the most
	// transactions the log can hold.
	inLog []logTx
	free  []*txBuf
	bufs  []*txBuf
	// ckbuf holds one transaction read back from the log, for checkpoint
	// and recovery.
	ckbuf    *txBuf
	head     uint64 // log index where the next transaction goes
	used     uint64 // live log blocks (tail to head)
	nextSeq  uint64 // sequence of the next transaction placed in the log
	doneSeq  uint64 // every transaction up to this one is durable
	nextTid  uint64 // the last tid given to a running transaction
	doneTid  uint64 // every transaction up to this tid is durable
	ckptWork workqueue.Work
	ckptBusy bool
	// spaceWaiters are handles waiting in Begin for log space.
	spaceWaiters int
	sb           []byte // the superblock buffer (one block, from Pool)
	sbPFN        phys.PFN
	stats        Stats
}

// logTx is a transaction's place in the log.
type logTx struct {
	seq       uint64
	pos       uint64 // log index of its first block
	blocks    uint64
	committed bool // durable and acknowledged
	// live counts the records whose home's newest acknowledged copy is
	// this transaction's: 0 means a later transaction replaced every
	// one, and the checkpoint has nothing of it to write home.
	live int
}

// txBuf is one transaction's buffer, laid out exactly as the transaction
// will sit in the log: descriptor, data blocks, ..., commit. Records are
// copied into their slot when added, so a commit writes the buffer as one
// request (two when it wraps the log).
type txBuf struct {
	j     *Journal
	mem   []byte
	pfn   phys.PFN
	order int
	seq   uint64
	// tid numbers the transactions that used the buffer, in the order
	// they run and therefore commit.
	tid        uint64
	homes      []uint64 // per record
	escaped    []bool   // per record: written to the log with its magic zeroed
	crcs       []uint32 // per record: the crc32c in its tag, set by seal
	n          int      // records added
	reserve    int      // records promised to open handles, not yet added
	updates    int      // open handles
	handles    int      // handles that joined
	wantCommit bool
	pos        uint64 // log index of the first block, once placed
	blocks     uint64 // log blocks, once placed
	placed     bool
	work       workqueue.Work
}

// slotOff is the byte offset of record i's data block in the buffer.
func (t *txBuf) slotOff(i int) int {
	tpd := tagsPerDescriptor(t.j.bs)
	return (i + i/tpd + 1) * t.j.bs
}

func (t *txBuf) slot(i int) []byte {
	o := t.slotOff(i)
	return t.mem[o : o+t.j.bs]
}

// Format writes a fresh, empty journal's superblock at l.LogStart. The log
// blocks need no initialisation: a transaction is recognised by its
// sequence number and checksums, never by the absence of old data.
func Format(dev blk.Device, l Layout) error {
	if err := l.validate(dev.BlockSize(), dev.Size()); err != nil {
		return err
	}
	b := make([]byte, l.BlockSize)
	sb := superblock{Layout: l, sequence: 1}
	sb.encode(b)
	return writeDurable(dev, b, int64(l.LogStart)*int64(l.BlockSize))
}

// writeDurable writes b and returns once it is durable.
func writeDurable(dev blk.Device, b []byte, off int64) error {
	f := dev.Features()
	if f&blk.FUAFeature != 0 {
		return dev.WriteAt(b, off, blk.FUA)
	}
	if err := dev.WriteAt(b, off, 0); err != nil {
		return err
	}
	if f&blk.FlushFeature != 0 {
		return dev.Flush()
	}
	return nil
}

// Open opens the journal whose superblock is block logStart of dev (in
// units of the block size recorded there: pass the block number given to
// Format), recovering it first: every committed transaction still in the
// log is written to its home blocks. Open allocates the commit buffers; the
// commit path allocates nothing from the pool after it returns.
func Open(dev blk.Device, logStart uint64, blockSize int, cfg Config) (*Journal, error) {
	if cfg.Pool == nil {
		return nil, errors.New("journal: Config.Pool is required")
	}
	if cfg.Buffers == 0 {
		cfg.Buffers = 2
	}
	if cfg.Buffers < 2 {
		return nil, fmt.Errorf("journal: %d buffers: want at least 2", cfg.Buffers)
	}
	if cfg.Ctx == 0 {
		cfg.Ctx = phys.Kernel
	}
	if cfg.Name == "" {
		cfg.Name = "journal"
	}
	if blockSize < sector || blockSize > 4096 || blockSize&(blockSize-1) != 0 || blockSize%dev.BlockSize() != 0 {
		return nil, fmt.Errorf("journal: block size %d for a device of block size %d", blockSize, dev.BlockSize())
	}
	j := &Journal{dev: dev, cfg: cfg, name: cfg.Name, bs: blockSize}
	j.cond.L = &j.mu
	f := dev.Features()
	j.fua, j.flush = f&blk.FUAFeature != 0, f&blk.FlushFeature != 0

	ok := false
	defer func() {
		if !ok {
			j.release()
		}
	}()
	var err error
	if j.sbPFN, err = cfg.Pool.Alloc(0, cfg.Ctx); err != nil {
		return nil, fmt.Errorf("journal: superblock buffer: %w", err)
	}
	frame, _ := cfg.Pool.Frame(j.sbPFN)
	j.sb = frame[:blockSize]
	if err := dev.ReadAt(j.sb, int64(logStart)*int64(blockSize)); err != nil {
		return nil, fmt.Errorf("journal: reading the superblock: %w", err)
	}
	sb, err := decodeSuperblock(j.sb, logStart)
	if err != nil {
		return nil, err
	}
	if sb.BlockSize != blockSize {
		return nil, fmt.Errorf("%w: block size %d, opened with %d", ErrCorrupt, sb.BlockSize, blockSize)
	}
	if err := sb.Layout.validate(dev.BlockSize(), dev.Size()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	j.layout, j.L = sb.Layout, sb.logLen()

	if err := j.allocBuffers(); err != nil {
		return nil, err
	}
	if cfg.Queue == nil {
		q, err := workqueue.New("jbd2/"+cfg.Name, cfg.Pool, workqueue.Config{Flags: workqueue.MemReclaim, MaxActive: 2})
		if err != nil {
			return nil, fmt.Errorf("journal: work queue: %w", err)
		}
		j.queue, j.ownQ = q, true
	} else {
		j.queue = cfg.Queue
	}
	j.ckptWork.Func = func(*workqueue.Work, []byte) { j.checkpointWork() }

	// Recovery is journal I/O like any other: it runs on the queue.
	err = j.runOnQueue(func() (err error) {
		j.recovery, err = j.recover(sb)
		return err
	})
	if err != nil {
		return nil, err
	}
	j.running = j.takeBuffer()
	ok = true
	return j, nil
}

func (j *Journal) allocBuffers() error {
	size := txBlocks(j.layout.MaxTransaction, j.bs) * j.bs
	order := 0
	for phys.PageSize<<order < size {
		order++
	}
	for i := range j.cfg.Buffers + 1 {
		pfn, err := j.cfg.Pool.Alloc(order, j.cfg.Ctx)
		if err != nil {
			return fmt.Errorf("journal: commit buffer of order %d: %w", order, err)
		}
		mem, err := j.cfg.Pool.Block(pfn, order)
		if err != nil {
			return err
		}
		t := &txBuf{
			j: j, mem: mem[:size], pfn: pfn, order: order,
			homes:   make([]uint64, j.layout.MaxTransaction),
			escaped: make([]bool, j.layout.MaxTransaction),
			crcs:    make([]uint32, j.layout.MaxTransaction),
		}
		t.work.Func = func(*workqueue.Work, []byte) { j.commitWork(t) }
		j.bufs = append(j.bufs, t)
		if i == 0 {
			j.ckbuf = t
		} else {
			j.free = append(j.free, t)
		}
	}
	// The smallest transaction takes three blocks.
	j.inLog = make([]logTx, 0, j.L/3+1)
	// The log map and the checkpoint's list of homes hold at most one
	// entry per log block: sized here, they never grow (see logMap).
	j.logMap = newLogMap(j.L)
	j.ckHomes = make([]uint64, 0, j.L)
	return nil
}

// release gives every buffer back to the pool and stops an own queue.
func (j *Journal) release() {
	if j.ownQ && j.queue != nil {
		j.queue.Destroy()
		j.queue = nil
	}
	for _, t := range j.bufs {
		j.cfg.Pool.Free(t.pfn, t.order)
	}
	j.bufs, j.free = nil, nil
	if j.sb != nil {
		j.cfg.Pool.Free(j.sbPFN, 0)
		j.sb = nil
	}
}

// takeBuffer makes a free buffer the running transaction's. Called with mu
// held (or before the journal is shared).
func (j *Journal) takeBuffer() *txBuf {
	if len(j.free) == 0 {
		return nil
	}
	t := j.free[len(j.free)-1]
	j.free = j.free[:len(j.free)-1]
	t.n, t.reserve, t.updates, t.handles, t.wantCommit = 0, 0, 0, 0, false
	t.pos, t.blocks, t.placed = 0, 0, false
	j.nextTid++
	t.tid = j.nextTid
	return t
}

// Layout returns the journal's geometry.
func (j *Journal) Layout() Layout { return j.layout }

// Device is the block device the journal is on.
func (j *Journal) Device() blk.Device { return j.dev }

// BlockSize returns the journal's block size: the size of every block
// added to a handle or read with ReadBlock.
func (j *Journal) BlockSize() int { return j.bs }

// Recovery returns what Open's recovery found.
func (j *Journal) Recovery() Recovery { return j.recovery }

// Stats returns the journal's counters.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.stats
}

// Handle is one atomic update: the blocks added to it are committed
// together or not at all (jbd2's handle_t). It belongs to one goroutine.
type Handle struct {
	j    *Journal
	tx   *txBuf
	tid  uint64 // the transaction's, as its buffer is reused
	n    int    // blocks promised
	used int
	done bool
}

// Begin starts a handle that will add at most nblocks blocks, waiting while
// the running transaction cannot take that many (jbd2_journal_start).
func (j *Journal) Begin(nblocks int) (Handle, error) {
	if nblocks < 0 || nblocks > j.layout.MaxTransaction {
		return Handle{}, fmt.Errorf("%w: %d blocks, a transaction holds %d", ErrTooBig, nblocks, j.layout.MaxTransaction)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for {
		if j.err != nil {
			return Handle{}, j.err
		}
		t := j.running
		if t != nil && t.n+t.reserve+nblocks <= j.layout.MaxTransaction {
			if j.logRoom(t.n + t.reserve + nblocks) {
				t.reserve += nblocks
				t.updates++
				t.handles++
				return Handle{j: j, tx: t, tid: t.tid, n: nblocks}, nil
			}
			// The log is full: wait for a checkpoint, committing
			// the running transaction if only it can make room.
			j.spaceWaiters++
			if t.n+t.reserve > 0 {
				t.wantCommit = true
			}
			j.kick()
			j.cond.Wait()
			j.spaceWaiters--
			continue
		}
		if t != nil && t.n+t.reserve > 0 {
			// Full: commit it as soon as its handles are done.
			t.wantCommit = true
			j.kick()
		}
		j.cond.Wait()
	}
}

// logRoom reports whether the running transaction may hold records
// blocks: the log must keep, beside the placed transactions and one being
// committed but not yet placed, those records and the reserve for their
// control blocks (jbd2's add_transaction_credits). Called with mu held.
func (j *Journal) logRoom(records int) bool {
	need := j.used + uint64(records) + uint64(reserveBlocks(j.layout))
	if t := j.committing; t != nil && !t.placed {
		need += uint64(txBlocks(t.n, j.bs))
	}
	return need <= j.L
}

// Add records that block home (a block number of the device, outside the
// journal region) is to hold data (one block). The data is copied.
func (h *Handle) Add(home uint64, data []byte) error {
	j := h.j
	if h.done {
		return fmt.Errorf("%w: handle already committed", ErrBadRecord)
	}
	if len(data) != j.bs {
		return fmt.Errorf("%w: %d bytes, the block size is %d", ErrBadRecord, len(data), j.bs)
	}
	if err := j.checkHome(home); err != nil {
		return err
	}
	if h.used == h.n {
		return fmt.Errorf("%w: handle promised %d blocks", ErrTooBig, h.n)
	}
	j.mu.Lock()
	t := h.tx
	i := t.n
	t.n++
	t.reserve--
	j.mu.Unlock()
	h.used++
	t.homes[i] = home
	copy(t.slot(i), data)
	return nil
}

func (j *Journal) checkHome(home uint64) error {
	devBlocks := uint64(j.dev.Size()) / uint64(j.bs)
	if home >= devBlocks {
		return fmt.Errorf("%w: home block %d beyond the device's %d blocks", ErrBadRecord, home, devBlocks)
	}
	if home >= j.layout.LogStart && home < j.layout.LogStart+j.layout.LogBlocks {
		return fmt.Errorf("%w: home block %d is inside the journal", ErrBadRecord, home)
	}
	return nil
}

// Commit ends the handle and returns once its transaction is durable in
// the log: its blocks, descriptors and commit block written with FUA (or
// followed by a flush where the device has no FUA). Handles that end
// while a transaction is being written are grouped into the next one
// (group commit).
func (h *Handle) Commit() error {
	j := h.j
	if h.done {
		return fmt.Errorf("%w: handle already committed", ErrBadRecord)
	}
	h.done = true
	j.mu.Lock()
	defer j.mu.Unlock()
	t := h.tx
	t.reserve -= h.n - h.used
	t.updates--
	if h.used == 0 {
		j.kick()
		return nil
	}
	// The buffer is reused once its transaction is durable: the
	// transaction is known by its tid, not by its buffer.
	if t == j.running && t.tid == h.tid {
		t.wantCommit = true
		j.kick()
	}
	for j.doneTid < h.tid && j.err == nil {
		j.cond.Wait()
	}
	if j.doneTid >= h.tid {
		return nil
	}
	return j.err
}

// kick starts the commit of the running transaction if it is wanted, has
// no open handles and nothing else is being written. Called with mu held.
func (j *Journal) kick() {
	t := j.running
	if t != nil && t.wantCommit && t.updates == 0 && t.n == 0 {
		t.wantCommit = false
	}
	if t == nil || !t.wantCommit || t.updates > 0 || j.committing != nil || j.err != nil {
		j.maybeCheckpoint()
		return
	}
	t.seq = j.nextSeq
	j.nextSeq++
	j.committing = t
	j.running = j.takeBuffer()
	g := uint64(t.handles)
	j.stats.MaxGroup = max(j.stats.MaxGroup, g)
	j.stats.Handles += g
	j.queue.Queue(&t.work)
	j.maybeCheckpoint()
	j.cond.Broadcast()
}

// maybeCheckpoint queues a checkpoint when a handle waits for log space,
// and in the background once the log is three quarters full, so that a
// commit seldom finds it full and waits for the checkpoint itself. (jbd2
// checkpoints in the foreground, when a handle finds too little space.)
// Later is cheaper: a checkpoint skips every record a later transaction
// replaced, so the longer the log the fewer home writes. Called with mu
// held.
func (j *Journal) maybeCheckpoint() {
	if (j.spaceWaiters > 0 || 4*j.used > 3*j.L) && !j.ckptBusy && j.err == nil && j.hasCommitted() {
		j.ckptBusy = true
		j.queue.Queue(&j.ckptWork)
	}
}

func (j *Journal) hasCommitted() bool {
	return len(j.inLog) > 0 && j.inLog[0].committed
}

// abort stops the journal with err. Called with mu held.
func (j *Journal) abort(err error) {
	if j.err == nil {
		j.err = fmt.Errorf("%w: %s: %w", ErrAborted, j.name, err)
	}
	j.cond.Broadcast()
}

// Close commits what handles have added, checkpoints everything, marks the
// journal clean and gives its buffers back. Handles still open are waited
// for.
func (j *Journal) Close() error {
	j.mu.Lock()
	if errors.Is(j.err, ErrClosed) {
		j.mu.Unlock()
		return nil
	}
	if t := j.running; t != nil && t.n+t.reserve > 0 {
		t.wantCommit = true
		j.kick()
	}
	for j.err == nil && (j.committing != nil || (j.running != nil && j.running.n+j.running.reserve > 0)) {
		j.cond.Wait()
	}
	err := j.err
	j.mu.Unlock()
	if err == nil {
		err = j.runOnQueue(func() error {
			if err := j.checkpoint(); err != nil {
				return err
			}
			j.mu.Lock()
			seq := j.nextSeq
			j.mu.Unlock()
			return j.writeSuperblock(0, seq)
		})
	}
	j.mu.Lock()
	if j.err == nil {
		j.err = fmt.Errorf("%s: %w", j.name, ErrClosed)
	}
	j.closed = true
	j.cond.Broadcast()
	j.mu.Unlock()
	// Wait for the ReadBlocks under way (the new ones see closed): none
	// touches the device once Close has returned.
	j.logMu.Lock()
	j.logMu.Unlock()
	j.release()
	return err
}

// runOnQueue runs fn as a work item on the journal's queue and waits.
func (j *Journal) runOnQueue(fn func() error) error {
	var err error
	done := make(chan struct{})
	w := workqueue.Work{Func: func(*workqueue.Work, []byte) { err = fn(); close(done) }}
	j.queue.Queue(&w)
	<-done
	return err
}

// writeSuperblock records the log's tail (start: log index + 1, 0 for
// clean) and the sequence expected there, durably.
func (j *Journal) writeSuperblock(start, seq uint64) error {
	sb := superblock{Layout: j.layout, start: start, sequence: seq}
	sb.encode(j.sb)
	return writeDurable(j.dev, j.sb, int64(j.layout.LogStart)*int64(j.bs))
}

// logOff is the device offset of log index i.
func (j *Journal) logOff(i uint64) int64 {
	return int64(j.layout.LogStart+1+i) * int64(j.bs)
}
