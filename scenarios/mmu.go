package scenarios

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"runtime"

	"yolk/mm"
	"yolk/mm/mmu"
	"yolk/mm/vmcheck"
	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
)

func init() {
	scenario.Register(scenario.Scenario{
		Name: "mmu",
		Help: "the vm scenario's random operations with every read and write done by a task with plain loads and stores through the live MMU, its data aborts served by mm's fault handler, every byte held to the software MMU's view; prints the aborts by kind beside the fault handler's counts",
		Params: []cmdline.Spec{
			{Name: "steps", Value: cmdline.Int{Min: 1, Max: 10000000}, Default: "2000", Help: "how many random operations to run"},
			{Name: "seed", Value: cmdline.Int{Min: math.MinInt64, Max: math.MaxInt64}, Default: "1", Help: "the seed of the operations"},
			{Name: "check_every", Value: cmdline.Int{Min: 1, Max: 1000000}, Default: "25", Help: "run mm.Check (and the MMU and smaps views) after every this many steps"},
		},
		Run: liveMMU,
	})
}

// liveMMU is vm with the MMU as the judge: vmcheck drives the same random
// operations (mmap, munmap, mprotect, MADV_FREE and huge page advice,
// fork, exit, reclaim, discard, splits) against its model, but every read
// and write is a task (mmu.CPU.Run) that touches the window with plain
// loads and stores, so that QEMU's MMU and TLB walk mm's descriptors. Its
// data aborts go to mm's fault handler; refused accesses end the task
// with the handler's SEGV. Each access is then repeated through the
// software MMU and must see the same bytes and stop at the same fault.
func liveMMU(env *scenario.Env) error {
	p := env.Phys
	if p == nil {
		return fmt.Errorf("no page allocator: %v", env.PhysErr)
	}
	cpu, err := mmu.Live()
	if err != nil {
		return err
	}
	steps := env.Args.Int("steps")
	seed := env.Args.Int64("seed")

	rig, err := newVMRig(p, cpu)
	if err != nil {
		return err
	}
	defer rig.swap.Close()
	mgr := rig.mgr
	env.Report("mmu-build", "drops_invalidation", mmu.DroppingInvalidation)

	before := cpu.Stats()
	mem := &mmu.Memory{CPU: cpu}
	runMMUProbes(env, mgr, mem)
	// The run never blocks: yield each step (see vm), and say how far it
	// got now and then, for long runs.
	yield := func(step int) {
		runtime.Gosched()
		if (step+1)%20000 == 0 {
			s := cpu.Stats()
			env.Report("mmu-progress", "steps", step+1, "aborts", s.Aborts[0]+s.Aborts[1]+s.Aborts[2]+s.Aborts[3])
		}
	}
	st, err := vmcheck.Run(mgr, rand.New(rand.NewSource(seed)), vmcheck.Config{
		Steps: steps, CheckEvery: env.Args.Int("check_every"), Memory: mem, EachStep: yield})
	env.Check("mmu-invariants", err)
	cpu.SwitchOut()

	kv := []any{"steps", st.Steps, "checks", st.Checks, "refused", st.Refused, "bytes_compared", mem.Compared, "reclaim_races", mem.Raced}
	env.Report("mmu", append(kv, opsKV(st.Ops)...)...)
	reportAborts(env, diffStats(cpu.Stats(), before), mgr.AbortStats())
	return rig.close(env, "mmu-no-leak")
}

// diffStats is what the CPU counted since before: the live MMU outlives
// a scenario, the Manager does not.
func diffStats(now, before mmu.Stats) mmu.Stats {
	d := now
	for k := range mmu.NumKinds {
		d.Aborts[k] -= before.Aborts[k]
		d.Waits[k] -= before.Waits[k]
		d.Kills[k] -= before.Kills[k]
	}
	d.Other -= before.Other
	d.Retries -= before.Retries
	d.Yields -= before.Yields
	d.Served -= before.Served
	d.Failed -= before.Failed
	d.Switches -= before.Switches
	d.FlushPage -= before.FlushPage
	d.FlushASID -= before.FlushASID
	return d
}

// reportAborts prints the real aborts by kind beside the fault handler's
// own counts and checks that they agree: every abort reached the handler
// once; each ended one way (fixed on g0, queued for the fault goroutine,
// taken again while queued, or ending its task); the handler's outcomes
// are the abort path's; and the software MMU's walk judged every abort the
// handler could look at as the hardware did.
func reportAborts(env *scenario.Env, c mmu.Stats, h mm.AbortStats) {
	var bad []string
	kv := []any{}
	var total uint32
	for k := range mmu.NumKinds {
		handled := h.ByStatus[k.Status()]
		kv = append(kv, k.String(), c.Aborts[k], k.String()+"_handler", handled)
		total += c.Aborts[k]
		if c.Aborts[k] != handled {
			bad = append(bad, fmt.Sprintf("%v: %d aborts, the handler counted %d", k, c.Aborts[k], handled))
		}
	}
	env.Report("mmu-aborts", append([]any{"total", total}, kv...)...)
	var waits, kills uint32
	for k := range mmu.NumKinds {
		waits += c.Waits[k]
		kills += c.Kills[k]
	}
	env.Report("mmu-faults", "fixed_on_g0", c.Retries, "fixed_handler", h.Fixed, "queued", c.Yields,
		"served", c.Served, "served_handler", h.Served, "failed", c.Failed, "failed_handler", h.Failed,
		"waits", waits, "kills", kills, "walked", h.Walked, "disagreed", h.Disagreed, "other", c.Other,
		"switches", c.Switches, "tlbimva", c.FlushPage, "tlbiasid", c.FlushASID)
	if c.Retries != h.Fixed || c.Served != h.Served || c.Failed != h.Failed || c.Yields != c.Served+c.Failed {
		bad = append(bad, fmt.Sprintf("outcomes: %d fixed on g0 (handler %d), %d queued, %d served (handler %d), %d failed (handler %d)",
			c.Retries, h.Fixed, c.Yields, c.Served, h.Served, c.Failed, h.Failed))
	}
	if kills != c.Failed {
		bad = append(bad, fmt.Sprintf("%d tasks killed for %d failed faults", kills, c.Failed))
	}
	if ways := c.Retries + c.Yields + waits + kills; ways != total {
		bad = append(bad, fmt.Sprintf("%d aborts, but %d fixed, %d queued, %d waits and %d kills", total, c.Retries, c.Yields, waits, kills))
	}
	if h.Disagreed != 0 {
		bad = append(bad, fmt.Sprintf("the software MMU judged %d of %d aborts differently", h.Disagreed, h.Walked))
	}
	if c.Other != 0 {
		bad = append(bad, fmt.Sprintf("%d aborts in the window were no page fault", c.Other))
	}
	if total == 0 {
		bad = append(bad, "no abort was taken")
	}
	var err error
	if len(bad) > 0 {
		err = fmt.Errorf("%v", bad)
	}
	env.Check("mmu-aborts-match", err)
}

// The probes: each entry change mm makes, followed by a task's access to
// the page with no switch in between, so that the TLB still holds what it
// held before the change unless the change invalidated it. A missing
// invalidation lets a store through a stale writable entry (past
// copy-on-write, past mprotect) or a load through a stale mapping, and the
// probe's bytes or fault show it. The random run above covers far more
// ground, but it switches spaces often, and a switch flushes the ASID.
type mmuProbe struct {
	name string
	run  func(p *prober, as *mm.AddressSpace) error
}

type prober struct {
	mem *mmu.Memory
}

var mmuProbes = []mmuProbe{
	{"tlb-fork-cow", (*prober).forkCOW},
	{"tlb-mprotect", (*prober).mprotect},
	{"tlb-munmap", (*prober).munmap},
	{"tlb-pageout", (*prober).pageout},
	{"tlb-madv-free", (*prober).madvFree},
	{"tlb-huge-fork", (*prober).hugeFork},
}

// mmuProbeRounds is how often each probe runs. A stale entry shows only
// while the TLB still holds it, and QEMU's TLB may lose one to a conflict
// between the access before the change and the one after it; a few
// rounds make a missing invalidation all but certain to show.
const mmuProbeRounds = 4

func runMMUProbes(env *scenario.Env, mgr *mm.Manager, mem *mmu.Memory) {
	p := &prober{mem: mem}
	for _, pr := range mmuProbes {
		var first error
		failed := 0
		for range mmuProbeRounds {
			as, err := mgr.NewAddressSpace()
			if err == nil {
				err = pr.run(p, as)
				if xerr := as.Exit(); err == nil {
					err = xerr
				}
			}
			if err != nil {
				failed++
				if first == nil {
					first = err
				}
			}
		}
		if first != nil {
			first = fmt.Errorf("%d of %d rounds: %w", failed, mmuProbeRounds, first)
		}
		env.Check(pr.name, first, "rounds", mmuProbeRounds)
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>12)
	}
	return b
}

// small maps n pages that stay small (MADV_NOHUGEPAGE), written once by a
// task so that the TLB holds writable entries for them.
func (p *prober) small(as *mm.AddressSpace, pages int, fill []byte) (uint32, error) {
	n := uint32(pages) * smallPage
	a, err := as.Mmap(0, n, mm.ProtRead|mm.ProtWrite, 0)
	if err == nil {
		err = as.Madvise(a, n, mm.MadvNohugepage)
	}
	if err == nil {
		err = p.mem.Write(as, a, fill)
	}
	return a, err
}

// soft reads through the software MMU and compares.
func soft(as *mm.AddressSpace, a uint32, want []byte, who string) error {
	got := make([]byte, len(want))
	if err := as.Read(a, got); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		i := 0
		for got[i] == want[i] {
			i++
		}
		return fmt.Errorf("%s reads %#02x at %#08x, want %#02x", who, got[i], a+uint32(i), want[i])
	}
	return nil
}

func wantFault(err error, addr uint32, reason mm.FaultReason) error {
	var fe *mm.FaultError
	if !errors.As(err, &fe) || fe.Addr != addr || fe.Reason != reason {
		return fmt.Errorf("the task got %v, want %v at %#08x", err, reason, addr)
	}
	return nil
}

// forkCOW: fork write-protects the parent's pages; the parent's next store
// must copy, leaving the child the old bytes.
func (p *prober) forkCOW(as *mm.AddressSpace) error {
	a0, b0 := pattern(4*smallPage, 1), pattern(4*smallPage, 2)
	a, err := p.small(as, 4, a0)
	if err != nil {
		return err
	}
	child, err := as.Fork()
	if err != nil {
		return err
	}
	defer child.Exit()
	if err := p.mem.Write(as, a, b0); err != nil {
		return err
	}
	if err := soft(child, a, a0, "the child"); err != nil {
		return fmt.Errorf("copy-on-write bypassed: %w", err)
	}
	if err := soft(as, a, b0, "the parent"); err != nil {
		return err
	}
	got := make([]byte, len(a0))
	if err := p.mem.Read(child, a, got); err != nil {
		return err
	}
	if !bytes.Equal(got, a0) {
		return fmt.Errorf("the child's task reads the parent's store")
	}
	return nil
}

// mprotect: a store after write permission is taken away must fault.
func (p *prober) mprotect(as *mm.AddressSpace) error {
	a0 := pattern(smallPage, 3)
	a, err := p.small(as, 1, a0)
	if err != nil {
		return err
	}
	if err := as.Mprotect(a, smallPage, mm.ProtRead); err != nil {
		return err
	}
	if err := wantFault(p.mem.Write(as, a, pattern(smallPage, 4)), a, mm.AccessError); err != nil {
		return fmt.Errorf("store to a read-only page: %w", err)
	}
	return soft(as, a, a0, "the space")
}

// munmap: a load after the mapping went must fault.
func (p *prober) munmap(as *mm.AddressSpace) error {
	a, err := p.small(as, 2, pattern(2*smallPage, 5))
	if err != nil {
		return err
	}
	if err := as.Munmap(a, 2*smallPage); err != nil {
		return err
	}
	return wantFault(p.mem.Read(as, a, make([]byte, 2*smallPage)), a, mm.MapError)
}

// pageout: after MADV_PAGEOUT unmaps the pages to swap, a load must fault
// them back with their bytes.
func (p *prober) pageout(as *mm.AddressSpace) error {
	a0 := pattern(8*smallPage, 6)
	a, err := p.small(as, 8, a0)
	if err != nil {
		return err
	}
	if err := as.Madvise(a, 8*smallPage, mm.MadvPageout); err != nil {
		return err
	}
	got := make([]byte, len(a0))
	if err := p.mem.Read(as, a, got); err != nil {
		return err
	}
	if !bytes.Equal(got, a0) {
		return fmt.Errorf("the pages read back differ")
	}
	return nil
}

// madvFree: MADV_FREE makes the pages old and clean; a store must make
// them dirty again (a fault the abort path fixes on g0), so that reclaim
// keeps the new bytes instead of discarding the pages.
func (p *prober) madvFree(as *mm.AddressSpace) error {
	a, err := p.small(as, 4, pattern(4*smallPage, 7))
	if err != nil {
		return err
	}
	if err := as.Madvise(a, 4*smallPage, mm.MadvFree); err != nil {
		return err
	}
	b0 := pattern(4*smallPage, 8)
	if err := p.mem.Write(as, a, b0); err != nil {
		return err
	}
	if err := as.Madvise(a, 4*smallPage, mm.MadvPageout); err != nil {
		return err
	}
	return soft(as, a, b0, "the space after reclaim")
}

// hugeFork: the same as forkCOW on a section: fork write-protects the
// section, and the parent's store splits its mapping and copies a page.
func (p *prober) hugeFork(as *mm.AddressSpace) error {
	a, err := as.Mmap(0, 2*sectionSize, mm.ProtRead|mm.ProtWrite, 0)
	if err != nil {
		return err
	}
	h := (a + sectionSize - 1) &^ (sectionSize - 1) // the whole section inside
	if err := as.Madvise(a, 2*sectionSize, mm.MadvHugepage); err != nil {
		return err
	}
	a0 := pattern(sectionSize, 9)
	if err := p.mem.Write(as, h, a0); err != nil {
		return err
	}
	child, err := as.Fork()
	if err != nil {
		return err
	}
	defer child.Exit()
	b0 := pattern(smallPage, 10)
	if err := p.mem.Write(as, h+5*smallPage, b0); err != nil {
		return err
	}
	if err := soft(child, h, a0, "the child"); err != nil {
		return fmt.Errorf("copy-on-write of a section bypassed: %w", err)
	}
	return soft(as, h+5*smallPage, b0, "the parent")
}
