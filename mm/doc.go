// Package mm is the virtual memory manager: address spaces of private
// anonymous memory in the ARMv7 task window, their page faults, fork with
// copy-on-write, anon_vma reverse mapping, transparent huge pages and
// MADV_FREE, shared and private mappings of journaled regions of a block
// device with their page cache, and page reclaim with swap to any block
// device and writeback through the journal, on top of the page allocator
// (mm/phys) and the translation tables (mm/pgtable). It follows Linux's
// mm in semantics and names; the Linux function each piece models is
// named beside it, and the files are named after Linux's (rmap,
// huge_memory, madvise, vmscan, swap, swap_state, swapfile, page_io,
// oom_kill, filemap).
//
// # Objects
//
// A Manager is the machine's memory manager: the pool, the shared zero
// page, the registry of address spaces (by PID, for /proc/PID), the LRU
// lists, the swap devices, kswapd, and the counters /proc/meminfo and
// /proc/vmstat report. An AddressSpace (mm_struct) has VMAs
// (vm_area_struct) in an interval tree plus a sorted list, and a
// pgtable.Table. AddressSpace.Read and Write are the software MMU: they
// translate each page with the hardware entries exactly as the MMU would
// and, on a fault, call the fault handler and retry, like a CPU taking a
// data abort. On the image, package mm/mmu also puts a space's table into
// the core's live MMU (Config.TLB hears of every entry change), and tasks
// touch the window with plain loads and stores; their data aborts come to
// FaultAtomic on g0 and HandleAbort in goroutine context (abort.go), which
// is the same handler.
//
// A Region (filemap.go) is a range of a block device behind a
// blk/journal: Linux's address_space of a file. Its page cache indexes
// pages by offset, its i_mmap interval tree the VMAs that map it; a VMA
// mapping it has file set and pgoff its page offset in the region.
// Stores through shared mappings reach the cache; Msync, the flusher and
// reclaim commit dirty pages as journal transactions.
//
// # Faults
//
//   - no VMA, or a VMA that forbids the access: a *FaultError with the
//     address, the access and SEGV_MAPERR or SEGV_ACCERR;
//   - read of an empty PTE: the zero page, read-only (do_anonymous_page);
//   - write of an empty PTE: a zeroed page, writable and dirty;
//   - write of a read-only PTE in a writable VMA (the zero page, or a page
//     shared since fork): reused in place if this mapping is its only user,
//     else copied (do_wp_page);
//   - a present PTE that is not young, or clean on a write: the software
//     bit is set, which grants the hardware permission (Linux/ARM's
//     dirty/young emulation);
//   - a swap PTE: the page is taken from the swap cache, or read back
//     with its neighbours read ahead (swap_state.go); a failed read is a
//     SwapError (SIGBUS) for this fault alone;
//   - an empty PTE of a region mapping: the cache page (read in with
//     read-ahead on a miss), mapped clean; a store through a shared
//     mapping dirties it, one through a private mapping copies it into a
//     new anonymous page (filemap.go);
//   - in an empty section that an eligible area covers whole: a huge page,
//     or for a read the huge zero page (huge_memory.go); a write to a
//     write-protected section reuses it, or splits it and copies a page.
//
// # Reclaim
//
// Every anonymous page mapped or in the swap cache, and every page cache
// page, is on one of four LRU lists (swap.go), or isolated by reclaim. kswapd, woken by phys when free
// memory falls below low, and direct reclaim, phys's Reclaimer, take
// pages from the inactive lists' tails (vmscan.go): referenced pages get
// a second chance or are activated, lazily freed ones are dropped without
// I/O (sections whole), swap-backed ones are split if huge, given a slot
// and a place in the swap cache, unmapped through the rmap, and written
// on the device's MemReclaim work queue (page_io.go); the page is freed
// when the write is acknowledged, and kept, dirty, if it fails. Page
// cache pages are unmapped through their region's i_mmap tree and
// dropped if clean; dirty ones go to the region's writeback work, which
// commits them through the journal on MemReclaim queues and frees them
// when the commit is durable. When
// nothing can be reclaimed the OOM killer ends the largest space
// (oom_kill.go).
//
// # Locks, in order
//
//	AddressSpace.mmapLock   (mmap_lock) faults, Read/Write and
//	                        MADV_DONTNEED hold it for reading; Mmap,
//	                        Munmap, Mprotect, other madvise, Fork and Exit
//	                        for writing; Msync reads the VMAs under it and
//	                        commits with it released
//	  Region.wbMu           one writeback transaction of a region at a time
//	  Region.immapMu        (i_mmap_rwsem) a region's i_mmap tree, taken
//	                        with no page-table lock held, before the
//	                        anon_vma lock when a VMA changes
//	  AddressSpace.ptl      (page_table_lock) the table, the VMAs' anon_vma
//	                        fields while a fault sets them, exited; Fork
//	                        nests the child's under the parent's
//	    anonVMA root .mu    (anon_vma->root->rwsem) every interval tree and
//	                        degree counter of one fork family
//	    swapInfo.mu         (si->lock) one swap device's map, clusters,
//	                        swap cache index and reads in flight
//	    Region.mu           (i_pages lock) a region's cache index and reads
//	                        in flight
//	      lruvec.mu         (lruvec->lru_lock) the LRU lists
//	        phys's zone lock
//
// The live MMU's abort path (abort.go) runs on g0 in the exception, where
// nothing may wait: FaultAtomic takes the mmap lock and the page-table
// lock only with TryRLock and TryLock, and leaves the fault to HandleAbort
// if either is held. The table's TLB hooks run under the page-table lock
// and take mm/mmu's CPU lock, which nests inside it.
//
// The page lock (PGLocked) comes before all of these but the mmap lock
// and Region.wbMu (writeback locks the pages it commits):
// reclaim holds it across its rmap walks, and a swap-in fault takes it
// with the page-table lock dropped (folio_lock), yielding until reclaim
// lets go. Manager.reclaimMu is read-held by each reclaim pass (never
// while waiting for a write) and write-held by Check and Quiesce, so that
// the checker sees no page half-way through reclaim; write completions
// run on the work queue without it. No page is freed with an LRU or swap
// device lock held: the last Put of a page on a list calls back into the
// LRU code through phys's release hook.
//
// Manager.mu guards the PID registry alone. It is a leaf: Exit takes it
// under its mmap lock to unregister, and nothing takes another lock while
// holding it (Check and Stats copy the registry first, then lock spaces).
// Manager.deferredMu (the deferred split queue, split_queue_lock) is taken
// under a page-table lock when a mapping goes; SplitHugePage holds it
// around phys's split, so it nests the zone lock and nothing else.
// Manager.hugeZeroMu is taken with no lock held (it may allocate).
//
// Swap counts change under these locks: swapDup and swapFree with a
// page-table lock held (fork copying swap PTEs holds the parent's and the
// child's; try_to_unmap, zap and a swap-in hold the one space's), and
// swapCount with one held (smaps), so none of them waits for I/O or
// memory. Swap-in runs with only the mmap lock held for reading, the
// page-table lock dropped: it may wait for I/O and allocate.
//
// Page allocation may enter reclaim, which walks page tables, so nothing
// allocates from phys with a page-table lock held: faults drop it around
// the allocation and check the PTE again after (pte_same), and tables are
// populated the same way.
//
// Linux takes anon_vma locks before page-table locks (mm/rmap.c). Here the
// page-table lock comes first, so an rmap walk cannot hold the anon_vma
// lock while it visits PTEs: it collects the candidate (space, address)
// pairs under the anon_vma root lock, drops it, and checks each one under
// that space's page-table lock, where a PTE that still maps the frame is a
// mapping whatever happened to the VMA meanwhile. The caller of a walk
// holds the page lock (PGLocked), which keeps page.Mapping from moving
// (page_move_anon_rmap takes it too).
//
// # Invariants (Manager.Check asserts them)
//
//   - a page's map count equals the PTEs that map it, a compound page's
//     entire map count the sections that map it and its pages-mapped
//     count its frames mapped small (plus EntirelyMapped while a section
//     maps it); its reference count is at least all of them; every entry
//     mapping it is found exactly once by an rmap walk from its anon_vma;
//   - a section maps an order-8 compound page (or the huge zero page,
//     read-only), lies inside one VMA and has a table page deposited; a
//     compound page mapped small in part and by no section is on the
//     deferred split queue;
//   - a page's anon_vma is in the chain of every VMA mapping it, and its
//     Index is its linear page index in each;
//   - no PTE lies outside a VMA or grants more than the VMA allows; every
//     hardware entry is the one derived from its software PTE;
//   - VMAs are sorted, disjoint and maximally merged; every chain has one
//     root; an anon_vma's tree holds exactly the chains linked to it, and
//     its degree counters and reference count are what its family says;
//   - every page handed to an address space was zeroed (VerifyZeroed
//     checks it as it happens), and the zero pages stay zero;
//   - each LRU list holds only pages whose flags name it, and its frame
//     count is right; every page mapped or in the swap cache is on a list
//     or isolated (at most the isolated count of frames are on none);
//   - each swap slot's count equals the swap PTEs naming it, its cache
//     bit is set exactly while a page is cached or being read for it, and
//     the cached page names the slot; the in-use, per-cluster, SwapCached
//     and swap-used counts add up;
//   - on a pool the Manager alone uses, every frame is free, on an LRU
//     list, isolated by reclaim, a page table, a zero page or a swap
//     writeback worker's buffer (CheckFrames);
//   - each open region's i_mmap tree holds exactly the VMAs mapping it,
//     at their offsets; each cache page names its region and index, holds
//     the cache's reference beside its mappings', is mapped only where a
//     VMA of its region maps that index, never writable through a private
//     mapping, and dirty in a PTE only if PGDirty; an rmap walk through
//     i_mmap finds each of its PTEs once; Cached, Dirty, Mapped and the
//     file writeback count add up (filemap_check.go);
//   - when every address space has exited, every region is closed and the
//     Manager is closed, every frame is back in the pool.
package mm
