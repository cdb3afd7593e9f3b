package scenarios

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"yolk/mm/phys"
	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
)

func init() {
	scenario.Register(scenario.Scenario{
		Name: "meminfo",
		Help: "fill the pool to fill= percent with a mixed workload, free a third of it, print /proc/buddyinfo, pagetypeinfo, zoneinfo, meminfo and vmstat, then free it all",
		Params: []cmdline.Spec{
			{Name: "fill", Value: cmdline.Int{Min: 0, Max: 100}, Default: "60", Help: "how full (percent) to fill the pool"},
			// The pool's size bounds it further; the scenario checks that.
			{Name: "min_free_kbytes", Value: cmdline.Int{Min: 0, Max: 1 << 20},
				Help: "vm.min_free_kbytes to set first (0 or unset: Linux's formula for the pool)"},
		},
		Run: meminfo,
	})
}

// meminfo shows the page allocator at work in Linux's formats: a mix of
// movable, unmovable and reclaimable frames and some huge pages fill the
// pool, every third allocation is freed so that holes appear, and the
// /proc files are printed as Linux would print them. min_free_kbytes=
// sets the watermarks first, as the sysctl does.
func meminfo(env *scenario.Env) error {
	p := env.Phys
	if p == nil {
		return fmt.Errorf("no page allocator: %v", env.PhysErr)
	}
	fill := env.Args.Int("fill")
	if env.Args.Has("min_free_kbytes") {
		kb, limit := env.Args.Int("min_free_kbytes"), p.MaxMinFreeKbytes()
		if kb > limit {
			return &cmdline.ParamError{Key: "min_free_kbytes", Value: strconv.Itoa(kb), Reason: cmdline.ErrOutOfRange,
				Allowed: fmt.Sprintf("an integer from 0 to %d, which puts the high watermark just under this pool's %d frames", limit, p.Frames())}
		}
		if err := p.SetMinFreeKbytes(kb); err != nil {
			return err
		}
	}

	type block struct {
		pfn   phys.PFN
		order int
	}
	var held []block
	// Per round: 48 movable frames (a task's pages), 4 reclaimable (a
	// cache), 2 unmovable (kernel objects), and now and then a huge page.
	kinds := []struct {
		order int
		ctx   phys.Context
		n     int
	}{
		{0, phys.User, 48},
		{0, phys.Kernel | phys.ReclaimableAlloc, 4},
		{0, phys.Kernel, 2},
	}
	target := uint64(p.Frames()) * uint64(fill) / 100
	used := func() uint64 { return uint64(p.Frames()) - p.FreeFrames() }
	var failed error
	for round := 0; used() < target && failed == nil; round++ {
		for _, k := range kinds {
			for range k.n {
				f, err := p.Alloc(k.order, k.ctx)
				if err != nil {
					failed = err
					break
				}
				held = append(held, block{f, k.order})
			}
		}
		if round%16 == 0 {
			f, err := p.Alloc(phys.HugeOrder, phys.HugeUser)
			if err != nil {
				failed = err
				break
			}
			held = append(held, block{f, phys.HugeOrder})
		}
	}
	if failed != nil && !errors.Is(failed, phys.ErrNoMemory) {
		return failed
	}
	kept := held[:0]
	for i, b := range held {
		if i%3 == 0 {
			if err := p.Put(b.pfn); err != nil {
				return err
			}
			continue
		}
		kept = append(kept, b)
	}
	env.Report("meminfo", "fill_pct", fill, "allocations", len(held), "kept", len(kept),
		"used_kb", used()*phys.PageSize>>10)

	for _, file := range []struct {
		name  string
		write func(*strings.Builder) error
	}{
		{"/proc/buddyinfo", func(b *strings.Builder) error { return p.WriteBuddyinfo(b) }},
		{"/proc/pagetypeinfo", func(b *strings.Builder) error { return p.WritePagetypeinfo(b) }},
		{"/proc/zoneinfo", func(b *strings.Builder) error { return p.WriteZoneinfo(b) }},
		{"/proc/meminfo", func(b *strings.Builder) error { return phys.WriteMeminfo(b, p.Meminfo()) }},
		{"/proc/vmstat", func(b *strings.Builder) error { return phys.WriteVmstat(b, p.Vmstat()) }},
	} {
		var b strings.Builder
		if err := file.write(&b); err != nil {
			return err
		}
		env.Report("proc", "file", file.name, "lines", strings.Count(b.String(), "\n"))
		env.Text(b.String())
	}

	env.Check("invariants-full", p.Check())
	for _, b := range kept {
		if err := p.Put(b.pfn); err != nil {
			return err
		}
	}
	err := p.Check()
	if err == nil && p.FreeFrames() != uint64(p.Frames()) {
		err = fmt.Errorf("%d of %d frames free after freeing everything", p.FreeFrames(), p.Frames())
	}
	env.Check("invariants-empty", err)
	return nil
}
