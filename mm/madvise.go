package mm

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
