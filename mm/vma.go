package mm

import (
	"fmt"
	"strings"

	"yolk/mm/pgtable"
)

// VMFlags are a VMA's vm_flags, with Linux's values (include/linux/mm.h)
// so that smaps' VmFlags mnemonics come out as Linux prints them.
type VMFlags uint32

const (
	VMRead     VMFlags = 0x00000001
	VMWrite    VMFlags = 0x00000002
	VMExec     VMFlags = 0x00000004
	VMShared   VMFlags = 0x00000008
	VMMayRead  VMFlags = 0x00000010
	VMMayWrite VMFlags = 0x00000020
	VMMayExec  VMFlags = 0x00000040
	VMMayShare VMFlags = 0x00000080
	VMDontCopy VMFlags = 0x00020000 // MADV_DONTFORK: not inherited by fork
	VMAccount  VMFlags = 0x00100000 // private writable: charged to the commit limit
	// VMHugepage and VMNoHugepage are MADV_HUGEPAGE and MADV_NOHUGEPAGE.
	VMHugepage   VMFlags = 0x20000000
	VMNoHugepage VMFlags = 0x40000000

	vmAccessFlags = VMRead | VMWrite | VMExec
)

// smaps' two-letter names, by bit (fs/proc/task_mmu.c, show_smap_vma_flags).
var vmFlagNames = map[VMFlags]string{
	VMRead: "rd", VMWrite: "wr", VMExec: "ex", VMShared: "sh",
	VMMayRead: "mr", VMMayWrite: "mw", VMMayExec: "me", VMMayShare: "ms",
	VMDontCopy: "dc", VMAccount: "ac", VMHugepage: "hg", VMNoHugepage: "nh",
}

// Mnemonics returns the flags as smaps' VmFlags line lists them.
func (f VMFlags) Mnemonics() string {
	var b strings.Builder
	for bit := VMFlags(1); bit != 0; bit <<= 1 {
		if f&bit != 0 {
			if name, ok := vmFlagNames[bit]; ok {
				b.WriteString(name)
				b.WriteByte(' ')
			}
		}
	}
	return b.String()
}

// Prot is mmap(2)'s protection.
type Prot uint8

const (
	ProtNone  Prot = 0
	ProtRead  Prot = 1
	ProtWrite Prot = 2
	ProtExec  Prot = 4
	// ProtSem (PROT_SEM) asks for memory atomic operations work on: all
	// memory here, so it changes nothing, as on ARM Linux.
	ProtSem Prot = 8
)

func (p Prot) vmFlags() VMFlags { return VMFlags(p) & vmAccessFlags } // same bit values

// VMA is a virtual memory area: a range of one address space with one set
// of flags (Linux's vm_area_struct): private anonymous memory, or a
// shared or private mapping of a journaled region (file, filemap.go).
//
// Fields are written with the address space's mmap lock held for writing;
// start, end and pgoff are also read by rmap walks under the anon_vma root
// lock and the region's i_mmap lock, so changes to them take those locks
// too (see setRange).
type VMA struct {
	as         *AddressSpace
	start, end uint32
	// pgoff is the page offset of start in the VMA's file: the region's
	// page for a region mapping; for anonymous memory, start's page
	// number when the area was created. Split and
	// merge keep addr → pgoff linear, which is what lets an anon page's
	// Index find its address in every VMA that maps it.
	pgoff uint32
	flags VMFlags
	// file is the region the area maps, nil for anonymous memory; fnode
	// is the area's place in the region's i_mmap tree.
	file    *Region
	fnode   inode[*VMA]
	inImmap bool

	// anonVMA is the VMA's own anon_vma (set on the first anonymous page,
	// under the page-table lock), chain every anon_vma it is linked to,
	// oldest first.
	anonVMA *anonVMA
	chain   []*anonVMAChain

	prev, next *VMA
	node       inode[*VMA]
}

// Start is the first address of the area.
func (v *VMA) Start() uint32 { return v.start }

// End is the first address past the area.
func (v *VMA) End() uint32 { return v.end }

// Flags are the area's vm_flags.
func (v *VMA) Flags() VMFlags { return v.flags }

// Pgoff is the area's page offset.
func (v *VMA) Pgoff() uint32 { return v.pgoff }

// Region is the region the area maps, or nil for anonymous memory.
func (v *VMA) Region() *Region { return v.file }

// sharedFile reports a shared mapping of a region: stores reach its page
// cache.
func (v *VMA) sharedFile() bool { return v.file != nil && v.flags&VMShared != 0 }

// AddressSpace is the space the area belongs to.
func (v *VMA) AddressSpace() *AddressSpace { return v.as }

func (v *VMA) pages() uint32 { return (v.end - v.start) >> pgtable.PageShift }

// linearIndex is the page offset of addr in the area's mapping: what an
// anon page faulted in at addr records as its Index (linear_page_index).
func (v *VMA) linearIndex(addr uint32) uint64 {
	return uint64(v.pgoff) + uint64((addr-v.start)>>pgtable.PageShift)
}

// addressOf is the inverse (vma_address): where page index idx is mapped
// in this area, if it is.
func (v *VMA) addressOf(idx uint64) (uint32, bool) {
	if idx < uint64(v.pgoff) || idx-uint64(v.pgoff) >= uint64(v.pages()) {
		return 0, false
	}
	return v.start + uint32(idx-uint64(v.pgoff))<<pgtable.PageShift, true
}

// allows reports whether the area permits an access. As on Linux/ARM
// (arch/arm/mm/fault.c, access_error) a read is allowed by any of read,
// write or exec: the MMU has no write-only or exec-only pages.
func (v *VMA) allows(acc pgtable.Access) bool {
	switch acc {
	case pgtable.AccessWrite:
		return v.flags&VMWrite != 0
	case pgtable.AccessExec:
		return v.flags&VMExec != 0
	}
	return v.flags&vmAccessFlags != 0
}

// ptePerms are the software PTE permission bits for a page of this area.
func (v *VMA) ptePerms() pgtable.PTE {
	p := pgtable.User
	if v.flags&VMExec != 0 {
		p |= pgtable.Exec
	}
	if v.flags&vmAccessFlags == 0 {
		p |= pgtable.NoAccess
	}
	return p
}

func (v *VMA) String() string {
	return fmt.Sprintf("[%#08x-%#08x %s pgoff %#x]", v.start, v.end, strings.TrimSpace(v.flags.Mnemonics()), v.pgoff)
}

// The VMA set of an address space: an interval tree for lookups plus a
// sorted doubly linked list for neighbours, as Linux kept an rbtree and
// vm_next/vm_prev before the maple tree.

// findVMA returns the first VMA ending above addr (find_vma): the one
// containing addr, or the next one up, or nil.
func (as *AddressSpace) findVMA(addr uint32) *VMA {
	n := as.vmas.firstEndingAfter(uint64(addr))
	if n == nil {
		return nil
	}
	return n.val
}

// lookup returns the VMA containing addr, or nil.
func (as *AddressSpace) lookup(addr uint32) *VMA {
	if v := as.findVMA(addr); v != nil && v.start <= addr {
		return v
	}
	return nil
}

// linkVMA inserts v after prev (nil: at the head).
func (as *AddressSpace) linkVMA(v, prev *VMA) {
	v.prev = prev
	if prev != nil {
		v.next, prev.next = prev.next, v
	} else {
		v.next, as.head = as.head, v
	}
	if v.next != nil {
		v.next.prev = v
	} else {
		as.tail = v
	}
	as.vmas.insert(&v.node, uint64(v.start), uint64(v.end)-1, v)
	v.immapInsert()
}

func (as *AddressSpace) unlinkVMA(v *VMA) {
	v.immapRemove()
	as.vmas.remove(&v.node)
	if v.prev != nil {
		v.prev.next = v.next
	} else {
		as.head = v.next
	}
	if v.next != nil {
		v.next.prev = v.prev
	} else {
		as.tail = v.prev
	}
	v.prev, v.next = nil, nil
}

// setRange changes a VMA's range: in the address space's tree, in its
// region's i_mmap tree, and in the interval tree of every anon_vma it is
// chained to, under their root lock (vma_adjust's
// anon_vma_interval_tree_pre/post_update_vma and vma_interval_tree_remove
// and insert).
func (as *AddressSpace) setRange(v *VMA, start, end, pgoff uint32) {
	unlockFile := v.immapLockRemove()
	defer unlockFile()
	unlockRoot := lockChainRoot(v)
	for _, avc := range v.chain {
		avc.remove()
	}
	v.start, v.end, v.pgoff = start, end, pgoff
	for _, avc := range v.chain {
		avc.insert()
	}
	unlockRoot()
	as.vmas.remove(&v.node)
	as.vmas.insert(&v.node, uint64(start), uint64(end)-1, v)
}

// split cuts v at addr (strictly inside it): v keeps [start, addr) and a
// new VMA takes [addr, end), linked to every anon_vma v is (__split_vma,
// with anon_vma_clone copying the chain of the VMA being split).
func (as *AddressSpace) split(v *VMA, addr uint32) *VMA {
	as.splitHugePMDAt(addr)
	n := &VMA{as: as, start: addr, end: v.end, flags: v.flags, file: v.file, anonVMA: v.anonVMA,
		pgoff: v.pgoff + (addr-v.start)>>pgtable.PageShift}
	anonVMAClone(n, v)
	n.immapInsert() // before v shrinks, so that a walk always finds the pages
	as.setRange(v, v.start, addr, v.pgoff)
	as.linkVMA(n, v)
	as.nrVMAs++
	return n
}

// canMerge reports whether a and b, a immediately below b, may become one
// VMA: adjacent, the same flags and file, contiguous pgoff and mergeable
// anon_vmas (vma_merge's can_vma_merge_after/before with
// is_mergeable_anon_vma).
func canMerge(a, b *VMA) bool {
	return a.end == b.start && a.flags == b.flags && a.file == b.file &&
		a.pgoff+a.pages() == b.pgoff && mergeableAnonVMA(a, b)
}

// mergeableAnonVMA: the same anon_vma, or only one of them has one and it
// is not shared through fork (its chain is a singleton). Merging an area
// with a forked anon_vma into one without would give the merged area's
// untouched part an anon_vma full of other processes' pages to walk.
func mergeableAnonVMA(a, b *VMA) bool {
	switch {
	case a.anonVMA == b.anonVMA:
		return true
	case a.anonVMA == nil:
		return len(b.chain) == 1
	case b.anonVMA == nil:
		return len(a.chain) == 1
	}
	return false
}

// merge folds b into a (a immediately below b, canMerge true) and returns
// a. If only b has an anon_vma, a imports b's chain first: the importer
// must get the exporter's chain, not keep its own empty one (the 2.6.34
// vma_adjust bug: pages of b's range would be unreachable by rmap).
func (as *AddressSpace) merge(a, b *VMA) *VMA {
	if a.anonVMA == nil && b.anonVMA != nil {
		a.anonVMA = b.anonVMA
		anonVMAClone(a, b)
	}
	// Grow a over b's range and take b out of the anon_vma trees in one
	// critical section, so an rmap walk sees b's pages through exactly one
	// of the two.
	unlockFile := a.immapLockRemove()
	unlockRoot := lockChainRoot(a)
	for _, avc := range b.chain {
		avc.remove()
	}
	for _, avc := range a.chain {
		avc.remove()
	}
	a.end = b.end
	for _, avc := range a.chain {
		avc.insert()
	}
	unlockRoot()
	unlockFile()
	as.removeVMA(b)
	as.vmas.remove(&a.node)
	as.vmas.insert(&a.node, uint64(a.start), uint64(a.end)-1, a)
	return a
}

// tryMerge merges v with its neighbours where it can and returns the VMA
// that now covers v's range.
func (as *AddressSpace) tryMerge(v *VMA) *VMA {
	if p := v.prev; p != nil && canMerge(p, v) {
		v = as.merge(p, v)
	}
	if n := v.next; n != nil && canMerge(v, n) {
		v = as.merge(v, n)
	}
	return v
}

// removeVMA unlinks v from its anon_vmas and the address space. Its pages
// must already be unmapped.
func (as *AddressSpace) removeVMA(v *VMA) {
	unlinkAnonVMAs(v)
	as.unlinkVMA(v)
	as.nrVMAs--
}
