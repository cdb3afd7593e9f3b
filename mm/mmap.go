package mm

import (
	"errors"

	"yolk/mm/pgtable"
)

// MapFlags are mmap(2)'s flags. Mmap maps private anonymous memory
// (MAP_PRIVATE|MAP_ANONYMOUS); MmapRegion takes MapShared or MapPrivate.
type MapFlags uint8

const (
	// MapFixed: map exactly at addr, replacing whatever is there.
	MapFixed MapFlags = 1 << iota
	// MapFixedNoReplace: map exactly at addr, or fail with ErrExist.
	MapFixedNoReplace
	// MapShared: stores reach the region, and every mapping sees them.
	MapShared
	// MapPrivate: stores copy the page into anonymous memory
	// (copy-on-write), which the region never sees.
	MapPrivate
)

// ErrExist: MapFixedNoReplace found the range in use (EEXIST).
var ErrExist = errors.New("mm: range already mapped")

const pageMask = pgtable.PageSize - 1

// pageAlignLen rounds a length up to whole pages; false if it overflows
// the window.
func pageAlignLen(length uint32) (uint32, bool) {
	if length > pgtable.WindowSize {
		return 0, false
	}
	return (length + pageMask) &^ pageMask, true
}

// inWindow reports whether [addr, addr+size) lies in the task window.
func inWindow(addr, size uint32) bool {
	return addr >= pgtable.WindowStart && uint64(addr)+uint64(size) <= uint64(pgtable.WindowEnd)
}

// Mmap maps length bytes of private anonymous memory with protection prot
// and returns the address (mmap(NULL or addr, length, prot,
// MAP_PRIVATE|MAP_ANONYMOUS|flags, -1, 0)). Without a fixed flag, addr is
// a hint, used if the range there is free; otherwise the highest free
// range is taken, as Linux's top-down allocator does. The new area is
// merged with compatible neighbours.
func (as *AddressSpace) Mmap(addr, length uint32, prot Prot, flags MapFlags) (uint32, error) {
	if flags&(MapShared|MapPrivate) != 0 {
		return 0, ErrInvalid // shared anonymous memory is not supported
	}
	return as.mmap(addr, length, prot, flags, nil, 0)
}

// MmapRegion maps length bytes of region r from page-aligned byte offset
// off, shared or private (flags must hold exactly one of MapShared and
// MapPrivate), and returns the address (mmap(addr, length, prot, flags,
// fd, off) of a file). The mapping must lie inside the region: its size
// is fixed, so there is no end of file to grow past. Other flags and
// addr are as for Mmap.
func (as *AddressSpace) MmapRegion(addr, length uint32, prot Prot, flags MapFlags, r *Region, off uint64) (uint32, error) {
	shared := flags&MapShared != 0
	if r == nil || shared == (flags&MapPrivate != 0) || off&pageMask != 0 {
		return 0, ErrInvalid
	}
	size, ok := pageAlignLen(length)
	if !ok || length == 0 || off/pgtable.PageSize+uint64(size/pgtable.PageSize) > r.cfg.Pages {
		return 0, ErrInvalid
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return 0, ErrRegionClosed
	}
	return as.mmap(addr, length, prot, flags, r, off/pgtable.PageSize)
}

// mmap is do_mmap for anonymous memory (r nil) or a region from page
// pgoff.
func (as *AddressSpace) mmap(addr, length uint32, prot Prot, flags MapFlags, r *Region, pgoff uint64) (uint32, error) {
	// Linux's mmap does not check prot: bits other than read, write and
	// exec (PROT_SEM, or any unknown one) are ignored (calc_vm_prot_bits).
	if length == 0 {
		return 0, ErrInvalid
	}
	size, ok := pageAlignLen(length)
	if !ok {
		return 0, ErrNoRoom
	}
	fixed := flags&(MapFixed|MapFixedNoReplace) != 0
	if fixed && (addr&pageMask != 0 || !inWindow(addr, size)) {
		return 0, ErrInvalid
	}
	as.mmapLock.Lock()
	defer as.mmapLock.Unlock()
	if as.exited {
		return 0, ErrExited
	}
	switch {
	case flags&MapFixedNoReplace != 0:
		if !as.rangeFree(addr, size) {
			return 0, ErrExist
		}
	case flags&MapFixed != 0:
		if err := as.unmap(addr, size); err != nil {
			return 0, err
		}
	default:
		if addr, ok = as.getUnmappedArea(addr, size); !ok {
			return 0, ErrNoRoom
		}
	}
	vf := prot.vmFlags() | VMMayRead | VMMayWrite | VMMayExec
	v := &VMA{as: as, start: addr, end: addr + size, pgoff: addr >> pgtable.PageShift, file: r}
	if r != nil {
		v.pgoff = uint32(pgoff)
		if flags&MapShared != 0 {
			vf |= VMShared | VMMayShare
		}
	}
	if prot&ProtWrite != 0 && vf&VMShared == 0 {
		vf |= VMAccount // private writable: charged to the commit limit
	}
	v.flags = vf
	var prev *VMA
	if next := as.findVMA(addr); next != nil {
		prev = next.prev
	} else {
		prev = as.tail
	}
	as.linkVMA(v, prev)
	as.nrVMAs++
	as.tryMerge(v)
	return addr, nil
}

func (as *AddressSpace) rangeFree(addr, size uint32) bool {
	v := as.findVMA(addr)
	return v == nil || uint64(v.start) >= uint64(addr)+uint64(size)
}

// getUnmappedArea picks where a mapping of size bytes goes: at the hint if
// that range is free, else the top of the highest gap that fits. A
// mapping of whole sections with no hint is section aligned where a gap
// allows, so that it can take huge pages (Linux 6.7's
// thp_get_unmapped_area for anonymous memory, with its padded search:
// the highest gap that holds size plus a section).
func (as *AddressSpace) getUnmappedArea(hint, size uint32) (uint32, bool) {
	if hint != 0 {
		hint = (hint + pageMask) &^ pageMask
		if hint != 0 && inWindow(hint, size) && as.rangeFree(hint, size) {
			return hint, true
		}
	}
	if hint == 0 && size%pgtable.SectionSize == 0 && size <= pgtable.WindowSize-pgtable.SectionSize {
		if end, ok := as.topGap(size + pgtable.SectionSize); ok {
			return (end - size) &^ hugeMask, true
		}
	}
	end, ok := as.topGap(size)
	return end - size, ok
}

// topGap returns the end of the highest gap of at least size bytes.
func (as *AddressSpace) topGap(size uint32) (uint32, bool) {
	gapEnd := pgtable.WindowEnd
	for v := as.tail; ; v = v.prev {
		gapStart := pgtable.WindowStart
		if v != nil {
			gapStart = v.end
		}
		if gapEnd-gapStart >= size {
			return gapEnd, true
		}
		if v == nil {
			return 0, false
		}
		gapEnd = v.start
	}
}

// Munmap removes the mappings in [addr, addr+length) (munmap(2)); VMAs
// straddling the ends are split. Unmapping nothing is not an error.
func (as *AddressSpace) Munmap(addr, length uint32) error {
	size, ok := pageAlignLen(length)
	if addr&pageMask != 0 || length == 0 || !ok || !inWindow(addr, size) {
		return ErrInvalid
	}
	as.mmapLock.Lock()
	defer as.mmapLock.Unlock()
	if as.exited {
		return ErrExited
	}
	return as.unmap(addr, size)
}

// unmap is do_vmi_munmap; the mmap lock is held for writing.
func (as *AddressSpace) unmap(addr, size uint32) error {
	end := addr + size
	v := as.findVMA(addr)
	if v == nil || v.start >= end {
		return nil
	}
	if v.start < addr {
		v = as.split(v, addr)
	}
	var firstErr error
	for v != nil && v.start < end {
		if v.end > end {
			as.split(v, end)
		}
		next := v.next
		as.ptl.Lock()
		err := as.zap(v.start, v.end)
		as.ptl.Unlock()
		if err != nil && firstErr == nil {
			firstErr = err
		}
		as.removeVMA(v)
		v = next
	}
	return firstErr
}

// modifyFlags applies change to the flags of every VMA in [addr,
// addr+size), splitting and re-merging around it. With stopAtHole it stops
// at the first unmapped page (mprotect); otherwise it skips holes
// (madvise). Either way a hole makes it return ErrNotMapped.
func (as *AddressSpace) modifyFlags(addr, size uint32, stopAtHole bool, change func(*VMA) VMFlags) error {
	end := uint64(addr) + uint64(size)
	cursor := uint64(addr)
	hole := false
	v := as.findVMA(addr)
	for v != nil && uint64(v.start) < end {
		if uint64(v.start) > cursor {
			hole = true
			if stopAtHole {
				return ErrNotMapped
			}
		}
		nf := change(v)
		if nf != v.flags {
			if uint64(v.start) < uint64(addr) {
				v = as.split(v, addr)
			}
			if uint64(v.end) > end {
				as.split(v, uint32(end))
			}
			as.changeProtection(v, nf)
			v = as.tryMerge(v)
		}
		cursor = uint64(v.end)
		v = v.next
	}
	if cursor < end || hole {
		return ErrNotMapped
	}
	return nil
}

// MsyncFlags are msync(2)'s flags.
type MsyncFlags uint8

const (
	// MsAsync schedules nothing: writeback is always tracked, and
	// Linux's MS_ASYNC has done nothing since 2.6.19 either.
	MsAsync MsyncFlags = 1 << iota
	// MsInvalidate would drop other mappings' caches; there is one
	// cache per region, so it does nothing beyond its checks.
	MsInvalidate
	// MsSync commits the range's dirty pages and returns when they are
	// durable.
	MsSync
)

// Msync flushes the shared region mappings in [addr, addr+length)
// (msync(2)): with MsSync, for each region mapped shared there, every
// dirty page of the range is committed through the region's journal as
// one transaction, and Msync returns when it is durable. Anonymous and
// private areas have nothing to write. An unaligned addr or a bad flag
// combination is ErrInvalid; a hole in the range is ErrNotMapped
// (ENOMEM), after the areas before it are synced, as Linux does. The
// mmap lock is not held while the journal commits.
func (as *AddressSpace) Msync(addr, length uint32, flags MsyncFlags) error {
	if addr&pageMask != 0 || flags&^(MsAsync|MsInvalidate|MsSync) != 0 || flags&MsAsync != 0 && flags&MsSync != 0 {
		return ErrInvalid
	}
	size, ok := pageAlignLen(length)
	if !ok || !inWindow(addr, size) {
		return ErrNotMapped
	}
	type span struct {
		r      *Region
		lo, hi uint64
	}
	var spans []span
	as.mmapLock.RLock()
	if as.exited {
		as.mmapLock.RUnlock()
		return ErrExited
	}
	end := uint64(addr) + uint64(size)
	cursor := uint64(addr)
	var holeErr error
	for v := as.findVMA(addr); v != nil && uint64(v.start) < end; v = v.next {
		if uint64(v.start) > cursor {
			holeErr = ErrNotMapped
			break
		}
		if v.sharedFile() {
			s, e := max(v.start, addr), uint32(min(uint64(v.end), end))
			spans = append(spans, span{v.file, v.linearIndex(s), v.linearIndex(s) + uint64(e-s)>>pgtable.PageShift})
		}
		cursor = uint64(v.end)
	}
	if cursor < end {
		holeErr = ErrNotMapped
	}
	as.mmapLock.RUnlock()
	if flags&MsSync == 0 {
		return holeErr
	}
	// Adjacent areas of one region (split by mprotect) are one range:
	// one transaction.
	for i := 0; i < len(spans); i++ {
		sp := spans[i]
		for i+1 < len(spans) && spans[i+1].r == sp.r && spans[i+1].lo == sp.hi {
			sp.hi = spans[i+1].hi
			i++
		}
		if err := sp.r.msync(sp.lo, sp.hi); err != nil {
			return err
		}
	}
	return holeErr
}
