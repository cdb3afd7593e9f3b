// Package phys owns the managed pool of physical memory and hands it out
// as page frames: Linux's page allocator (mm/page_alloc.c) for one zone.
//
// # The pool and its descriptors
//
// The pool is a run of 4 KiB frames at a physical address aligned to
// 1 MiB: real DDR on the image, a byte slab on the host. Every frame has a
// descriptor, Page, in one array indexed by frame number minus the pool's
// first frame number, as struct page sits in Linux's mem_map. A frame is
// named by its PFN (physical address >> 12); conversions between PFN,
// physical address, descriptor and bytes check the pool's bounds and hand
// out slices capped at the frame or block they name, so no conversion
// reaches outside the pool.
//
// The descriptor carries what Linux keeps in struct page: flags (PG*,
// named as Linux names them), a reference count, a map count, the order of
// a block, the head of a compound page, and list links. It also carries
// the fields mm needs (Mapping for the anon_vma, Index, Private for a swap
// entry) as typed-but-opaque fields: Mapping is an `any` that phys never
// looks into. A parallel array owned by mm would keep phys ignorant of
// even that much, but it would have to be sized against the pool, kept in
// step with compound splits and looked up beside every descriptor; one
// array keeps a frame's state in one cache line (the descriptor is 64
// bytes, like struct page on 64-bit Linux) and makes the rule simple: a
// free frame's descriptor belongs to phys, an allocated one's owner fields
// to whoever allocated it. Mapping is an interface, not an unsafe.Pointer,
// so the garbage collector keeps an anon_vma alive while a page points at
// it. List links are frame numbers, not pointers: the same links serve the
// free lists while a frame is free and mm's LRU lists while it is in use
// (a frame is never on both), and the array holds no pointers but Mapping.
//
// # The buddy allocator
//
// Free memory is kept as naturally aligned blocks of 2^order frames,
// orders 0 to MaxOrder (4 MiB), on doubly linked lists per order and per
// migrate type, so that taking or returning a block is O(1). Allocation
// takes the smallest block that fits and splits off the unused halves;
// freeing merges a block with its buddy (the block at pfn ^ 2^order) for
// as long as the buddy is free and whole.
//
// Grouping by mobility. The pool is divided into pageblocks of 2^8 frames
// (1 MiB, one huge page), each labelled with a migrate type: Unmovable,
// Movable or Reclaimable. An allocation takes from the lists of its own
// type; when they are empty it falls back to another type the way Linux's
// __rmqueue_fallback does, stealing the largest free block it can find
// and, when that block or most of its pageblock is free, claiming the whole
// pageblock for the new type. Long-lived unmovable allocations therefore
// cluster in a few pageblocks instead of pinning every 1 MiB block of the
// pool, and order-8 blocks remain after long churn. A highatomic reserve
// is not kept: yolk has no high-order atomic users (network receive
// buffers are single frames), and it would take a pageblock from everyone.
//
// The pageset. Order-0 frames are freed onto a short LIFO list per
// migrate type and handed out from there first, as Linux's per-cpu
// pagesets do, so that a fault loop does not split and merge a 4 MiB
// block on every page and gets cache-hot frames. When a list grows past
// its high mark a batch of its coldest frames goes back to the buddy
// lists. The i.MX6UL has one core and TamaGo runs one P, so the pageset is
// one per pool, under the pool lock, not one per CPU under its own lock;
// the frames on it count as free (MemFree includes them) and are drained
// before an allocation of a higher order gives up.
//
// # Watermarks and contexts
//
// The min, low and high watermarks are derived from the pool size as
// Linux derives them from min_free_kbytes (sqrt(16 * KiB)) and
// watermark_scale_factor, and can be changed at run time. The fast path
// allocates while free memory stays at or above low. Below that it wakes
// the background reclaimer (kswapd, a hook mm installs) and retries
// against min. Context replaces Linux's GFP and task flags: whether the
// caller may reclaim, may start I/O, is atomic (never sleeps; may go down
// to 3/8 of min, Linux's ALLOC_MIN_RESERVE|ALLOC_NON_BLOCK), or runs on
// behalf of reclaim (Memalloc: may take everything below min, unless
// NoMemalloc says otherwise).
//
// The frames below min are the reserve, but the reserve is a watermark,
// not memory set aside: in good times every frame is usable by anyone, and
// only when free memory falls below min does the reserve exist, for the
// callers that free memory (reclaim, and the network receive of the block
// device reclaim writes to). Frames handed out only because the caller may
// use the reserve are marked PGPfmemalloc, so a receive buffer built on
// one can be recognised and dropped unless it belongs to such a caller.
// Ordinary direct reclaimers are throttled (bounded) once half of the
// reserve is gone, until kswapd brings free memory back above min, so they
// cannot drain what reclaim needs to make progress.
//
// # Locking
//
// One lock, Pool.mu (Linux's zone->lock), protects the free lists, the
// pageset, the pageblock types, the counters and the descriptors of free
// frames. The fast path takes it once. Nothing outside phys is called
// with it held (the kswapd hook and the Reclaimer run without it), and
// zeroing runs after it is released; setting up and tearing down a
// compound page's tails happens under it, so that Check never sees half a
// compound page. Allocated frames' flags, counts and owner fields belong to their
// owner and are changed with atomic operations (flags, refcount, mapcount)
// or under the owner's own locks (Mapping, Index, Private, LRU links); in
// mm's lock order phys's lock comes last.
//
// # Invariants
//
// Check verifies them; tests call it after every step and debug builds
// (tag yolk_debug) after every allocation and free:
//
//   - every frame is in exactly one place: a free block (of one order and
//     one migrate type list), the pageset, or an allocated block
//   - free blocks are aligned to their order, lie inside the pool and do
//     not overlap; a free block of pageblock order or more has one migrate
//     type across its pageblocks
//   - per-order counts, the pageset count and MemFree agree with the lists
//   - a compound page's head records its order and its tails point at it
//   - PGPfmemalloc appears only on allocated frames, and as many as the
//     counter of frames handed out from the reserve says
package phys
