package scenarios

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"yolk/blk/nbd"
	"yolk/mm"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
)

func init() {
	scenario.Register(scenario.Scenario{
		Name:    "pressure",
		Help:    "carve a pool= MiB pool out of the board's for a memory manager of its own, swap to the NBD server nbd=HOST:PORT, and run an anonymous working set of ws= percent of that pool in spaces= address spaces (two sharing pages since fork, one with huge pages and MADV_FREE, the rest each writing an area of its own) for rounds= rounds, writing every page and checking every byte; a stat line every second, /proc/meminfo, vmstat and swaps at the end",
		Params:  pressureParams(100, "the working set, in percent of pool="),
		NBDSize: pressureNBDSize,
		Run:     pressureScenario,
	})
}

// pressureParams are the parameters of a pressure run, pressure's and
// nbdswap's: the working set is at least wsMin percent of the pool.
func pressureParams(wsMin int64, wsHelp string) []cmdline.Spec {
	return []cmdline.Spec{
		{Name: "nbd", Value: cmdline.HostPort{}, Required: true, Service: "nbd",
			Help: "the NBD server to swap to (the harness starts an nbdkit memory server on the host, big enough for the working set)"},
		{Name: "export", Value: cmdline.Text{Max: 4096}, Service: "nbd", Help: "the export's name"},
		// The board's pool bounds it further: the scenario needs that
		// much of it free in one piece.
		{Name: "pool", Value: cmdline.Int{Min: pMinPoolMiB, Max: pMaxPoolMiB}, Default: "4",
			Help: "the size in MiB of the scenario's own pool, carved out of the board's"},
		{Name: "ws", Value: cmdline.Int{Min: wsMin, Max: 400}, Default: "200", Help: wsHelp},
		{Name: "rounds", Value: cmdline.Int{Min: 2, Max: 1000}, Default: "2",
			Help: "rounds of writing every page and reading every byte back"},
		{Name: "spaces", Value: cmdline.Int{Min: pMinSpaces, Max: pMaxSpaces}, Default: fmt.Sprint(pMinSpaces),
			Help: "address spaces sharing the working set: P, its fork C and Q, and beyond those, spaces that each write an area of their own in every round, as the processes of Mel Gorman's swap-over-NBD test do"},
	}
}

// pressureNBDSize is the swap a pressure run needs (Scenario.NBDSize).
func pressureNBDSize(args cmdline.Args) int64 {
	return pressureSwapBytes(args.Int("pool"), args.Int("ws"))
}

const (
	pMinPoolMiB = 4
	pMaxPoolMiB = 256
	pBlockOrder = phys.PageblockOrder // the pool is carved in 1 MiB blocks
	pBlockBytes = phys.PageSize << pBlockOrder
	pageBytes   = phys.PageSize
	// pYield: the workload yields the processor every pYield pages, so
	// that the stat line, kswapd and the collector run (TamaGo preempts
	// no goroutine).
	pYield = 8
	// pMaxMismatchLines bounds the check lines of single mismatches.
	pMaxMismatchLines = 16
	// spaces=: P, C and Q, and up to 13 writers W4 to W16 (a space's
	// id is a byte of its pages' data).
	pMinSpaces = 3
	pMaxSpaces = 16
)

// pressureSwapBytes is the swap the scenario wants for a pool of poolMiB
// and a working set of ws percent of it: a slot for every page of the
// working set, an eighth more, and the header, in whole MiB. The harness
// starts its NBD server at least this big, and the scenario refuses a
// smaller export.
func pressureSwapBytes(poolMiB, ws int) int64 {
	wsBytes := int64(poolMiB) << 20 * int64(ws) / 100
	need := wsBytes + wsBytes/8 + phys.PageSize
	return (need + 1<<20 - 1) &^ (1<<20 - 1)
}

// The pressure scenario runs an anonymous working set bigger than memory
// on the image, with swap on a network block device: reclaim and swap in
// mm as a user would see them. The board's pool is far too big to push
// twice through NBD under QEMU, so the scenario carves a small pool out
// of it (pool= MiB, in 1 MiB blocks that lie together) and gives it a
// memory manager of its own, kswapd and direct reclaim included.
//
// Three address spaces or more share the working set (ws= percent of the
// pool, counting frames that hold distinct data):
//
//	P  an area X of small pages (MADV_NOHUGEPAGE)
//	C  P's fork, made after round 0: it shares X with P; from round 1 P
//	   writes X's first half and C its third quarter (copy-on-write,
//	   often of a page that is swapped out), and neither writes the
//	   last quarter, whose frames stay shared through swap-out and
//	   swap-in
//	Q  an area Y of huge pages (MADV_HUGEPAGE) that reclaim splits; after
//	   each round part of it is freed with MADV_FREE, and the next round
//	   first reads it back, where each page must hold its old data or,
//	   if reclaim dropped it, zeroes
//	W  spaces=N beyond three: N−3 spaces W4 to WN, each with an area Z of
//	   small pages of its own that it writes whole in every round, as
//	   each process of Mel Gorman's swap-over-NBD test writes its own
//	   anonymous mapping in a loop; each takes 1/N of the working set,
//	   P, C and Q the rest
//
// In every round each space, in a goroutine of its own, writes its pages
// with data derived from the writer, the area, the page and the round,
// then reads every page it maps back and compares every byte with what
// its model says the page holds. Once a second a stat line gives free
// memory, the LRU lists, swap in use and the swap traffic.
//
// The defaults, a 4 MiB pool and two rounds, take about 20 s under QEMU:
// swap over NBD on the image moves about 1.3 MB/s (the emulated CPU
// running the TCP stack is the bound), and the run moves some 30 MiB.
// pool=16 rounds=3 moves about 170 MiB in about two minutes.
func pressureScenario(env *scenario.Env) error { return pressureWith(env, pressureOpts{}) }

// pressureOpts are what nbdswap adds to a pressure run: the receive
// path's part in it, a flood, a watchdog.
type pressureOpts struct {
	// rx, when set, charges the run's receive memory to its pool, with
	// mode and memalloc as the run asks.
	rx       *rxPlan
	minFreeK int // the pool's min_free_kbytes (0: its default)
}

func pressureWith(env *scenario.Env, opts pressureOpts) error {
	addr := env.Args.String("nbd")
	export := env.Args.String("export")
	poolMiB := env.Args.Int("pool")
	ws := env.Args.Int("ws")
	rounds := env.Args.Int("rounds")
	spaces := env.Args.Int("spaces")
	board := env.Phys
	if board == nil {
		return fmt.Errorf("no page allocator: %v", env.PhysErr)
	}
	if env.Net == nil {
		return fmt.Errorf("no network, which the pressure scenario needs to reach nbd=%s: %v", addr, env.NetErr)
	}

	// The board's free frames, not counting those the network has charged
	// to it, which come and go with traffic (an ARP, a FIN) and are not
	// the scenario's.
	boardFreeNow := func() uint64 {
		f := board.FreeFrames()
		if env.Rx != nil {
			f += uint64(env.Rx.ChargedIn(board))
		}
		return f
	}
	boardFree := boardFreeNow()
	carved, err := carvePool(board, env.Pool, poolMiB)
	if err != nil {
		return err
	}
	small := carved.pool
	// The pool is what was asked for, all free, and the board's pool is
	// short of exactly its blocks.
	carveErr := small.Check()
	switch {
	case carveErr != nil:
	case small.Frames() != poolMiB*phys.PageblockFrames || small.FreeFrames() != uint64(small.Frames()):
		carveErr = fmt.Errorf("the pool has %d frames, %d free: want %d, all free", small.Frames(), small.FreeFrames(), poolMiB*phys.PageblockFrames)
	case boardFree-boardFreeNow() != uint64(small.Frames()):
		carveErr = fmt.Errorf("the board's pool has %d frames fewer free, not the pool's %d", boardFree-boardFreeNow(), small.Frames())
	}
	env.Check("pressure-pool", carveErr, "pool_kb", small.Frames()*4, "base", fmt.Sprintf("%#x", small.Start().Addr()),
		"blocks", len(carved.blocks), "board_free_kb", board.FreeFrames()*4)
	giveBack := true
	defer func() {
		if !giveBack {
			return
		}
		err := carved.release(board)
		if now := boardFreeNow(); err == nil && now != boardFree {
			err = fmt.Errorf("the board's pool has %d frames free (the network's charge counted as free), %d before the scenario", now, boardFree)
		}
		env.Check("pressure-board-pool", err, "free_kb", board.FreeFrames()*4)
	}()

	if opts.minFreeK > 0 {
		if err := small.SetMinFreeKbytes(opts.minFreeK); err != nil {
			return &cmdline.ParamError{Key: "min_free_kbytes", Value: strconv.Itoa(opts.minFreeK), Reason: err,
				Allowed: fmt.Sprintf("at most %d for a %d MiB pool", small.MaxMinFreeKbytes(), poolMiB)}
		}
	}
	mgr, err := mm.New(mm.Config{Pool: small, VerifyZeroed: true,
		Log: func(s string) { env.Report("kmsg", "msg", s) }})
	if err != nil {
		return err
	}
	r := &pressureRun{env: env, mgr: mgr, pool: small, rounds: rounds, rx: opts.rx}
	if r.rx != nil {
		r.rx.attach(small)
	}
	runErr := r.run(addr, export, poolMiB, ws, spaces)
	if r.rx != nil {
		// The flood stops and every charge comes back before the pool
		// may: the receive path holds none of its frames when idle.
		r.rx.detach(env)
	}

	// Everything goes back: the spaces exit, no swap slot may stay named,
	// the manager closes (swapoff), and the small pool must have every
	// frame free before its memory returns to the board's.
	for _, sp := range r.spaces {
		if err := sp.as.Exit(); err != nil && !errors.Is(err, mm.ErrExited) && runErr == nil {
			runErr = err
		}
	}
	ref, _ := mgr.SwapSlots()
	closeErr := mgr.Close()
	if r.dev != nil {
		r.dev.Close()
	}
	var leakErr error
	switch {
	case closeErr != nil:
		// The manager may still use its pool: keep the memory out of
		// the board's.
		leakErr = fmt.Errorf("%w; the pool's %d MiB stay out of the board's", closeErr, poolMiB)
	case small.Check() != nil:
		leakErr = small.Check()
	case small.FreeFrames() != uint64(small.Frames()):
		leakErr = fmt.Errorf("%d of %d frames free after every space exited", small.FreeFrames(), small.Frames())
	}
	// Frames still in use in the small pool stay out of the board's too.
	giveBack = leakErr == nil
	if leakErr == nil && ref != 0 {
		leakErr = fmt.Errorf("%d swap slots still named by a PTE after every space exited", ref)
	}
	env.Check("pressure-no-leak", leakErr, "free_kb", small.FreeFrames()*4)
	return runErr
}

// carved is a pool made of 1 MiB blocks of the board's.
type carved struct {
	pool   *phys.Pool
	blocks []phys.PFN
}

// carvePool allocates 1 MiB blocks of the board's pool until it holds
// mib of them that lie together, gives back the others, and makes a pool
// of those. A board pool without that much free in one piece makes pool=
// a bad parameter.
func carvePool(board *phys.Pool, mem []byte, mib int) (*carved, error) {
	if mem == nil || len(mem) != board.Frames()*phys.PageSize {
		return nil, fmt.Errorf("the board's pool is not mapped, so no pool can be carved out of it")
	}
	held := map[phys.PFN]bool{}
	var order []phys.PFN
	freeAll := func(keep func(phys.PFN) bool) error {
		var first error
		for _, f := range order {
			if keep != nil && keep(f) {
				continue
			}
			if err := board.Free(f, pBlockOrder); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	const step = phys.PFN(phys.PageblockFrames)
	longest := 0
	var start phys.PFN
	found := false
	for !found {
		// Nowait: neither reclaim (the board's pool has no reclaimer
		// here) nor the reserve below min.
		f, err := board.Alloc(pBlockOrder, phys.Nowait)
		if err != nil {
			break
		}
		held[f] = true
		order = append(order, f)
		lo, hi := f, f+step
		for held[lo-step] {
			lo -= step
		}
		for held[hi] {
			hi += step
		}
		run := int((hi - lo) / step)
		longest = max(longest, run)
		if run >= mib {
			// Take the blocks of the run nearest f's end, mib of them.
			start, found = lo, true
			if f+step-lo > phys.PFN(mib)*step {
				start = f + step - phys.PFN(mib)*step
			}
		}
	}
	if !found {
		if err := freeAll(nil); err != nil {
			return nil, fmt.Errorf("giving blocks back to the board's pool: %w", err)
		}
		allowed := fmt.Sprintf("an integer from %d to %d, the most the board's pool can give in one piece above its min watermark", pMinPoolMiB, longest)
		if longest < pMinPoolMiB {
			allowed = fmt.Sprintf("an integer from %d to %d, but the board's pool can give no more than %d MiB in one piece above its min watermark", pMinPoolMiB, pMaxPoolMiB, longest)
		}
		return nil, &cmdline.ParamError{Key: "pool", Value: strconv.Itoa(mib), Reason: cmdline.ErrOutOfRange, Allowed: allowed}
	}
	end := start + phys.PFN(mib)*step
	in := func(f phys.PFN) bool { return f >= start && f < end }
	if err := freeAll(in); err != nil {
		return nil, fmt.Errorf("giving blocks back to the board's pool: %w", err)
	}
	c := &carved{}
	for f := start; f < end; f += step {
		c.blocks = append(c.blocks, f)
	}
	off := int(start-board.Start()) * phys.PageSize
	sub := mem[off : off+mib*pBlockBytes]
	// The bytes must be the blocks' own.
	b, err := board.Block(start, pBlockOrder)
	if err == nil && &b[0] != &sub[0] {
		err = fmt.Errorf("the board's pool memory at %v is not where its allocator says", start)
	}
	if err != nil {
		c.release(board)
		return nil, err
	}
	c.pool, err = phys.New(phys.Config{Mem: sub, Base: start.Addr()})
	if err != nil {
		c.release(board)
		return nil, err
	}
	return c, nil
}

// release frees the blocks back to the board's pool.
func (c *carved) release(board *phys.Pool) error {
	var first error
	for _, f := range c.blocks {
		if err := board.Free(f, pBlockOrder); err != nil && first == nil {
			first = err
		}
	}
	c.blocks = nil
	return first
}

// pressureRun is one run's state.
type pressureRun struct {
	env    *scenario.Env
	mgr    *mm.Manager
	pool   *phys.Pool
	dev    *nbd.Client
	rounds int
	rx     *rxPlan // nbdswap's receive-path plan; nil for pressure
	spaces []*pSpace
	start  time.Time

	mu         sync.Mutex
	mismatches int
	checked    int64 // pages compared
	lines      int   // mismatch check lines printed
}

// pPage is what the model knows of one page of an area as one space
// maps it: who wrote it last and in which round, and whether it has been
// freed with MADV_FREE since (then it holds that data, or zeroes).
type pPage struct {
	written bool
	lazy    bool
	writer  uint8
	round   uint16
}

type pArea struct {
	id    uint8
	name  string
	addr  uint32
	pages []pPage
}

// pSpace is one address space, its areas, and which pages of which area
// it writes in a round after the first.
type pSpace struct {
	id    uint8
	name  string
	as    *mm.AddressSpace
	areas []*pArea
	// writes: in rounds after the first, the pages [lo, hi) of
	// areas[0] are written; lazy: pages [0, lazy) of areas[0] are freed
	// with MADV_FREE after each round.
	lo, hi, lazy int
	// figures
	lazyZero, lazyKept int
}

func (r *pressureRun) run(addr, export string, poolMiB, ws, spaces int) error {
	env := r.env
	ctx, cancel := context.WithTimeout(context.Background(), jDialTimeout)
	defer cancel()
	t0 := time.Now()
	cfg := nbd.Config{
		Addr: addr, Export: export, BlockSize: phys.PageSize, Name: "/dev/nbd0",
		Dial: func(ctx context.Context) (net.Conn, error) { return env.Net.DialContext(ctx, "tcp", addr) },
	}
	if r.rx != nil {
		cfg.Memalloc = r.rx.memalloc()
	}
	dev, err := nbd.Dial(ctx, cfg)
	if !env.Check("nbd-dial", err, "nbd", addr, "export", export, "ms", time.Since(t0).Milliseconds()) {
		return nil
	}
	r.dev = dev
	need := pressureSwapBytes(poolMiB, ws)
	if dev.Size() < need {
		env.Check("nbd-size", fmt.Errorf("the export has %d bytes: want at least %d (%d MiB) to swap a working set of %d%% of %d MiB",
			dev.Size(), need, need>>20, ws, poolMiB))
		return nil
	}
	if !env.Check("swapon", r.mgr.Swapon(dev, mm.SwapOptions{Name: "/dev/nbd0"}), "size_kb", dev.Size()>>10) {
		return nil
	}

	// The areas, in pages, for a working set of total frames of distinct
	// data. Each writer's Z is 1/spaces of it, or less where that would
	// leave P, C and Q less than two sections. Of the target frames left
	// to them, Y is 3/10 in whole sections, X the rest, since from round
	// 1 X's frames are the originals and P's copies of its first half
	// and C's of its third quarter, 7/4 of X in all.
	frames := r.pool.Frames()
	total := frames * ws / 100
	zPages := 0
	if n := spaces - pMinSpaces; n > 0 {
		zPages = min(total/spaces, (total-2*pgtable.PTEsPerTable)/n)
	}
	target := total - (spaces-pMinSpaces)*zPages
	yPages := max(pgtable.PTEsPerTable, target*3/10&^(pgtable.PTEsPerTable-1))
	xPages := ((target-yPages)*4 + 6) / 7 // rounded up, and up to a multiple of 4
	xPages = (xPages + 3) &^ 3
	lazy := yPages / 2 &^ (pgtable.PTEsPerTable - 1)
	if lazy == 0 {
		lazy = yPages / 2
	}
	p, err := r.newSpace(1, "P")
	if err != nil {
		return err
	}
	if err := p.mmap(1, "X", xPages, mm.MadvNohugepage); err != nil {
		return err
	}
	p.lo, p.hi = 0, xPages/2
	q, err := r.newSpace(3, "Q")
	if err != nil {
		return err
	}
	if err := q.mmap(2, "Y", yPages, mm.MadvHugepage); err != nil {
		return err
	}
	q.lo, q.hi, q.lazy = 0, yPages, lazy
	for id := pMinSpaces + 1; id <= spaces; id++ {
		w, err := r.newSpace(uint8(id), fmt.Sprintf("W%d", id))
		if err != nil {
			return err
		}
		if err := w.mmap(uint8(id), fmt.Sprintf("Z%d", id), zPages, mm.MadvNohugepage); err != nil {
			return err
		}
		w.lo, w.hi = 0, zPages
	}
	distinct := xPages*7/4 + yPages + (spaces-pMinSpaces)*zPages
	setup := []any{"pool_kb", frames * 4, "working_set_kb", distinct * 4, "x_kb", xPages * 4, "y_kb", yPages * 4}
	if spaces > pMinSpaces {
		setup = append(setup, "z_kb", zPages*4)
	}
	env.Report("pressure-setup", append(setup, "lazyfree_kb", lazy*4, "swap_kb", (dev.Size()>>10)-4, "spaces", spaces, "rounds", r.rounds)...)

	if r.rx != nil {
		if err := r.rx.startFlood(r); err != nil {
			return err
		}
		defer r.rx.startWatchdog(r)()
	}
	stop := r.statLoop()
	var runErr error
	for round := 0; round < r.rounds && runErr == nil; round++ {
		t := time.Now()
		runErr = r.round(round)
		if round == 0 && runErr == nil {
			var c *pSpace
			c, runErr = r.fork(p, 2, "C")
			if runErr == nil {
				c.lo, c.hi = xPages/2, xPages*3/4
				// C reads what round 0 wrote before it writes its own.
				runErr = r.each([]*pSpace{c}, func(sp *pSpace) error { return r.verify(sp, 0) })
			}
		}
		env.Report("pressure-round", "round", round, "ms", time.Since(t).Milliseconds(),
			"pswpout", r.vmstat("pswpout"), "pswpin", r.vmstat("pswpin"), "pgmajfault", r.vmstat("pgmajfault"),
			"mismatches", r.mismatchCount())
	}
	// The last MADV_FREE's pages, read once more.
	if runErr == nil {
		runErr = r.each([]*pSpace{q}, r.checkLazy)
	}
	elapsed := time.Since(r.start)
	stop()

	// What Linux would show, with every space still live.
	r.proc("/proc/meminfo", func(b *strings.Builder) error { return phys.WriteMeminfo(b, r.mgr.Meminfo()) })
	r.proc("/proc/vmstat", func(b *strings.Builder) error { return phys.WriteVmstat(b, r.mgr.Vmstat()) })
	r.proc("/proc/swaps", func(b *strings.Builder) error { _, err := b.WriteString(r.mgr.ProcSwaps()); return err })
	if r.rx != nil {
		r.proc("/proc/net/yolk_rx", func(b *strings.Builder) error { return r.rx.rx.WriteProc(b) })
	}

	env.Check("pressure-invariants", r.mgr.Check())
	mism := r.mismatchCount()
	r.mu.Lock()
	checked := r.checked
	r.mu.Unlock()
	oom := r.vmstat("oom_kill")
	kv := []any{"pool_kb", frames * 4, "working_set_kb", distinct * 4, "rounds", r.rounds,
		"pages_checked", checked, "mb_checked", mb(float64(checked) * pageBytes), "mismatches", mism}
	for _, n := range []string{"pswpout", "pswpin", "pgmajfault", "pgsteal_kswapd", "pgsteal_direct",
		"pgscan_kswapd", "pgscan_direct", "pglazyfreed", "thp_fault_alloc", "thp_split_page", "swap_ra",
		"pswpout_fail", "pswpin_fail", "oom_kill"} {
		kv = append(kv, n, r.vmstat(n))
	}
	kv = append(kv, "lazy_zero_pages", q.lazyZero, "lazy_kept_pages", q.lazyKept, "elapsed_ms", elapsed.Milliseconds())
	env.Report("pressure", kv...)

	var dataErr error
	switch {
	case runErr != nil:
		dataErr = runErr
	case mism > 0:
		dataErr = fmt.Errorf("%d of %d pages read back wrong", mism, checked)
	}
	env.Check("pressure-data", dataErr, "pages_checked", checked, "mismatches", mism)
	env.Check("pressure-no-oom", errIf(oom != 0, "the OOM killer killed %d spaces", oom), "oom_kill", oom)
	out, in := r.vmstat("pswpout"), r.vmstat("pswpin")
	env.Check("pressure-swapped", errIf(out == 0 || in == 0, "pswpout=%d pswpin=%d: a working set of %d%% of the pool went through swap without both", out, in, ws),
		"pswpout", out, "pswpin", in)
	return nil
}

func (r *pressureRun) newSpace(id uint8, name string) (*pSpace, error) {
	as, err := r.mgr.NewAddressSpace()
	if err != nil {
		return nil, err
	}
	sp := &pSpace{id: id, name: name, as: as}
	r.spaces = append(r.spaces, sp)
	return sp, nil
}

// mmap maps an anonymous area of n pages in sp with the given advice.
func (sp *pSpace) mmap(id uint8, name string, n int, advice mm.Advice) error {
	a, err := sp.as.Mmap(0, uint32(n)*pageBytes, mm.ProtRead|mm.ProtWrite, 0)
	if err != nil {
		return fmt.Errorf("space %s: mmap of %d KiB: %w", sp.name, n*4, err)
	}
	if err := sp.as.Madvise(a, uint32(n)*pageBytes, advice); err != nil {
		return fmt.Errorf("space %s: madvise: %w", sp.name, err)
	}
	sp.areas = append(sp.areas, &pArea{id: id, name: name, addr: a, pages: make([]pPage, n)})
	return nil
}

// fork makes a child of sp, whose model is a copy of sp's.
func (r *pressureRun) fork(sp *pSpace, id uint8, name string) (*pSpace, error) {
	as, err := sp.as.Fork()
	if err != nil {
		return nil, fmt.Errorf("fork of %s: %w", sp.name, err)
	}
	c := &pSpace{id: id, name: name, as: as}
	for _, a := range sp.areas {
		c.areas = append(c.areas, &pArea{id: a.id, name: a.name, addr: a.addr, pages: append([]pPage(nil), a.pages...)})
	}
	r.spaces = append(r.spaces, c)
	return c, nil
}

// each runs fn for every space in a goroutine of its own and returns the
// first error.
func (r *pressureRun) each(spaces []*pSpace, fn func(*pSpace) error) error {
	errs := make([]error, len(spaces))
	var wg sync.WaitGroup
	for i, sp := range spaces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(sp)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// round runs one round in every space: the lazily freed pages checked,
// the writes, every page read back, then the MADV_FREE.
func (r *pressureRun) round(round int) error {
	return r.each(r.spaces, func(sp *pSpace) error {
		if sp.lazy > 0 && round > 0 {
			if err := r.checkLazy(sp); err != nil {
				return err
			}
		}
		a := sp.areas[0]
		lo, hi := sp.lo, sp.hi
		if round == 0 {
			lo, hi = 0, len(a.pages)
		}
		buf := make([]byte, pageBytes)
		for i := lo; i < hi; i++ {
			st := pPage{written: true, writer: sp.id, round: uint16(round)}
			pressureFill(buf, a.id, i, st)
			va := a.addr + uint32(i)*pageBytes
			if err := sp.as.Write(va, buf); err != nil {
				return fmt.Errorf("space %s (pid %d): round %d: write of the page at %#08x: %w", sp.name, sp.as.PID(), round, va, err)
			}
			a.pages[i] = st
			if i%pYield == 0 {
				runtime.Gosched()
			}
		}
		if err := r.verify(sp, round); err != nil {
			return err
		}
		if sp.lazy > 0 {
			if err := sp.as.Madvise(a.addr, uint32(sp.lazy)*pageBytes, mm.MadvFree); err != nil {
				return fmt.Errorf("space %s: MADV_FREE: %w", sp.name, err)
			}
			for i := range sp.lazy {
				a.pages[i].lazy = true
			}
		}
		return nil
	})
}

// verify reads every page sp maps back and compares it with the model.
// A page that differs is counted and reported with its address; an
// access that fails ends the space's round.
func (r *pressureRun) verify(sp *pSpace, round int) error {
	got := make([]byte, pageBytes)
	want := make([]byte, pageBytes)
	for _, a := range sp.areas {
		for i := range a.pages {
			st := a.pages[i]
			if st.lazy {
				continue // checkLazy reads it
			}
			va := a.addr + uint32(i)*pageBytes
			if err := sp.as.Read(va, got); err != nil {
				return fmt.Errorf("space %s (pid %d): round %d: read of the page at %#08x: %w", sp.name, sp.as.PID(), round, va, err)
			}
			pressureFill(want, a.id, i, st)
			r.compare(sp, a, i, round, got, want, st)
			if i%pYield == 0 {
				runtime.Gosched()
			}
		}
	}
	return nil
}

// checkLazy reads the pages freed with MADV_FREE: each holds its data
// still, or zeroes if reclaim dropped it (or it was swapped out when
// freed). Either way it is marked written with what it holds, and the
// next round writes it again.
func (r *pressureRun) checkLazy(sp *pSpace) error {
	if sp.lazy == 0 {
		return nil
	}
	a := sp.areas[0]
	got := make([]byte, pageBytes)
	want := make([]byte, pageBytes)
	zero := make([]byte, pageBytes)
	for i := range sp.lazy {
		st := a.pages[i]
		if !st.lazy {
			continue
		}
		va := a.addr + uint32(i)*pageBytes
		if err := sp.as.Read(va, got); err != nil {
			return fmt.Errorf("space %s (pid %d): read of the lazily freed page at %#08x: %w", sp.name, sp.as.PID(), va, err)
		}
		st.lazy = false
		pressureFill(want, a.id, i, st)
		switch {
		case bytes.Equal(got, want):
			sp.lazyKept++
			r.compare(sp, a, i, int(st.round), got, want, st)
		case bytes.Equal(got, zero):
			sp.lazyZero++
			st = pPage{}
			r.compare(sp, a, i, int(st.round), got, zero, st)
		default:
			// Neither: a mismatch against the data it should have kept.
			r.compare(sp, a, i, int(st.round), got, want, st)
		}
		a.pages[i] = st
		if i%pYield == 0 {
			runtime.Gosched()
		}
	}
	return nil
}

// compare counts a page checked and reports a mismatch, with the
// page's address and what it should hold.
func (r *pressureRun) compare(sp *pSpace, a *pArea, i, round int, got, want []byte, st pPage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checked++
	if bytes.Equal(got, want) {
		return
	}
	r.mismatches++
	if r.lines >= pMaxMismatchLines {
		return
	}
	r.lines++
	at := mismatch(got, want)
	va := a.addr + uint32(i)*pageBytes
	what := "zeroes"
	if st.written {
		what = fmt.Sprintf("the data space %d wrote in round %d", st.writer, st.round)
	}
	r.env.Check("pressure-page", fmt.Errorf("space %s (pid %d), area %s, page %d at %#08x: byte %d reads %#02x, want %#02x (%s)",
		sp.name, sp.as.PID(), a.name, i, va, at, got[at], want[at], what), "round", round, "addr", fmt.Sprintf("%#08x", va+uint32(at)))
}

func (r *pressureRun) mismatchCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mismatches
}

// pressureFill fills a page with data that names it: the writer, the
// area, the page and the round (xorshift64 from a splitmix64 seed of
// them). A page never written is zeroes.
func pressureFill(p []byte, area uint8, page int, st pPage) {
	if !st.written {
		clear(p)
		return
	}
	z := uint64(st.writer)<<56 | uint64(area)<<48 | uint64(st.round)<<32 | uint64(uint32(page))
	z += 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	x := z ^ z>>31 | 1
	for i := 0; i+8 <= len(p); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(p[i:], x)
	}
}

func (r *pressureRun) vmstat(name string) uint64 {
	v, _ := r.mgr.VmstatValue(name)
	return v
}

// stat prints one stat line: free memory and the pool's watermarks, the
// LRU lists, swap in use, and the swap traffic so far, sizes in kB.
//
// lazyfree_kb is what MADV_FREE left on the file LRU and reclaim has not
// yet discarded or found written again: Active(file) + Inactive(file) -
// Cached, the nearest Linux's meminfo comes to a LazyFree line
// (lru_lazyfree moves a page to the inactive file list; LazyFree itself
// is only in smaps, and summing the spaces' smaps here would race with
// fork adding a space).
func (r *pressureRun) stat() {
	var free, active, inactive, fileLRU, cached, swapTotal, swapFree uint64
	for _, l := range r.mgr.Meminfo() {
		switch l.Name {
		case "MemFree":
			free = l.KB
		case "Active":
			active = l.KB
		case "Inactive":
			inactive = l.KB
		case "Active(file)", "Inactive(file)":
			fileLRU += l.KB
		case "Cached":
			cached = l.KB
		case "SwapTotal":
			swapTotal = l.KB
		case "SwapFree":
			swapFree = l.KB
		}
	}
	wm := r.pool.Watermarks()
	kb := func(frames uint64) uint64 { return frames * (phys.PageSize >> 10) }
	kv := []any{"free_kb", free, "min_kb", kb(wm.Min), "low_kb", kb(wm.Low), "high_kb", kb(wm.High),
		"active_kb", active, "inactive_kb", inactive, "lazyfree_kb", fileLRU - min(cached, fileLRU),
		"swap_used_kb", swapTotal - swapFree, "pswpin", r.vmstat("pswpin"), "pswpout", r.vmstat("pswpout"),
		"pgmajfault", r.vmstat("pgmajfault")}
	if r.rx != nil {
		kv = append(kv, r.rx.rx.Stats().StatKV()...)
	}
	r.env.Report("stat", append(kv, "t_ms", time.Since(r.start).Milliseconds())...)
}

// statLoop prints a stat line now and every second until the returned
// function is called, which prints a last one.
func (r *pressureRun) statLoop() (stop func()) {
	r.start = time.Now()
	return everySecond(r.stat)
}

// everySecond calls fn now and every second until the returned function
// is called, which calls it a last time.
func everySecond(fn func()) (stop func()) {
	fn()
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() {
		close(quit)
		<-done
		fn()
	}
}

// proc prints a /proc file.
func (r *pressureRun) proc(name string, write func(*strings.Builder) error) {
	procFile(r.env, name, write)
}

// procFile prints a /proc file: a proc line, then the file's text.
func procFile(env *scenario.Env, name string, write func(*strings.Builder) error) {
	var b strings.Builder
	if err := write(&b); err != nil {
		env.Check("proc", err, "file", name)
		return
	}
	env.Report("proc", "file", name, "lines", strings.Count(b.String(), "\n"))
	env.Text(b.String())
}
