package vmtest

import (
	"fmt"
	"sort"

	"yolk/mm"
	"yolk/mm/pgtable"
)

// Two views of mm that mm.Check cannot judge, because it derives what it
// expects with the same code that built them: the hardware descriptors,
// as the MMU would use them, and the figures smaps reports. Both are
// checked here against the model alone.

// checkMMU asks the MMU (mm's Translate, which walks only the hardware
// descriptors) about every page the model maps:
//
//   - a PROT_NONE page admits no access; any other page may be readable
//     (on ARM, write and exec imply read), writable only with PROT_WRITE,
//     and if readable then executable exactly when PROT_EXEC is set;
//   - a write the MMU would allow never reaches the zero page, or a frame
//     that any other mapping, in any space, can read: that is what
//     copy-on-write promises;
//   - where the MMU would read the zero page, the model says zero.
//
// An entry that faults is always fine: the fault handler makes it right.
func (r *runner) checkMMU() error {
	clear(r.readers)
	clear(r.writer)
	zero := uint32(r.mgr.ZeroPFN().Addr())
	hz, hasHZ := r.mgr.HugeZeroPage()
	inHugeZero := func(pa uint32) bool {
		return hasHZ && pa >= uint32(hz.Addr()) && pa-uint32(hz.Addr()) < pgtable.SectionSize
	}
	for _, s := range r.spaces {
		for a, p := range s.pages {
			// A read fault is a fault for every access (ARMv7's AP
			// encodings grant no write or execute without read), so the
			// other two are asked only of readable pages.
			rpa, rfs := s.as.Translate(a, pgtable.AccessRead)
			if rfs != 0 {
				continue
			}
			wpa, wfs := s.as.Translate(a, pgtable.AccessWrite)
			_, xfs := s.as.Translate(a, pgtable.AccessExec)
			var bad string
			switch {
			case p.prot == mm.ProtNone:
				bad = fmt.Sprintf("a PROT_NONE page admits read, write %v, exec %v", wfs, xfs)
			case wfs == 0 && p.prot&mm.ProtWrite == 0:
				bad = "writable without PROT_WRITE"
			case (xfs == 0) != (p.prot&mm.ProtExec != 0):
				bad = fmt.Sprintf("readable, and exec %v", xfs)
			case wfs == 0 && (wpa == zero || inHugeZero(wpa)):
				bad = "a zero page is writable"
			case (rpa == zero || inHugeZero(rpa)) && p.data != nil && !p.maybeZero:
				bad = "reads a zero page where the model has data"
			}
			if bad != "" {
				return fmt.Errorf("MMU at %#08x in pid %d (model prot %d): %s", a, s.as.PID(), p.prot, bad)
			}
			r.readers[rpa>>pgtable.PageShift]++
			if wfs == 0 {
				r.writer[wpa>>pgtable.PageShift] = where{s.as.PID(), a}
			}
		}
	}
	for frame, where := range r.writer {
		if n := r.readers[frame]; n != 1 {
			return fmt.Errorf("MMU: frame %#x is writable at %#08x in pid %d and readable through %d mappings: copy-on-write broken", frame<<pgtable.PageShift, where.addr, where.pid, n)
		}
	}
	return nil
}

// where is a page of an address space.
type where struct {
	pid  int
	addr uint32
}

// checkSmaps checks every VMA's smaps figures against the model, and their
// sums against the totals they divide:
//
//   - Anonymous + Swap is the model's pages with data (anything else is
//     unmapped, never touched, or reads a zero page, which smaps does
//     not count), as long as no huge page was ever made: one maps a whole
//     section's frames however few the model wrote, and from then on the
//     model's pages with data are only a lower bound. Rss is Anonymous,
//     and splits into shared and private, clean and dirty; LazyFree and
//     AnonHugePages are parts of Anonymous, the latter in whole sections;
//   - the shares are no more than the whole: Pss ≤ Rss, Pss_Dirty ≤ Pss,
//     SwapPss ≤ Swap, Referenced ≤ Rss;
//   - summed over every space, Pss is AnonPages and SwapPss the slots in
//     use, each short by at most the rounding of its shares (less than a
//     byte per VMA, and 1/4096 byte per mapping).
func (r *runner) checkSmaps() error {
	var pss, swapPss, vmas uint64
	huge, _ := r.mgr.VmstatValue("thp_fault_alloc")
	for _, s := range r.spaces {
		es := s.as.Smaps()
		data := make([]uint64, len(es))  // the model's bytes with data, per VMA
		maybe := make([]uint64, len(es)) // of which maybe dropped by a concurrent MADV_FREE
		for a, p := range s.pages {
			if p.data == nil {
				continue
			}
			// The first VMA ending above a holds it, if it starts at or below.
			if i := sort.Search(len(es), func(i int) bool { return es[i].End > a }); i < len(es) && es[i].Start <= a {
				data[i] += pageSize
				if p.maybeZero {
					maybe[i] += pageSize
				}
			}
		}
		for i, e := range es {
			vmas++
			data, maybe := data[i], maybe[i]
			var bad string
			switch {
			case huge == 0 && maybe == 0 && e.Anonymous+e.Swap != data:
				bad = fmt.Sprintf("Anonymous + Swap is %d kB, the model has %d kB of data", (e.Anonymous+e.Swap)>>10, data>>10)
			case e.Anonymous+e.Swap < data-maybe || e.Anonymous+e.Swap > uint64(e.End-e.Start):
				bad = fmt.Sprintf("Anonymous + Swap is %d kB, the model has %d kB of data in %d kB", (e.Anonymous+e.Swap)>>10, data>>10, (e.End-e.Start)>>10)
			case e.Rss != e.Anonymous:
				bad = "Rss is not Anonymous"
			case e.SharedClean+e.SharedDirty+e.PrivateClean+e.PrivateDirty != e.Rss:
				bad = "Shared and Private do not add up to Rss"
			case e.LazyFree > e.Anonymous || e.AnonHugePages > e.Anonymous || e.AnonHugePages%pgtable.SectionSize != 0:
				bad = "LazyFree or AnonHugePages is not a part of Anonymous"
			case huge == 0 && e.AnonHugePages != 0:
				bad = "AnonHugePages, and no huge page was ever made"
			case e.Pss > e.Rss || e.PssDirty > e.Pss || e.SwapPss > e.Swap || e.Referenced > e.Rss:
				bad = "a share is larger than its whole"
			}
			if bad != "" {
				return fmt.Errorf("smaps of pid %d, %#08x-%#08x: %s (%+v)", s.as.PID(), e.Start, e.End, bad, e)
			}
			pss += e.Pss
			swapPss += e.SwapPss
		}
	}
	st := r.mgr.Stats()
	slack := vmas + uint64(st.ResidentPages+st.SwapEntries)/4096 + 1
	if want := uint64(st.AnonPages) * pageSize; pss > want || pss+slack < want {
		return fmt.Errorf("smaps: Pss sums to %d bytes over %d VMAs, AnonPages is %d bytes", pss, vmas, want)
	}
	if slots, _ := r.mgr.SwapSlots(); true {
		if want := uint64(slots) * pageSize; swapPss > want || swapPss+slack < want {
			return fmt.Errorf("smaps: SwapPss sums to %d bytes over %d VMAs, %d swap slots are in use (%d bytes)", swapPss, vmas, slots, want)
		}
	}
	return nil
}
