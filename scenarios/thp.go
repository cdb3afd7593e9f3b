package scenarios

import (
	"bytes"
	"fmt"
	"strings"

	"yolk/mm"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
	"yolk/runtime/scenario"
)

func init() {
	scenario.Register(scenario.Scenario{
		Name: "thp",
		Help: "transparent huge pages on the real pool: huge faults and the huge zero page, fork and copy-on-write on a section, MADV_FREE of a whole section and of part of one, the lazy-free discard, a partial munmap and its deferred split; prints smaps and vmstat",
		Run:  thp,
	})
}

// The thp scenario's script, section by section of a 6 MiB area:
//
//	0  written; a child writes a page of it (its mapping splits, one page
//	   is copied); later 16 pages are unmapped (split, deferred, split)
//	1  written; MADV_FREE whole (no split); written again; the discard
//	   finds it redirtied
//	2  written; MADV_FREE of its first 16 pages (splits once); one of them
//	   discarded
//	3  written; MADV_FREE whole; discarded: reads zeroes
//	4  read (the huge zero page), then written (a real huge page)
//	5  never touched
//
// The vmstat events it must cause are computed by hand in thpWant.
const thpSections = 6

var thpWant = map[string]uint64{
	"thp_fault_alloc":         5,
	"thp_fault_fallback":      0,
	"thp_zero_page_alloc":     1,
	"thp_split_pmd":           3,
	"thp_split_page":          2,
	"thp_deferred_split_page": 1,
	"pglazyfree":              256 + 16 + 256,
	"pglazyfreed":             256 + 1,
}

func thp(env *scenario.Env) error {
	p := env.Phys
	if p == nil {
		return fmt.Errorf("no page allocator: %v", env.PhysErr)
	}
	mgr, err := mm.New(mm.Config{Pool: p, VerifyZeroed: true})
	if err != nil {
		return err
	}
	err = thpScript(env, mgr)
	if cerr := mgr.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	err = p.Check()
	if err == nil && p.FreeFrames() != uint64(p.Frames()) {
		err = fmt.Errorf("%d of %d frames free after the space exited", p.FreeFrames(), p.Frames())
	}
	env.Check("thp-no-leak", err)
	return nil
}

const (
	sectionSize = pgtable.SectionSize
	smallPage   = pgtable.PageSize
)

// thpScript runs the script in one address space and its child; every
// step's outcome is a check line, and the first hard error ends it.
func thpScript(env *scenario.Env, mgr *mm.Manager) error {
	as, err := mgr.NewAddressSpace()
	if err != nil {
		return err
	}
	defer as.Exit()
	a, err := as.Mmap(0, thpSections*sectionSize, mm.ProtRead|mm.ProtWrite, 0)
	if err != nil {
		return err
	}
	pattern := func(sec int) []byte { return bytes.Repeat([]byte{byte(0x10 + sec)}, sectionSize) }
	at := func(sec int) uint32 { return a + uint32(sec)*sectionSize }
	expect := func(what string, addr uint32, want []byte) {
		got := make([]byte, len(want))
		err := as.Read(addr, got)
		if err == nil && !bytes.Equal(got, want) {
			err = fmt.Errorf("%d bytes at %#08x differ from what was written", len(want), addr)
		}
		env.Check(what, err)
	}
	check := func() { env.Check("thp-mm-check", mgr.Check()) }

	// Huge faults, and the huge zero page.
	for sec := 0; sec < 4; sec++ {
		if err := as.Write(at(sec), pattern(sec)); err != nil {
			return err
		}
	}
	expect("thp-zero-read", at(4), make([]byte, sectionSize))
	if err := as.Write(at(4)+100, []byte{1}); err != nil {
		return err
	}
	env.Check("thp-aligned", errIf(a%sectionSize != 0, "the area at %#08x is not section aligned", a))
	env.Report("thp-faults", "area", fmt.Sprintf("%#08x", a), "anon_huge_kb", kbLine(mgr.Meminfo(), "AnonHugePages"))
	check()

	// Fork; the child's write copies one small page out of section 0.
	child, err := as.Fork()
	if err != nil {
		return err
	}
	if err := child.Write(at(0)+3*smallPage, []byte("child")); err != nil {
		return err
	}
	got := make([]byte, 5)
	env.Check("thp-cow-child", child.Read(at(0)+3*smallPage, got), "sees", string(got))
	expect("thp-cow-parent", at(0), pattern(0))
	check()
	if err := child.Exit(); err != nil {
		return err
	}

	// MADV_FREE: section 1 whole, section 2's first 16 pages, section 3
	// whole.
	for _, r := range []struct{ addr, len uint32 }{{at(1), sectionSize}, {at(2), 16 * smallPage}, {at(3), sectionSize}} {
		if err := as.Madvise(r.addr, r.len, mm.MadvFree); err != nil {
			return err
		}
	}
	expect("thp-lazyfree-keeps-data", at(1), pattern(1))
	if err := as.Write(at(1), []byte{0x99}); err != nil {
		return err
	}
	showSmaps(env, as, at(1))

	// The discard reclaim will use: redirtied, discarded whole, one page.
	for _, d := range []struct {
		name string
		addr uint32
		want mm.Discard
	}{{"thp-discard-redirtied", at(1), mm.Redirtied}, {"thp-discard-section", at(3), mm.Discarded}, {"thp-discard-page", at(2), mm.Discarded}} {
		got, err := discard(mgr, as, d.addr)
		if err == nil && got != d.want {
			err = fmt.Errorf("%v, want %v", got, d.want)
		}
		env.Check(d.name, err, "result", got)
	}
	want1 := pattern(1)
	want1[0] = 0x99
	expect("thp-redirtied-data", at(1), want1)
	expect("thp-discarded-zero", at(3), make([]byte, sectionSize))
	want2 := pattern(2)
	clear(want2[:smallPage])
	expect("thp-discarded-page-zero", at(2), want2)

	// A partial munmap: the section splits, the page waits on the
	// deferred split queue, and the scan frees the unmapped frames.
	if err := as.Munmap(at(0)+32*smallPage, 16*smallPage); err != nil {
		return err
	}
	free := mgr.Pool().FreeFrames()
	n := mgr.DeferredSplitScan(8)
	freed := mgr.Pool().FreeFrames() - free
	env.Check("thp-deferred-split", errIf(n != 1 || freed != 16, "split %d pages, freed %d frames; want 1 and 16", n, freed),
		"split", n, "freed_frames", freed)
	expect("thp-split-data", at(0), pattern(0)[:32*smallPage])
	check()

	// What a user would look at.
	var b strings.Builder
	if err := as.WriteSmaps(&b); err != nil {
		return err
	}
	env.Report("proc", "file", fmt.Sprintf("/proc/%d/smaps", as.PID()), "lines", strings.Count(b.String(), "\n"))
	env.Text(b.String())
	b.Reset()
	if err := phys.WriteMeminfo(&b, mgr.Meminfo()); err != nil {
		return err
	}
	env.Report("proc", "file", "/proc/meminfo", "lines", strings.Count(b.String(), "\n"))
	env.Text(b.String())
	kv := []any{}
	var bad []string
	for _, l := range mgr.Vmstat() {
		if want, ok := thpWant[l.Name]; ok {
			kv = append(kv, l.Name, l.Value)
			if l.Value != want {
				bad = append(bad, fmt.Sprintf("%s %d, want %d", l.Name, l.Value, want))
			}
		}
	}
	env.Report("thp-vmstat", kv...)
	env.Check("thp-counts", errIf(len(bad) > 0, "%s", strings.Join(bad, "; ")))
	env.Report("thp-smaps", "anon_huge_kb", kbLine(mgr.Meminfo(), "AnonHugePages"), "anon_kb", kbLine(mgr.Meminfo(), "AnonPages"))
	return nil
}

// discard runs reclaim's lazy-free hook on the page at addr, as reclaim
// will: with a reference and the page lock.
func discard(mgr *mm.Manager, as *mm.AddressSpace, addr uint32) (mm.Discard, error) {
	pool := mgr.Pool()
	pfn, ok := as.FollowPage(addr)
	if !ok {
		return 0, fmt.Errorf("no page at %#08x", addr)
	}
	head := pool.CompoundHead(pfn)
	pool.Page(head).Set(phys.PGLocked)
	d, err := mgr.DiscardLazyFree(pfn)
	pool.Page(head).Clear(phys.PGLocked)
	if perr := pool.Put(pfn); err == nil {
		err = perr
	}
	return d, err
}

func showSmaps(env *scenario.Env, as *mm.AddressSpace, addr uint32) {
	for _, s := range as.Smaps() {
		if s.Start <= addr && addr < s.End {
			env.Report("thp-area", "anon_huge_kb", s.AnonHugePages>>10, "lazyfree_kb", s.LazyFree>>10, "rss_kb", s.Rss>>10,
				"thp_eligible", s.THPeligible)
		}
	}
}

func kbLine(lines []phys.MeminfoLine, name string) uint64 {
	for _, l := range lines {
		if l.Name == name {
			return l.KB
		}
	}
	return 0
}

func errIf(bad bool, format string, args ...any) error {
	if bad {
		return fmt.Errorf(format, args...)
	}
	return nil
}
