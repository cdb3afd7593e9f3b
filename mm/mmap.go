package mm

import (
	"errors"

	"yolk/mm/pgtable"
)

// MapFlags are mmap(2)'s flags beyond MAP_PRIVATE|MAP_ANONYMOUS, which
// every mapping here is.
type MapFlags uint8

const (
	// MapFixed: map exactly at addr, replacing whatever is there.
	MapFixed MapFlags = 1 << iota
	// MapFixedNoReplace: map exactly at addr, or fail with ErrExist.
	MapFixedNoReplace
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
	if prot&ProtWrite != 0 {
		vf |= VMAccount
	}
	v := &VMA{as: as, start: addr, end: addr + size, pgoff: addr >> pgtable.PageShift, flags: vf}
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
// that range is free, else the top of the highest gap that fits.
func (as *AddressSpace) getUnmappedArea(hint, size uint32) (uint32, bool) {
	if hint != 0 {
		hint = (hint + pageMask) &^ pageMask
		if hint != 0 && inWindow(hint, size) && as.rangeFree(hint, size) {
			return hint, true
		}
	}
	gapEnd := pgtable.WindowEnd
	for v := as.tail; ; v = v.prev {
		gapStart := pgtable.WindowStart
		if v != nil {
			gapStart = v.end
		}
		if gapEnd-gapStart >= size {
			return gapEnd - size, true
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

// Mprotect changes the protection of [addr, addr+length) (mprotect(2)).
// As on Linux, VMAs are changed in address order until a hole is met,
// which ends the call with ErrNotMapped; changed areas are split at the
// ends of the range and merged with neighbours that now match.
func (as *AddressSpace) Mprotect(addr, length uint32, prot Prot) error {
	// mprotect does check: PROT_SEM is allowed and ignored, any other
	// unknown bit is EINVAL (arch_validate_prot's generic version).
	if addr&pageMask != 0 || prot&^(ProtRead|ProtWrite|ProtExec|ProtSem) != 0 {
		return ErrInvalid
	}
	size, ok := pageAlignLen(length)
	if !ok {
		return ErrNotMapped
	}
	if size == 0 {
		return nil
	}
	as.mmapLock.Lock()
	defer as.mmapLock.Unlock()
	if as.exited {
		return ErrExited
	}
	return as.modifyFlags(addr, size, true, func(v *VMA) VMFlags {
		f := v.flags&^vmAccessFlags | prot.vmFlags()
		switch {
		case prot&ProtWrite != 0:
			f |= VMAccount // charged once it may be written
		case v.anonVMA == nil:
			// Never faulted: nothing private to charge for, so the
			// charge goes and the area may merge with read-only
			// neighbours (mprotect_fixup, Linux 6.7).
			f &^= VMAccount
		}
		return f
	})
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

// changeProtection sets v's flags and brings its PTEs in line: execute
// and PROT_NONE follow the flags, write permission is only ever removed
// (a write to a page that may write again takes a fault that restores it,
// reusing the page in place when nothing else maps it).
func (as *AddressSpace) changeProtection(v *VMA, flags VMFlags) {
	v.flags = flags
	perms := v.ptePerms()
	as.ptl.Lock()
	as.pt.Range(v.start, v.end, func(va uint32, pte pgtable.PTE) bool {
		if !pte.Present() {
			return true
		}
		np := pte.Without(pgtable.Exec|pgtable.NoAccess|pgtable.User) | perms
		if flags&VMWrite == 0 {
			np = np.Without(pgtable.Write)
		}
		if np != pte {
			as.pt.Set(va, np)
		}
		return true
	})
	as.ptl.Unlock()
}

// Advice values, with Linux's numbers.
type Advice int

const (
	MadvNormal   Advice = 0
	MadvDontneed Advice = 4
	MadvDontfork Advice = 10
	MadvDofork   Advice = 11
)

// Madvise gives advice about [addr, addr+length) (madvise(2)):
//
//   - MadvDontneed drops the range's pages now; the next access sees
//     zeroes, as with private anonymous memory on Linux.
//   - MadvDontfork and MadvDofork set and clear VM_DONTCOPY: whether fork
//     copies the area into the child.
//   - MadvNormal changes nothing here (it clears the read-ahead hints
//     VM_SEQ_READ and VM_RAND_READ, which no area has).
//
// Mapped parts of the range are advised even if the range has holes, and
// the holes make the call return ErrNotMapped (ENOMEM), as on Linux.
func (as *AddressSpace) Madvise(addr, length uint32, advice Advice) error {
	if addr&pageMask != 0 {
		return ErrInvalid
	}
	size, ok := pageAlignLen(length)
	if !ok {
		return ErrInvalid
	}
	switch advice {
	case MadvDontneed:
		return as.dontneed(addr, size)
	case MadvNormal, MadvDontfork, MadvDofork:
		if size == 0 {
			return nil
		}
		as.mmapLock.Lock()
		defer as.mmapLock.Unlock()
		if as.exited {
			return ErrExited
		}
		return as.modifyFlags(addr, size, false, func(v *VMA) VMFlags {
			switch advice {
			case MadvDontfork:
				return v.flags | VMDontCopy
			case MadvDofork:
				return v.flags &^ VMDontCopy
			}
			// MADV_NORMAL clears read-ahead hints, which anonymous
			// areas here never have; its walk still reports holes.
			return v.flags
		})
	}
	return ErrInvalid
}

// dontneed zaps the PTEs of the range under the mmap lock held for
// reading, as Linux does: faults may run beside it.
func (as *AddressSpace) dontneed(addr, size uint32) error {
	if size == 0 {
		return nil
	}
	as.mmapLock.RLock()
	defer as.mmapLock.RUnlock()
	if as.exited {
		return ErrExited
	}
	end := uint64(addr) + uint64(size)
	cursor := uint64(addr)
	var err error
	for v := as.findVMA(addr); v != nil && uint64(v.start) < end; v = v.next {
		s, e := max(v.start, addr), uint32(min(uint64(v.end), end))
		if uint64(v.start) > cursor && err == nil {
			err = ErrNotMapped
		}
		as.ptl.Lock()
		zerr := as.zap(s, e)
		as.ptl.Unlock()
		if zerr != nil {
			return zerr
		}
		cursor = uint64(v.end)
	}
	if cursor < end && err == nil {
		err = ErrNotMapped
	}
	return err
}
