package mm

import (
	"bufio"
	"fmt"
	"io"

	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// /proc/PID/maps and /proc/PID/smaps, in the format of Linux 6.1
// (fs/proc/task_mmu.c) on a 32-bit machine.

// WriteMaps writes the address space's /proc/PID/maps.
func (as *AddressSpace) WriteMaps(w io.Writer) error {
	as.mmapLock.RLock()
	defer as.mmapLock.RUnlock()
	b := bufio.NewWriter(w)
	for v := as.head; v != nil; v = v.next {
		writeMapsLine(b, v)
	}
	return b.Flush()
}

// writeMapsLine is show_map_vma. An anonymous VMA has no file, so offset,
// device and inode are zero, and with no name the line ends in the space
// after the inode. A region mapping shows its byte offset in the region
// and the region's name, padded to the column Linux pads names to on a
// 32-bit machine (seq_setwidth(25 + 6 * sizeof(void *) - 1), then
// seq_pad); a region has no device or inode numbers.
func writeMapsLine(b *bufio.Writer, v *VMA) {
	perm := func(f VMFlags, c byte) byte {
		if v.flags&f != 0 {
			return c
		}
		return '-'
	}
	shared := byte('p')
	if v.flags&VMMayShare != 0 {
		shared = 's'
	}
	if v.file == nil {
		fmt.Fprintf(b, "%08x-%08x %c%c%c%c %08x %02x:%02x %d \n", v.start, v.end,
			perm(VMRead, 'r'), perm(VMWrite, 'w'), perm(VMExec, 'x'), shared, 0, 0, 0, 0)
		return
	}
	head := fmt.Sprintf("%08x-%08x %c%c%c%c %08x %02x:%02x %d ", v.start, v.end,
		perm(VMRead, 'r'), perm(VMWrite, 'w'), perm(VMExec, 'x'), shared, uint64(v.pgoff)<<pgtable.PageShift, 0, 0, 0)
	fmt.Fprintf(b, "%-*s %s\n", mapsNameColumn, head, v.file.cfg.Name)
}

// mapsNameColumn is where Linux pads a maps line to before the name on a
// 32-bit machine: 25 + 6*4 - 1.
const mapsNameColumn = 48

// memSizeStats is Linux's struct mem_size_stats, in bytes; the PSS sums
// are fixed point with pssShift fraction bits.
type memSizeStats struct {
	resident, sharedClean, sharedDirty, privateClean, privateDirty uint64
	referenced, anonymous, lazyfree, anonymousTHP, swap            uint64
	pss, pssDirty, swapPss                                         uint64
}

const pssShift = 12

// gather walks v's sections and PTEs as smaps_pmd_entry and
// smaps_pte_entry do. The zero pages are not counted: they have no page
// of their own (vm_normal_page is NULL).
func (as *AddressSpace) gather(v *VMA) memSizeStats {
	var s memSizeStats
	pool := as.mgr.pool
	as.ptl.Lock()
	defer as.ptl.Unlock()
	as.pt.RangeSections(v.start, v.end, func(haddr uint32, sec pgtable.PTE) bool {
		if sec.Present() && !isHugeZero(sec) {
			s.anonymousTHP += pgtable.SectionSize
			s.account(pool, phys.PFN(sec.PA()>>pgtable.PageShift), hugeNr, sec)
		}
		return true
	})
	as.pt.Range(v.start, v.end, func(va uint32, pte pgtable.PTE) bool {
		switch {
		case pte.IsSwap():
			s.swap += pgtable.PageSize
			n := max(as.mgr.swapCount(pte.Swap()), 1)
			s.swapPss += pgtable.PageSize << pssShift / uint64(n)
		case pte.Has(pgtable.Special):
		default:
			s.account(pool, phys.PFN(pte.PA()>>pgtable.PageShift), 1, pte)
		}
		return true
	})
	return s
}

// account is smaps_account for nr frames from pfn mapped by one entry
// (a section maps 256): the sizes that depend on the page as a whole
// first, then each frame's share by its own map count (its PTEs plus the
// compound page's sections, folio_precise_page_mapcount).
func (s *memSizeStats) account(pool *phys.Pool, pfn phys.PFN, nr int, entry pgtable.PTE) {
	head := pool.CompoundHead(pfn)
	fp := pool.Page(head)
	size := uint64(nr) * pgtable.PageSize
	dirty := entry.Has(pgtable.Dirty) || fp.Test(phys.PGDirty)
	if regionOf(fp) == nil {
		s.anonymous += size
		if !fp.Test(phys.PGSwapBacked) && !dirty {
			s.lazyfree += size
		}
	}
	s.resident += size
	if entry.Has(pgtable.Young) || fp.Test(phys.PGReferenced) {
		s.referenced += size
	}
	if fp.RefCount() == 1 {
		s.accumulate(size, size<<pssShift, dirty, true)
		return
	}
	lc, large := pool.LargeCounts(head)
	for i := phys.PFN(0); i < phys.PFN(nr); i++ {
		mapcount := pool.Page(pfn + i).MapCount()
		if large {
			mapcount += lc.Entire()
		}
		pss := uint64(pgtable.PageSize) << pssShift
		if mapcount >= 2 {
			pss /= uint64(mapcount)
		}
		s.accumulate(pgtable.PageSize, pss, dirty, mapcount < 2)
	}
}

// accumulate is smaps_page_accumulate.
func (s *memSizeStats) accumulate(size, pss uint64, dirty, private bool) {
	s.pss += pss
	switch {
	case dirty && private:
		s.pssDirty += pss
		s.privateDirty += size
	case dirty:
		s.pssDirty += pss
		s.sharedDirty += size
	case private:
		s.privateClean += size
	default:
		s.sharedClean += size
	}
}

// Smaps is one VMA's entry in /proc/PID/smaps: the area and its memory
// figures in bytes (Linux's struct mem_size_stats). Pss, PssDirty and
// SwapPss are sums of shares, each share rounded down to a byte.
type Smaps struct {
	VMAInfo
	Rss, Pss, PssDirty                                   uint64
	SharedClean, SharedDirty, PrivateClean, PrivateDirty uint64
	Referenced, Anonymous, LazyFree, AnonHugePages       uint64
	Swap, SwapPss                                        uint64
	// THPeligible: a fault in the area could take a huge page.
	THPeligible bool
}

// Smaps returns the figures smaps prints, one entry per VMA in address
// order.
func (as *AddressSpace) Smaps() []Smaps {
	as.mmapLock.RLock()
	defer as.mmapLock.RUnlock()
	var out []Smaps
	for v := as.head; v != nil; v = v.next {
		out = append(out, as.gather(v).smaps(v, as.mgr.thpEligible(v)))
	}
	return out
}

func (s memSizeStats) smaps(v *VMA, thp bool) Smaps {
	return Smaps{
		VMAInfo: VMAInfo{Start: v.start, End: v.end, Flags: v.flags, Pgoff: v.pgoff, Region: v.file},
		Rss:     s.resident, Pss: s.pss >> pssShift, PssDirty: s.pssDirty >> pssShift,
		SharedClean: s.sharedClean, SharedDirty: s.sharedDirty,
		PrivateClean: s.privateClean, PrivateDirty: s.privateDirty,
		Referenced: s.referenced, Anonymous: s.anonymous, LazyFree: s.lazyfree,
		AnonHugePages: s.anonymousTHP, Swap: s.swap, SwapPss: s.swapPss >> pssShift,
		THPeligible: thp,
	}
}

// WriteSmaps writes the address space's /proc/PID/smaps.
func (as *AddressSpace) WriteSmaps(w io.Writer) error {
	as.mmapLock.RLock()
	defer as.mmapLock.RUnlock()
	b := bufio.NewWriter(w)
	for v := as.head; v != nil; v = v.next {
		s := as.gather(v).smaps(v, as.mgr.thpEligible(v))
		writeMapsLine(b, v)
		kb := func(name string, bytes uint64) { fmt.Fprintf(b, "%-16s%8d kB\n", name+":", bytes>>10) }
		kb("Size", uint64(v.end-v.start))
		kb("KernelPageSize", pgtable.PageSize)
		kb("MMUPageSize", pgtable.PageSize)
		kb("Rss", s.Rss)
		kb("Pss", s.Pss)
		kb("Pss_Dirty", s.PssDirty)
		kb("Shared_Clean", s.SharedClean)
		kb("Shared_Dirty", s.SharedDirty)
		kb("Private_Clean", s.PrivateClean)
		kb("Private_Dirty", s.PrivateDirty)
		kb("Referenced", s.Referenced)
		kb("Anonymous", s.Anonymous)
		kb("LazyFree", s.LazyFree)
		kb("AnonHugePages", s.AnonHugePages)
		kb("ShmemPmdMapped", 0)
		kb("FilePmdMapped", 0)
		kb("Shared_Hugetlb", 0)
		fmt.Fprintf(b, "%-17s%7d kB\n", "Private_Hugetlb:", 0) // one column narrower, as in Linux
		kb("Swap", s.Swap)
		kb("SwapPss", s.SwapPss)
		kb("Locked", 0)
		fmt.Fprintf(b, "THPeligible:    %d\n", b2i(s.THPeligible))
		fmt.Fprintf(b, "VmFlags: %s\n", v.flags.Mnemonics())
	}
	return b.Flush()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
