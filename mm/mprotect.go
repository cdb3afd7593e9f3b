package mm

import "yolk/mm/pgtable"

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

// changeProtection sets v's flags and brings its PTEs in line: execute
// and PROT_NONE follow the flags, write permission is only ever removed
// (a write to a page that may write again takes a fault that restores it,
// reusing the page in place when nothing else maps it).
func (as *AddressSpace) changeProtection(v *VMA, flags VMFlags) {
	v.flags = flags
	perms := v.ptePerms()
	as.ptl.Lock()
	// The area's edges split any section across them (split); those
	// inside change whole (change_huge_pmd).
	as.pt.RangeSections(v.start, v.end, func(haddr uint32, sec pgtable.PTE) bool {
		if !sec.Present() {
			return true
		}
		np := sec.Without(pgtable.Exec|pgtable.NoAccess|pgtable.User) | perms
		if flags&VMWrite == 0 {
			np = np.Without(pgtable.Write)
		}
		if np != sec {
			as.setSection(haddr, np)
		}
		return true
	})
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
