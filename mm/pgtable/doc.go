// Package pgtable is the translation table of an address space's task
// window (0x40000000-0x7fffffff) in the ARMv7-A short-descriptor format,
// with the software state the hardware descriptors cannot hold kept in a
// shadow beside them, as Linux/ARM does (arch/arm/include/asm/
// pgtable-2level.h).
//
// # Layout
//
// The window's 1024 first-level descriptors fill one 4 KiB frame: the
// slice of a full 16 KiB L1 table that covers the window, so that the
// live MMU (mm/mmu) can copy it into TamaGo's table (TTBR0) when it
// switches the space in. The frame
// after it holds 1024 software section entries (huge PTEs), for 1 MiB
// mappings. A table page (one frame) serves a pair of sections: two shadow
// tables of 256 software PTEs, then the two hardware tables the L1
// descriptors point at. Table pages come from mm/phys and go back to it
// the moment their last entry is cleared.
//
// # Software and hardware entries
//
// A PTE (software) is the truth; the hardware descriptor is always derived
// from it (HardwarePTE, Linux's cpu_v7_set_pte_ext). ARMv7 has no dirty
// bit and, with SCTLR.AFE clear, no access flag, so:
//
//   - a PTE that is not Young gets no hardware mapping: the first access
//     takes a translation fault, whose handler sets Young;
//   - a writable PTE that is not Dirty is mapped read-only: the first write
//     takes a permission fault, whose handler sets Dirty;
//   - clearing Young (page aging) or Dirty takes the permission away again.
//
// Swap entries and PROT_NONE live only in the software entry; the
// hardware entry is a fault.
//
// # The software MMU
//
// Translate walks the hardware descriptors from the L1 window through the
// physical addresses they hold, checking domains against TamaGo's DACR and
// permissions against AP/XN/PXN, and returns the address or the fault
// status code the MMU would report. The shadow plays no part in it.
//
// # The TLB
//
// Every hardware descriptor the table writes goes through setL1 or setL2
// (tlb.go), which tell the table's TLB (SetTLB): the live MMU mirrors,
// cleans and invalidates there, and host tests check it with a model. No
// write of a descriptor bypasses them.
//
// # Concurrency
//
// A Table is not safe for concurrent use. Its owner (mm) serialises every
// call with its page-table lock; Populate drops that lock around the one
// allocation it makes, because allocating may reclaim and reclaim walks
// tables.
package pgtable
