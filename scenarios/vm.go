package scenarios

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"sort"
	"strings"

	"yolk/blk"
	"yolk/mm"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
	"yolk/mm/vmcheck"
	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
)

func init() {
	scenario.Register(scenario.Scenario{
		Name: "vm",
		Help: "run steps= random mmap, munmap, mprotect, madvise (MADV_FREE and huge page advice included), fork, exit, read, write, split, discard and reclaim operations from seed= against a reference model, checking mm's invariants after each step, then that the pool got every frame back",
		Params: []cmdline.Spec{
			{Name: "steps", Value: cmdline.Int{Min: 1, Max: 10000000}, Default: "3000", Help: "how many random operations to run"},
			{Name: "seed", Value: cmdline.Int{Min: math.MinInt64, Max: math.MaxInt64}, Default: "1", Help: "the seed of the operations"},
		},
		Run: vm,
	})
}

// vm is mm's differential property test run on the image: vmcheck drives
// random address-space operations on the real pool through the software
// MMU, compares every byte read and every refused access with a naive
// model, and runs mm.Check after every step. Then every space has exited,
// and the pool must have every frame free again.
//
// The default of 3000 steps takes about 55 s under QEMU, about 17 ms a
// step, most of it in mm.Check (which also walks every frame of the
// 380 MiB pool) and the MMU and smaps views, checked every fourth step.
func vm(env *scenario.Env) error {
	p := env.Phys
	if p == nil {
		return fmt.Errorf("no page allocator: %v", env.PhysErr)
	}
	steps := env.Args.Int("steps")
	seed := env.Args.Int64("seed")

	rig, err := newVMRig(p, nil)
	if err != nil {
		return err
	}
	defer rig.swap.Close()
	mgr := rig.mgr
	// Halfway through, with the address spaces live, show what Linux
	// would: /proc/meminfo and the first space's maps (its smaps runs to
	// hundreds of lines; the host tests check that format).
	var procErr error
	midway := func() {
		files := []struct {
			name  string
			write func(*strings.Builder) error
		}{{"/proc/meminfo", func(b *strings.Builder) error { return phys.WriteMeminfo(b, mgr.Meminfo()) }}}
		if spaces := mgr.AddressSpaces(); len(spaces) > 0 {
			as := spaces[0]
			files = append(files,
				struct {
					name  string
					write func(*strings.Builder) error
				}{fmt.Sprintf("/proc/%d/maps", as.PID()), func(b *strings.Builder) error { return as.WriteMaps(b) }})
		}
		for _, f := range files {
			var b strings.Builder
			if err := f.write(&b); err != nil {
				procErr = err
				return
			}
			env.Report("proc", "file", f.name, "lines", strings.Count(b.String(), "\n"))
			env.Text(b.String())
		}
	}
	// The run never blocks, and TamaGo has no sysmon to preempt it: without
	// a yield per step the garbage collector's worker never runs, no cycle
	// completes, and the Go heap grows until the runtime region is full
	// (10000 steps died so at about 80 MB). The heap's size and the cycles
	// that ran are reported at the end.
	yield := func(int) { runtime.Gosched() }
	st, err := vmcheck.Run(mgr, rand.New(rand.NewSource(seed)), vmcheck.Config{Steps: steps, ViewEvery: 4, Midway: midway, EachStep: yield})
	if procErr != nil {
		return procErr
	}
	env.Check("vm-invariants", err)
	env.Report("vm", "steps", st.Steps, "checks", st.Checks, "refused", st.Refused,
		"max_spaces", st.MaxSpaces, "max_vmas", st.MaxVMAs, "max_anon_pages", st.MaxPages,
		"max_anon_vmas", st.MaxAnonVMA)
	env.Report("vm-ops", opsKV(st.Ops)...)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	env.Report("go-heap", "sys_kb", ms.HeapSys>>10, "alloc_kb", ms.HeapAlloc>>10, "gc_cycles", ms.NumGC)

	return rig.close(env, "vm-no-leak")
}

// vmRig is what the vm and mmu scenarios run vmcheck on: a Manager over
// the board's pool, with swap on a RAM device whose pages come from the
// pool itself, as zram's do: the model's reclaim steps page out through
// it, and the Go heap, which no watermark governs, does not grow with it.
type vmRig struct {
	p    *phys.Pool
	mgr  *mm.Manager
	swap *blk.RAM
}

// newVMRig makes the rig; tlb is the Manager's (nil: none).
func newVMRig(p *phys.Pool, tlb pgtable.TLB) (*vmRig, error) {
	mgr, err := mm.New(mm.Config{Pool: p, VerifyZeroed: true, TLB: tlb})
	if err != nil {
		return nil, err
	}
	swap, err := blk.NewRAM(blk.RAMConfig{Name: "ram0", Size: 16 << 20, Pool: p})
	if err == nil {
		if err = mgr.Swapon(swap, mm.SwapOptions{}); err != nil {
			swap.Close()
		}
	}
	if err != nil {
		mgr.Close()
		return nil, err
	}
	return &vmRig{p: p, mgr: mgr, swap: swap}, nil
}

// close closes the Manager and the swap device, whose pages are the
// pool's too, and checks as check that every frame is back in the pool.
func (r *vmRig) close(env *scenario.Env, check string) error {
	if err := r.mgr.Close(); err != nil {
		return err
	}
	if err := r.swap.Close(); err != nil {
		return err
	}
	err := r.p.Check()
	if err == nil && r.p.FreeFrames() != uint64(r.p.Frames()) {
		err = fmt.Errorf("%d of %d frames free after every space exited", r.p.FreeFrames(), r.p.Frames())
	}
	env.Check(check, err)
	return nil
}

// opsKV is a run's operation counts as result fields, by name.
func opsKV(counts map[string]int) []any {
	ops := make([]string, 0, len(counts))
	for op := range counts {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	kv := make([]any, 0, 2*len(ops))
	for _, op := range ops {
		kv = append(kv, op, counts[op])
	}
	return kv
}
