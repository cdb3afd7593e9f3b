package scenarios

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"time"

	"yolk/blk/journal"
	"yolk/blk/nbd"
	"yolk/mm"
	"yolk/mm/phys"
	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
)

func init() {
	scenario.Register(scenario.Scenario{
		Name: "region",
		Help: "carve a pool= MiB pool for a memory manager of its own, put a journal and a region of ws= percent of that pool on the NBD server nbd=HOST:PORT, map the region shared in two address spaces (parent and child), and for rounds= rounds write every page through them (reclaim writes dirty pages back through the journal meanwhile), then msync the region batch= pages at a time; check every byte, then close, reopen the journal (recovery) and check every msync'd byte through a fresh mapping",
		Params: []cmdline.Spec{
			{Name: "nbd", Value: cmdline.HostPort{}, Required: true, Service: "nbd",
				Help: "the NBD server holding the journal and the region (the harness starts an nbdkit memory server on the host)"},
			{Name: "export", Value: cmdline.Text{Max: 4096}, Service: "nbd", Help: "the export's name"},
			{Name: "pool", Value: cmdline.Int{Min: pMinPoolMiB, Max: pMaxPoolMiB}, Default: "4",
				Help: "the size in MiB of the scenario's own pool, carved out of the board's"},
			{Name: "ws", Value: cmdline.Int{Min: 10, Max: 400}, Default: "125", Help: "the region's size, in percent of pool="},
			{Name: "rounds", Value: cmdline.Int{Min: 1, Max: 1000}, Default: "1", Help: "rounds of writing every page and reading every byte back"},
			{Name: "batch", Value: cmdline.Int{Min: 1, Max: rMaxTx}, Default: "32", Help: "pages per msync (one journal transaction)"},
			{Name: "seed", Value: cmdline.Int{Min: 0, Max: 1 << 62}, Default: "1", Help: "what the pages are filled with"},
		},
		NBDSize: func(args cmdline.Args) int64 {
			return (rLogBlocks + regionPages(args.Int("pool"), args.Int("ws"))) * phys.PageSize
		},
		Run: regionScenario,
	})
}

// The region scenario's geometry, in 4 KiB blocks: the journal's log
// (1 MiB, superblock included) at block 0, the region after it.
const (
	rLogBlocks = 256
	rMaxTx     = 62
)

func regionPages(poolMiB, ws int) int64 {
	return int64(poolMiB) * phys.PageblockFrames * int64(ws) / 100
}

type regionRun struct {
	env     *scenario.Env
	mgr     *mm.Manager
	pool    *phys.Pool
	dev     *nbd.Client
	seed    uint64
	pages   int
	checked int
	bad     int
	start   time.Time
}

func regionScenario(env *scenario.Env) error {
	addr, export := env.Args.String("nbd"), env.Args.String("export")
	poolMiB, ws, rounds, batch := env.Args.Int("pool"), env.Args.Int("ws"), env.Args.Int("rounds"), env.Args.Int("batch")
	board := env.Phys
	if board == nil {
		return fmt.Errorf("no page allocator: %v", env.PhysErr)
	}
	if env.Net == nil {
		return fmt.Errorf("no network, which the region scenario needs to reach nbd=%s: %v", addr, env.NetErr)
	}
	carved, err := carvePool(board, env.Pool, poolMiB)
	if err != nil {
		return err
	}
	small := carved.pool
	mgr, err := mm.New(mm.Config{Pool: small, VerifyZeroed: true, Log: func(s string) { env.Report("kmsg", "msg", s) }})
	if err != nil {
		return err
	}
	r := &regionRun{env: env, mgr: mgr, pool: small, seed: uint64(env.Args.Int64("seed")), pages: int(regionPages(poolMiB, ws))}
	runErr := r.run(addr, export, rounds, batch)
	closeErr := mgr.Close()
	if r.dev != nil {
		r.dev.Close()
	}
	leak := closeErr
	if leak == nil && small.FreeFrames() != uint64(small.Frames()) {
		leak = fmt.Errorf("%d of %d frames free after the region closed", small.FreeFrames(), small.Frames())
	}
	if env.Check("region-no-leak", leak, "free_kb", small.FreeFrames()*4) {
		env.Check("region-board-pool", carved.release(board), "free_kb", board.FreeFrames()*4)
	}
	return runErr
}

func (r *regionRun) run(addr, export string, rounds, batch int) error {
	env := r.env
	ctx, cancel := context.WithTimeout(context.Background(), jDialTimeout)
	defer cancel()
	dev, err := nbd.Dial(ctx, nbd.Config{Addr: addr, Export: export, BlockSize: phys.PageSize, Name: "/dev/nbd0",
		Dial: func(ctx context.Context) (net.Conn, error) { return env.Net.DialContext(ctx, "tcp", addr) }})
	if !env.Check("nbd-dial", err, "nbd", addr) {
		return nil
	}
	r.dev = dev
	need := int64(rLogBlocks+r.pages) * phys.PageSize
	if dev.Size() < need {
		return fmt.Errorf("the NBD export has %d bytes, the journal and region need %d", dev.Size(), need)
	}
	layout := journal.Layout{BlockSize: phys.PageSize, LogBlocks: rLogBlocks, MaxTransaction: rMaxTx}
	if !env.Check("journal-format", journal.Format(dev, layout), "log_kb", rLogBlocks*4) {
		return nil
	}
	j, reg, err := r.open(dev)
	if err != nil {
		return err
	}
	env.Report("region-setup", "pool_kb", r.pool.Frames()*4, "region_kb", r.pages*4, "log_kb", rLogBlocks*4,
		"batch", batch, "rounds", rounds)

	parent, err := r.mgr.NewAddressSpace()
	if err != nil {
		return err
	}
	a, err := parent.MmapRegion(0, uint32(r.pages)*phys.PageSize, mm.ProtRead|mm.ProtWrite, mm.MapShared, reg, 0)
	if err != nil {
		return err
	}
	child, err := parent.Fork()
	if err != nil {
		return err
	}
	stop := r.statLoop()
	r.start = time.Now()
	page := make([]byte, phys.PageSize)
	msyncs := 0
	var werr error
	for round := 1; round <= rounds && werr == nil; round++ {
		// Writes alternate between the spaces: one page cache either way.
		for i := 0; i < r.pages && werr == nil; i++ {
			as := parent
			if i%2 == 1 {
				as = child
			}
			r.fill(page, round, i)
			werr = as.Write(a+uint32(i)*phys.PageSize, page)
			runtime.Gosched()
		}
		// Reclaim has written back much of it already, through the
		// journal; the msyncs commit the rest, a batch at a time.
		for first := 0; first < r.pages && werr == nil; first += batch {
			n := min(batch, r.pages-first)
			werr = parent.Msync(a+uint32(first)*phys.PageSize, uint32(n)*phys.PageSize, mm.MsSync)
			msyncs++
		}
		if werr == nil {
			werr = r.verify(child, a, round)
		}
	}
	stop()
	st := reg.Stats()
	vm := func(name string) uint64 { v, _ := r.mgr.VmstatValue(name); return v }
	env.Report("region", "pool_kb", r.pool.Frames()*4, "region_kb", r.pages*4, "rounds", rounds,
		"pages_checked", r.checked, "mismatches", r.bad, "msyncs", msyncs, "commits", st.Commits,
		"pages_written", st.PagesWritten, "reclaim_writes", st.ReclaimWrites, "bg_writebacks", st.BgWritebacks,
		"pages_read", st.PagesRead, "readahead", st.Readahead, "pgpgin", vm("pgpgin"), "pgpgout", vm("pgpgout"),
		"pgmajfault", vm("pgmajfault"), "oom_kill", vm("oom_kill"), "elapsed_ms", time.Since(r.start).Milliseconds())
	r.proc("/proc/meminfo", func(b *strings.Builder) error { return phys.WriteMeminfo(b, r.mgr.Meminfo()) })
	r.proc(fmt.Sprintf("/proc/%d/smaps", parent.PID()), func(b *strings.Builder) error { return parent.WriteSmaps(b) })
	if !env.Check("region-write", werr) {
		return nil
	}
	env.Check("region-data", r.mismatch(), "pages_checked", r.checked)
	env.Check("region-invariants", r.mgr.Check())
	steal := vm("pgsteal_kswapd") + vm("pgsteal_direct")
	env.Check("region-reclaimed", errors.Join(nonzero(steal, "reclaim freed no page: the region did not put the pool under pressure"),
		nonzero(st.ReclaimWrites, "reclaim wrote no dirty page back through the journal")),
		"pgsteal", steal, "reclaim_writes", st.ReclaimWrites)

	// Everything goes: the spaces, the region (which writes nothing: every
	// page was msync'd), the journal (checkpointed home). Then the journal
	// is opened again, recovering, and every byte read back through a
	// fresh mapping of a fresh region.
	parent.Exit()
	child.Exit()
	if !env.Check("region-close", errors.Join(reg.Close(), j.Close())) {
		return nil
	}
	j, reg, err = r.open(dev)
	if !env.Check("region-reopen", err, "recovered_tx", j.Recovery().Transactions) {
		return nil
	}
	reader, err := r.mgr.NewAddressSpace()
	if err == nil {
		a, err = reader.MmapRegion(0, uint32(r.pages)*phys.PageSize, mm.ProtRead, mm.MapShared, reg, 0)
	}
	before := r.checked
	if err == nil {
		err = r.verify(reader, a, rounds)
	}
	if err == nil {
		err = r.mismatch()
	}
	env.Check("region-durable", err, "pages_checked", r.checked-before)
	reader.Exit()
	return errors.Join(reg.Close(), j.Close())
}

func (r *regionRun) open(dev *nbd.Client) (*journal.Journal, *mm.Region, error) {
	j, err := journal.Open(dev, 0, phys.PageSize, journal.Config{Name: "nbd0", Pool: r.pool})
	if err != nil {
		return nil, nil, err
	}
	// Linux's writeback intervals (30 s, looked at every 5 s): reclaim,
	// not the flusher, is what writes dirty pages back in a run this
	// short, however slow the host.
	reg, err := r.mgr.OpenRegion(mm.RegionConfig{Name: "/dev/nbd0", Journal: j, Start: rLogBlocks, Pages: uint64(r.pages)})
	if err != nil {
		j.Close()
		return nil, nil, err
	}
	return j, reg, nil
}

// fill makes page i's contents for a round: a header naming it, then
// bytes that differ from page to page and round to round.
func (r *regionRun) fill(p []byte, round, i int) {
	binary.LittleEndian.PutUint64(p[0:], r.seed)
	binary.LittleEndian.PutUint32(p[8:], uint32(round))
	binary.LittleEndian.PutUint32(p[12:], uint32(i))
	x := uint32(r.seed) ^ uint32(round)*0x9e3779b9 ^ uint32(i)*0x85ebca6b
	for k := 16; k < len(p); k += 4 {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		binary.LittleEndian.PutUint32(p[k:], x)
	}
}

// verify reads every page through as and compares it with round's.
func (r *regionRun) verify(as *mm.AddressSpace, a uint32, round int) error {
	got, want := make([]byte, phys.PageSize), make([]byte, phys.PageSize)
	for i := 0; i < r.pages; i++ {
		if err := as.Read(a+uint32(i)*phys.PageSize, got); err != nil {
			return err
		}
		r.fill(want, round, i)
		r.checked++
		if string(got) != string(want) {
			if r.bad < 5 {
				r.env.Report("region-mismatch", "page", i, "round", round, "got_round", binary.LittleEndian.Uint32(got[8:]),
					"got_page", binary.LittleEndian.Uint32(got[12:]))
			}
			r.bad++
		}
		runtime.Gosched()
	}
	return nil
}

func (r *regionRun) mismatch() error {
	if r.bad > 0 {
		return fmt.Errorf("%d of %d pages read back wrong", r.bad, r.checked)
	}
	return nil
}

func nonzero(n uint64, msg string) error {
	if n == 0 {
		return errors.New(msg)
	}
	return nil
}

// statLoop prints a stat line every second: free memory, the page cache
// and its dirty and writeback parts, and the I/O so far.
func (r *regionRun) statLoop() (stop func()) {
	start := time.Now()
	return everySecond(func() {
		kv := []any{}
		for _, l := range r.mgr.Meminfo() {
			switch l.Name {
			case "MemFree", "Cached", "Dirty", "Writeback", "Active(file)", "Inactive(file)":
				kv = append(kv, strings.ToLower(strings.NewReplacer("(", "_", ")", "").Replace(l.Name))+"_kb", l.KB)
			}
		}
		for _, n := range []string{"pgpgin", "pgpgout"} {
			v, _ := r.mgr.VmstatValue(n)
			kv = append(kv, n, v)
		}
		r.env.Report("stat", append(kv, "t_ms", time.Since(start).Milliseconds())...)
	})
}

func (r *regionRun) proc(name string, write func(*strings.Builder) error) {
	procFile(r.env, name, write)
}
