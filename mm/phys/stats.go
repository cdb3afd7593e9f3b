package phys

import (
	"bufio"
	"fmt"
	"io"
)

// Stats are the pool's event counters, in frames where Linux counts
// frames. They only grow, except NrPfmemalloc.
type Stats struct {
	ManagedPages uint64 // frames in the pool

	PgAlloc       uint64 // frames allocated (pgalloc_normal)
	PgFree        uint64 // frames freed (pgfree)
	AllocStalls   uint64 // rounds of direct reclaim (allocstall_normal)
	Throttled     uint64 // direct reclaimers throttled (pgscan_direct_throttle)
	AllocFailures uint64 // allocations that failed

	Fallbacks       uint64 // allocations served from another type's lists
	PageblockSteals uint64 // pageblocks relabelled by a fallback

	PfmemallocAllocs uint64 // allocations served from the reserve
	NrPfmemalloc     uint64 // frames marked pfmemalloc now allocated
	ReserveHighWater uint64 // most frames of the reserve in use at once
}

// Stats returns a snapshot of the counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stat
}

// snapshot is everything the /proc renderers print, taken under the lock
// so that each file is consistent with itself.
type snapshot struct {
	stat       Stats
	wm         Watermarks
	free       uint64
	pcp        pageset
	nrFree     [NrOrders]uint64
	nrFreeType [NrMigrateTypes][NrOrders]int
	blocks     [NrMigrateTypes]int
	start      PFN
	frames     uint64
}

func (p *Pool) snapshot() snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := snapshot{stat: p.stat, wm: p.wm, free: p.nrFree, pcp: p.pcp, start: p.base, frames: uint64(p.n)}
	for o := range NrOrders {
		s.nrFree[o] = p.free[o].nr
		for mt := range NrMigrateTypes {
			s.nrFreeType[mt][o] = p.free[o].lists[mt].Len()
		}
	}
	for _, mt := range p.blockMT {
		s.blocks[mt]++
	}
	return s
}

// zoneName is the name Linux gives the zone all of a 32-bit ARM board's
// low memory is in.
const zoneName = "Normal"

// WriteBuddyinfo writes /proc/buddyinfo: free blocks per order on the
// buddy lists (frames on the pageset are not counted, as in Linux).
func (p *Pool) WriteBuddyinfo(w io.Writer) error {
	s := p.snapshot()
	b := bufio.NewWriter(w)
	fmt.Fprintf(b, "Node %d, zone %8s ", 0, zoneName)
	for o := range NrOrders {
		fmt.Fprintf(b, "%6d ", s.nrFree[o])
	}
	b.WriteByte('\n')
	return b.Flush()
}

// WritePagetypeinfo writes /proc/pagetypeinfo: free blocks per order and
// migrate type, and pageblocks per migrate type.
func (p *Pool) WritePagetypeinfo(w io.Writer) error {
	s := p.snapshot()
	b := bufio.NewWriter(w)
	fmt.Fprintf(b, "Page block order: %d\n", PageblockOrder)
	fmt.Fprintf(b, "Pages per block:  %d\n", PageblockFrames)
	b.WriteByte('\n')
	fmt.Fprintf(b, "%-43s ", "Free pages count per migrate type at order")
	for o := range NrOrders {
		fmt.Fprintf(b, "%6d ", o)
	}
	b.WriteByte('\n')
	for mt := range NrMigrateTypes {
		fmt.Fprintf(b, "Node %4d, zone %8s, type %12s ", 0, zoneName, mt)
		for o := range NrOrders {
			fmt.Fprintf(b, "%6d ", s.nrFreeType[mt][o])
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(b, "\n%-23s", "Number of blocks type ")
	for mt := range NrMigrateTypes {
		fmt.Fprintf(b, "%12s ", mt)
	}
	b.WriteByte('\n')
	fmt.Fprintf(b, "Node %d, zone %8s ", 0, zoneName)
	for mt := range NrMigrateTypes {
		fmt.Fprintf(b, "%12d ", s.blocks[mt])
	}
	b.WriteByte('\n')
	return b.Flush()
}

// WriteZoneinfo writes the lines of /proc/zoneinfo that phys knows, in
// Linux's order: free frames, watermarks, sizes, the pageset, start_pfn.
// The pageset's count is the difference between nr_free_pages (which
// includes it) and the sum of buddyinfo.
func (p *Pool) WriteZoneinfo(w io.Writer) error {
	s := p.snapshot()
	b := bufio.NewWriter(w)
	fmt.Fprintf(b, "Node %d, zone %8s", 0, zoneName)
	fmt.Fprintf(b, "\n  pages free     %d", s.free)
	fmt.Fprintf(b, "\n        min      %d", s.wm.Min)
	fmt.Fprintf(b, "\n        low      %d", s.wm.Low)
	fmt.Fprintf(b, "\n        high     %d", s.wm.High)
	fmt.Fprintf(b, "\n        spanned  %d", s.frames)
	fmt.Fprintf(b, "\n        present  %d", s.frames)
	fmt.Fprintf(b, "\n        managed  %d", s.frames)
	fmt.Fprintf(b, "\n      %-12s %d", "nr_free_pages", s.free)
	fmt.Fprintf(b, "\n  pagesets")
	fmt.Fprintf(b, "\n    cpu: %d", 0)
	fmt.Fprintf(b, "\n              count: %d", s.pcp.count)
	fmt.Fprintf(b, "\n              high:  %d", s.pcp.high)
	fmt.Fprintf(b, "\n              batch: %d", s.pcp.batch)
	fmt.Fprintf(b, "\n  start_pfn:           %d", s.start)
	b.WriteByte('\n')
	return b.Flush()
}

// MeminfoLine is one line of /proc/meminfo.
type MeminfoLine struct {
	Name string
	KB   uint64
}

// Meminfo returns the /proc/meminfo lines phys knows. MemAvailable is
// free memory less the reserve kswapd keeps (the high watermark), as
// Linux's si_mem_available starts; mm adds what it can reclaim.
func (p *Pool) Meminfo() []MeminfoLine {
	s := p.snapshot()
	kb := func(frames uint64) uint64 { return frames * (PageSize >> 10) }
	avail := uint64(0)
	if s.free > s.wm.High {
		avail = s.free - s.wm.High
	}
	return []MeminfoLine{
		{"MemTotal", kb(s.frames)},
		{"MemFree", kb(s.free)},
		{"MemAvailable", kb(avail)},
	}
}

// WriteMeminfo writes meminfo lines in Linux's format: the name and its
// colon padded to 16 columns, the value right-aligned in 8, then " kB".
func WriteMeminfo(w io.Writer, lines []MeminfoLine) error {
	b := bufio.NewWriter(w)
	for _, l := range lines {
		fmt.Fprintf(b, "%-16s%8d kB\n", l.Name+":", l.KB)
	}
	return b.Flush()
}

// VmstatLine is one line of /proc/vmstat.
type VmstatLine struct {
	Name  string
	Value uint64
}

// Vmstat returns the /proc/vmstat counters phys owns: Linux's, in
// Linux's order, then yolk's own, which Linux has no counter for:
//
//	pgalloc_fallback        allocations served from another migrate type
//	                        (Linux's mm_page_alloc_extfrag tracepoint)
//	pageblock_steal         pageblocks relabelled by those fallbacks
//	pgalloc_pfmemalloc      allocations served from the reserve below min
//	nr_pfmemalloc           frames from the reserve still allocated
//	pfmemalloc_reserve_hwm  most frames of the reserve in use at once
//	pgalloc_fail            allocations that failed
func (p *Pool) Vmstat() []VmstatLine {
	s := p.snapshot()
	return []VmstatLine{
		{"nr_free_pages", s.free},
		{"pgalloc_normal", s.stat.PgAlloc},
		{"allocstall_normal", s.stat.AllocStalls},
		{"pgfree", s.stat.PgFree},
		{"pgscan_direct_throttle", s.stat.Throttled},
		{"pgalloc_fallback", s.stat.Fallbacks},
		{"pageblock_steal", s.stat.PageblockSteals},
		{"pgalloc_pfmemalloc", s.stat.PfmemallocAllocs},
		{"nr_pfmemalloc", s.stat.NrPfmemalloc},
		{"pfmemalloc_reserve_hwm", s.stat.ReserveHighWater},
		{"pgalloc_fail", s.stat.AllocFailures},
	}
}

// WriteVmstat writes vmstat lines in Linux's format: "name value".
func WriteVmstat(w io.Writer, lines []VmstatLine) error {
	b := bufio.NewWriter(w)
	for _, l := range lines {
		fmt.Fprintf(b, "%s %d\n", l.Name, l.Value)
	}
	return b.Flush()
}
