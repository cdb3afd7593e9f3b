package vmcheck

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
//   - a write the MMU would allow never reaches the zero page, or, but
//     through a shared mapping of the region, a frame that any other
//     mapping, in any space, can read: that is what copy-on-write
//     promises;
//   - where the MMU would read the zero page, the model says zero;
//   - a page that reads the region (shared, or private and not written)
//     reads the one page cache page of its offset, never the zero page,
//     and a frame such a page reads is read through nothing else: every
//     mapping of offset idx, in every space, reads the same frame, and no
//     other; only a shared mapping may write it (a private one must
//     copy it first).
//
// An entry that faults is always fine: the fault handler makes it right.
func (r *runner) checkMMU() error {
	clear(r.readers)
	clear(r.writer)
	if r.frameIdx == nil {
		r.frameIdx, r.idxFrame = map[uint32]uint32{}, map[uint32]uint32{}
	}
	clear(r.frameIdx)
	clear(r.idxFrame)
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
			case (rpa == zero || inHugeZero(rpa)) && r.content(p) != nil && !p.maybeZero:
				bad = "reads a zero page where the model has data"
			}
			// tag: what the frame read is, offset+1 of a region page,
			// or 0 for anonymous memory (a private mapping's copy too).
			frame, tag, cached := rpa>>pgtable.PageShift, uint32(0), p.file && p.data == nil
			if cached {
				tag = p.idx + 1
			}
			if bad == "" && cached {
				if wfs == 0 && !p.shared {
					bad = fmt.Sprintf("a private mapping can write region page %d", p.idx)
				} else if f, ok := r.idxFrame[p.idx]; ok && f != frame {
					bad = fmt.Sprintf("reads region page %d from frame %#x, another mapping from %#x", p.idx, frame<<pgtable.PageShift, f<<pgtable.PageShift)
				}
				r.idxFrame[p.idx] = frame
			}
			if t, ok := r.frameIdx[frame]; bad == "" && ok && t != tag {
				bad = fmt.Sprintf("frame %#x read as %s here and as %s elsewhere", frame<<pgtable.PageShift, frameTag(tag), frameTag(t))
			}
			if bad != "" {
				return fmt.Errorf("MMU at %#08x in pid %d (model %+v): %s", a, s.as.PID(), *p, bad)
			}
			r.frameIdx[frame] = tag
			r.readers[frame]++
			if wfs == 0 && !cached {
				// A shared mapping writes the page cache page that
				// every mapping of its offset reads: checked above.
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

func frameTag(tag uint32) string {
	if tag == 0 {
		return "anonymous memory"
	}
	return fmt.Sprintf("region page %d", tag-1)
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
//   - in an area of the region, Anonymous + Swap is exactly the private
//     copies the model has (they are never huge nor lazily freed: none
//     in a shared area), and the rest of Rss is page cache pages, at most
//     one for each page the model says reads the region; LazyFree and
//     AnonHugePages are 0. Which of those pages are resident, and which
//     clean or dirty, is reclaim's and writeback's business, which the
//     model does not follow: those figures are checked only for adding
//     up (Shared and Private to Rss), and summed (below);
//   - the shares are no more than the whole: Pss ≤ Rss, Pss_Dirty ≤ Pss,
//     SwapPss ≤ Swap, Referenced ≤ Rss;
//   - summed over every space, Pss is AnonPages plus the page cache pages
//     mapped (nr_mapped: each is shared out whole among its mappings),
//     and SwapPss the slots in use, each short by at most the rounding of
//     its shares (less than a byte per VMA, and 1/4096 byte per mapping).
func (r *runner) checkSmaps() error {
	var pss, swapPss, vmas, filePTEs uint64
	huge, _ := r.mgr.VmstatValue("thp_fault_alloc")
	for _, s := range r.spaces {
		es := s.as.Smaps()
		data := make([]uint64, len(es))   // the model's bytes with data, per VMA
		maybe := make([]uint64, len(es))  // of which maybe dropped by a concurrent MADV_FREE
		cached := make([]uint64, len(es)) // the bytes that read the region
		for a, p := range s.pages {
			if p.data == nil && !p.file {
				continue
			}
			// The first VMA ending above a holds it, if it starts at or below.
			if i := sort.Search(len(es), func(i int) bool { return es[i].End > a }); i < len(es) && es[i].Start <= a {
				switch {
				case p.data == nil:
					cached[i] += pageSize
					filePTEs++
				case p.maybeZero:
					maybe[i] += pageSize
					fallthrough
				default:
					data[i] += pageSize
				}
			}
		}
		for i, e := range es {
			vmas++
			data, maybe := data[i], maybe[i]
			var bad string
			if e.Region != nil {
				switch {
				case e.Anonymous+e.Swap != data:
					bad = fmt.Sprintf("Anonymous + Swap is %d kB, the model has %d kB of private copies", (e.Anonymous+e.Swap)>>10, data>>10)
				case e.Rss < e.Anonymous || e.Rss-e.Anonymous > cached[i]:
					bad = fmt.Sprintf("Rss is %d kB, Anonymous %d kB, and the model has %d kB that read the region", e.Rss>>10, e.Anonymous>>10, cached[i]>>10)
				case e.LazyFree != 0 || e.AnonHugePages != 0:
					bad = "LazyFree or AnonHugePages in an area of the region"
				case e.SharedClean+e.SharedDirty+e.PrivateClean+e.PrivateDirty != e.Rss:
					bad = "Shared and Private do not add up to Rss"
				case e.Pss > e.Rss || e.PssDirty > e.Pss || e.SwapPss > e.Swap || e.Referenced > e.Rss:
					bad = "a share is larger than its whole"
				}
				if bad != "" {
					return fmt.Errorf("smaps of pid %d, %#08x-%#08x: %s (%+v)", s.as.PID(), e.Start, e.End, bad, e)
				}
				pss += e.Pss
				swapPss += e.SwapPss
				continue
			}
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
	mapped, _ := r.mgr.VmstatValue("nr_mapped")
	slack := vmas + (uint64(st.ResidentPages+st.SwapEntries)+filePTEs)/4096 + 1
	if want := (uint64(st.AnonPages) + mapped) * pageSize; pss > want || pss+slack < want {
		return fmt.Errorf("smaps: Pss sums to %d bytes over %d VMAs, AnonPages + nr_mapped is %d bytes", pss, vmas, want)
	}
	if slots, _ := r.mgr.SwapSlots(); true {
		if want := uint64(slots) * pageSize; swapPss > want || swapPss+slack < want {
			return fmt.Errorf("smaps: SwapPss sums to %d bytes over %d VMAs, %d swap slots are in use (%d bytes)", swapPss, vmas, slots, want)
		}
	}
	return nil
}
