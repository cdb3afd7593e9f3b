package mm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"yolk/blk"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
	"yolk/runtime/workqueue"
)

// Swap devices (Linux's mm/swapfile.c).
//
// Swapon takes any blk.Device, the RAM device or the NBD client, as swap
// space. Slot i is the page at byte i*4096; slot 0 holds a swap header in
// mkswap's format (SWAPSPACE2), so that a device looks the same to Linux
// tools, and is never handed out, which also keeps every swap entry
// distinct from the empty PTE.
//
// The swap map (si.smap, Linux's swap_map) has one word per slot: the
// number of swap PTEs that name the slot, and swapHasCache while a page
// for the slot is in the swap cache (SWAP_HAS_CACHE). A slot is free when
// its word is zero; Check asserts that every word's count equals the swap
// PTEs that name it and its cache bit the swap cache's entry. Slots are
// handed out by clusters of 256 (SWAPFILE_CLUSTER, one huge page's worth):
// reclaim fills one cluster before it starts another, so pages reclaimed
// together sit together on the device and swap-in can read them ahead in
// one sweep; a cluster whose slots are all free goes back to the free
// list.
//
// si.mu guards the map, the clusters, the swap cache index and the reads
// in flight. It nests inside page-table locks (fork and zap change counts
// with those held) and outside the LRU lock; nothing waits for I/O or
// memory with it held, and no page is freed under it.
const (
	swapCluster  = 256
	swapHasCache = 1 << 31
	swapBad      = 1 << 30 // the header slot
	swapCountMax = swapBad - 1

	// SwapPageWindow is how many slots swap-in reads at once, the faulting
	// one first (page-cluster = 3, as Linux's default).
	SwapPageWindow = 8
	// swapWritesInFlight bounds a device's writes in flight; reclaim waits
	// for one to complete when all are taken (Linux's bio mempool).
	swapWritesInFlight = 64
)

// SwapOptions configure Swapon.
type SwapOptions struct {
	// Name is the device's name in /proc/swaps (default "swap<type>").
	Name string
	// Priority orders devices: slots come from the highest first, and
	// devices of equal priority are used in turn. The zero value gives
	// Linux's default, -2 for the first device, -3 for the next...
	Priority int
	// SetPriority says that Priority was set (0 is a valid priority).
	SetPriority bool
}

// ErrSwapFull: no free slot on any swap device.
var ErrSwapFull = errors.New("mm: no free swap slot")

type swapInfo struct {
	typ  uint8
	name string
	prio int
	dev  blk.Device
	wq   *workqueue.Queue
	// writes is the free list of write requests; a request is taken for
	// each page under writeback.
	writes chan *swapWrite

	mu       sync.Mutex
	slots    uint32   // slots on the device, the header's included
	inuse    uint32   // slots whose word is not zero
	smap     []uint32 // per slot: PTE count | swapHasCache
	cache    []uint32 // per slot: pfn+1 of its swap cache page, or 0
	clusters []uint16 // per cluster: slots in use
	free     []uint32 // free clusters, lowest last
	cur      int      // the cluster being filled, or -1
	next     uint32   // the slot to try next in it
	// reading holds a channel for each slot being read into the swap
	// cache; faults on the slot wait for it to be closed.
	reading map[uint32]chan struct{}
	off     bool // swapoff has started: no new slots
	// used is the Manager's count of slots in use on every device,
	// changed with si.mu held so that Check sees it agree.
	used *atomic.Int64
}

// swapHeader builds the header page mkswap writes: union swap_header's
// info block at byte 1024 (version 1, last_page, nr_badpages 0, a
// uuid of zeroes, a volume label) and the magic in the last ten bytes.
func swapHeader(lastPage uint32, label string) []byte {
	h := make([]byte, phys.PageSize)
	le := binary.LittleEndian
	le.PutUint32(h[1024:], 1)        // version
	le.PutUint32(h[1028:], lastPage) // last_page
	le.PutUint32(h[1032:], 0)        // nr_badpages
	copy(h[1052:1068], label)        // volume_name[16] after uuid[16]
	copy(h[phys.PageSize-10:], "SWAPSPACE2")
	return h
}

// Swapon starts using dev as swap space (swapon(2)): it writes the swap
// header to its first page and makes its other pages slots.
func (m *Manager) Swapon(dev blk.Device, opt SwapOptions) error {
	if dev == nil {
		return errorf("swapon: no device")
	}
	if bs := dev.BlockSize(); bs <= 0 || phys.PageSize%bs != 0 {
		return errorf("swapon: block size %d does not divide the page size", bs)
	}
	if dev.Features()&blk.ReadOnly != 0 {
		return errorf("swapon: %s: %w", devName(dev), blk.ErrReadOnly)
	}
	slots := min(dev.Size()/phys.PageSize, pgtable.MaxSwapOffset+1)
	if slots < 2 {
		return errorf("swapon: %s: %d bytes is too small for swap", devName(dev), dev.Size())
	}
	m.swapMu.Lock()
	defer m.swapMu.Unlock()
	typ := -1
	for t := 0; t <= pgtable.MaxSwapType; t++ {
		if m.swapDevs[t] == nil {
			typ = t
			break
		}
		if m.swapDevs[t].dev == dev {
			return errorf("swapon: %s is already swap space", devName(dev))
		}
	}
	if typ < 0 {
		return errorf("swapon: %d swap devices already", pgtable.MaxSwapType+1)
	}
	if !opt.SetPriority {
		m.swapPrio--
		opt.Priority = m.swapPrio
	}
	if opt.Name == "" {
		opt.Name = devName(dev)
	}
	if err := dev.WriteAt(swapHeader(uint32(slots-1), "yolk"), 0, 0); err != nil {
		return fmt.Errorf("mm: swapon: writing the swap header: %w", err)
	}
	// As many writes in flight as there are requests, less on a small
	// pool: each worker holds a frame of its own.
	active := min(max(int(m.pool.Frames()/64), 4), swapWritesInFlight)
	wq, err := workqueue.New("swap_writeback/"+opt.Name, m.pool, workqueue.Config{
		Flags: workqueue.MemReclaim, MaxActive: active})
	if err != nil {
		return fmt.Errorf("mm: swapon: %w", err)
	}
	n := uint32(slots)
	si := &swapInfo{typ: uint8(typ), name: opt.Name, prio: opt.Priority, dev: dev, wq: wq,
		writes: make(chan *swapWrite, swapWritesInFlight),
		slots:  n, smap: make([]uint32, n), cache: make([]uint32, n),
		clusters: make([]uint16, (n+swapCluster-1)/swapCluster), cur: 0, next: 1,
		reading: map[uint32]chan struct{}{}, used: &m.swapUsed}
	for range swapWritesInFlight {
		si.writes <- m.newSwapWrite(si)
	}
	si.smap[0] = swapBad
	si.clusters[0] = 1
	for c := len(si.clusters) - 1; c >= 1; c-- {
		if uint32(c+1)*swapCluster <= n { // a short last cluster is scanned, never listed free
			si.free = append(si.free, uint32(c))
		}
	}
	if len(si.clusters) > 1 && n%swapCluster != 0 {
		// The short last cluster: its missing slots count as used.
		last := len(si.clusters) - 1
		si.clusters[last] = uint16(swapCluster - n%swapCluster)
	}
	m.swapDevs[typ] = si
	m.reorderDevices()
	m.swapTotal.Add(int64(n - 1))
	m.logf("Adding %dk swap on %s.  Priority:%d extents:1 across:%dk", (n-1)*4, opt.Name, opt.Priority, (n-1)*4)
	return nil
}

func devName(dev blk.Device) string {
	if s, ok := dev.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T", dev)
}

// swapDev returns the device of an entry.
func (m *Manager) swapDev(e pgtable.SwapEntry) *swapInfo {
	return m.swapDevs[e.Type]
}

// devices returns the swap devices by descending priority: a snapshot
// swapon and swapoff replace, so that allocating a slot allocates
// nothing.
func (m *Manager) devices() []*swapInfo {
	if d := m.swapOrder.Load(); d != nil {
		return *d
	}
	return nil
}

// reorderDevices rebuilds the snapshot; m.swapMu is held.
func (m *Manager) reorderDevices() {
	var out []*swapInfo
	for _, si := range m.swapDevs {
		if si != nil {
			out = append(out, si)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].prio > out[j].prio })
	m.swapOrder.Store(&out)
}

// getSwapPage allocates a slot with the swap cache's mark and no PTE
// count (folio_alloc_swap): from the highest-priority device with room.
func (m *Manager) getSwapPage() (pgtable.SwapEntry, error) {
	for _, si := range m.devices() {
		si.mu.Lock()
		off, ok := si.allocSlot()
		if ok {
			si.smap[off] = swapHasCache
			si.inuse++
			si.used.Add(1)
		}
		si.mu.Unlock()
		if ok {
			return pgtable.SwapEntry{Type: si.typ, Offset: off}, nil
		}
	}
	return pgtable.SwapEntry{}, ErrSwapFull
}

// allocSlot finds a free slot: the next in the current cluster, else the
// first of a free cluster, else any free one (scan_swap_map_slots).
// si.mu is held.
func (si *swapInfo) allocSlot() (uint32, bool) {
	if si.off {
		return 0, false
	}
	for {
		if si.cur >= 0 {
			end := min(uint32(si.cur+1)*swapCluster, si.slots)
			for off := si.next; off < end; off++ {
				if si.smap[off] == 0 {
					si.next = off + 1
					si.clusters[si.cur]++
					return off, true
				}
			}
			si.cur = -1
		}
		if len(si.free) == 0 {
			break
		}
		c := si.free[len(si.free)-1]
		si.free = si.free[:len(si.free)-1]
		si.cur, si.next = int(c), c*swapCluster
	}
	// No free cluster: take any free slot of a cluster with room, and
	// fill that cluster next.
	for c, used := range si.clusters {
		if used >= swapCluster {
			continue
		}
		for off := uint32(c) * swapCluster; off < min(uint32(c+1)*swapCluster, si.slots); off++ {
			if si.smap[off] == 0 {
				si.clusters[c]++
				si.cur, si.next = c, off+1
				return off, true
			}
		}
	}
	return 0, false
}

// releaseSlot gives back a slot whose word has dropped to zero; si.mu is
// held.
func (si *swapInfo) releaseSlot(off uint32) {
	si.inuse--
	si.used.Add(-1)
	c := off / swapCluster
	if si.clusters[c]--; si.clusters[c] == 0 && int(c) != si.cur {
		si.free = append(si.free, c)
	}
}

// swapDup takes a PTE's reference on a slot (swap_duplicate).
func (m *Manager) swapDup(e pgtable.SwapEntry) error {
	si := m.swapDev(e)
	if si == nil {
		return errorf("swap_duplicate: %v: no such device", e)
	}
	si.mu.Lock()
	defer si.mu.Unlock()
	if e.Offset >= si.slots || si.smap[e.Offset] == 0 || si.smap[e.Offset]&swapBad != 0 {
		return errorf("swap_duplicate: %v is not in use", e)
	}
	if si.smap[e.Offset]&swapCountMax == swapCountMax {
		return errorf("swap_duplicate: %v: count overflow", e)
	}
	si.smap[e.Offset]++
	return nil
}

// swapFree drops a PTE's reference on a slot (free_swap_and_cache). When
// it was the last and the slot's page sits unmapped and idle in the swap
// cache, that page is dropped too: nothing can find it any more but
// reclaim. Called with a page-table lock held; it waits for nothing.
func (m *Manager) swapFree(e pgtable.SwapEntry) {
	si := m.swapDev(e)
	if si == nil {
		return
	}
	si.mu.Lock()
	if e.Offset >= si.slots || si.smap[e.Offset]&swapCountMax == 0 || si.smap[e.Offset]&swapBad != 0 {
		si.mu.Unlock()
		m.logf("swap_free: bad swap entry %v", e)
		return
	}
	si.smap[e.Offset]--
	var drop phys.PFN
	if si.smap[e.Offset] == swapHasCache {
		if pfn := si.cache[e.Offset]; pfn != 0 {
			drop = phys.PFN(pfn - 1)
		}
	}
	if si.smap[e.Offset] == 0 {
		si.releaseSlot(e.Offset)
	}
	si.mu.Unlock()
	if drop != 0 {
		m.tryReclaimSwap(drop, e)
	}
}

// swapCount is the number of swap PTEs naming a slot (swap_swapcount).
func (m *Manager) swapCount(e pgtable.SwapEntry) int {
	si := m.swapDev(e)
	if si == nil {
		return 0
	}
	si.mu.Lock()
	defer si.mu.Unlock()
	if e.Offset >= si.slots {
		return 0
	}
	return int(si.smap[e.Offset] & swapCountMax)
}

// swapFull reports whether more than half the swap space is in use
// (vm_swap_full): swap-in then frees slots it can, as Linux does.
func (m *Manager) swapFull() bool {
	return m.swapUsed.Load()*2 > m.swapTotal.Load()
}

// SwapInfo describes one swap device, as a line of /proc/swaps.
type SwapInfo struct {
	Name     string
	Type     uint8
	SizeKB   uint64 // usable slots, the header's excluded
	UsedKB   uint64
	Priority int
}

// Swaps lists the swap devices in the order /proc/swaps does.
func (m *Manager) Swaps() []SwapInfo {
	var out []SwapInfo
	m.swapMu.Lock()
	for _, si := range m.swapDevs {
		if si == nil {
			continue
		}
		si.mu.Lock()
		out = append(out, SwapInfo{Name: si.name, Type: si.typ, SizeKB: uint64(si.slots-1) * 4,
			UsedKB: uint64(si.inuse) * 4, Priority: si.prio})
		si.mu.Unlock()
	}
	m.swapMu.Unlock()
	return out
}

// ProcSwaps renders /proc/swaps as Linux's swap_show does.
func (m *Manager) ProcSwaps() string {
	var b strings.Builder
	b.WriteString("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
	for _, s := range m.Swaps() {
		pad := 1
		if len(s.Name) < 40 {
			pad = 40 - len(s.Name)
		}
		tab := func(v uint64) string {
			if v < 10000000 {
				return "\t"
			}
			return ""
		}
		fmt.Fprintf(&b, "%s%*s%s\t%d\t%s%d\t%s%d\n", s.Name, pad, " ", "partition",
			s.SizeKB, tab(s.SizeKB), s.UsedKB, tab(s.UsedKB), s.Priority)
	}
	return b.String()
}

// Swapoff stops using the swap device dev (swapoff(2)): no slot is handed
// out from it any more, every page swapped out to it is read back into
// memory and mapped where its swap PTEs were (try_to_unuse), and its
// writeback queue is destroyed. It fails, with the device left on, when
// a page cannot be read back or memory runs out.
func (m *Manager) Swapoff(dev blk.Device) error {
	var si *swapInfo
	m.swapMu.Lock()
	for _, s := range m.swapDevs {
		if s != nil && s.dev == dev {
			si = s
		}
	}
	m.swapMu.Unlock()
	if si == nil {
		return errorf("swapoff: %s is not swap space", devName(dev))
	}
	si.mu.Lock()
	si.off = true
	si.mu.Unlock()
	if err := m.tryToUnuse(si); err != nil {
		si.mu.Lock()
		si.off = false
		si.mu.Unlock()
		return fmt.Errorf("mm: swapoff %s: %w", si.name, err)
	}
	si.wq.Destroy()
	m.swapMu.Lock()
	m.swapDevs[si.typ] = nil
	m.reorderDevices()
	m.swapMu.Unlock()
	m.swapTotal.Add(-int64(si.slots - 1))
	return nil
}

// tryToUnuse brings every page of si back: the swap PTEs of every space
// are faulted in, then the swap cache is emptied of si's pages.
func (m *Manager) tryToUnuse(si *swapInfo) error {
	for {
		si.mu.Lock()
		inuse := si.inuse
		si.mu.Unlock()
		if inuse == 0 {
			return nil
		}
		for _, as := range m.AddressSpaces() {
			if err := as.unuse(si.typ); err != nil && !errors.Is(err, ErrExited) {
				return err
			}
		}
		// What is left is the swap cache: pages whose PTEs are all
		// mapped again, or under writeback.
		for off := uint32(1); off < si.slots; off++ {
			e := pgtable.SwapEntry{Type: si.typ, Offset: off}
			if pfn, ok := m.lookupSwapCache(si, e); ok {
				m.lockPage(pfn)
				m.folioFreeSwap(pfn)
				m.pool.Page(pfn).Clear(phys.PGLocked)
				m.pool.Put(pfn)
			}
		}
		si.wq.Flush()
		si.mu.Lock()
		left := si.inuse
		si.mu.Unlock()
		if left == inuse {
			return errorf("%d slots still in use", left)
		}
	}
}

// unuse faults in every swap PTE of device typ in the space.
func (as *AddressSpace) unuse(typ uint8) error {
	as.mmapLock.RLock()
	defer as.mmapLock.RUnlock()
	if as.exited {
		return ErrExited
	}
	var addrs []uint32
	as.ptl.Lock()
	as.pt.Range(pgtable.WindowStart, pgtable.WindowEnd, func(va uint32, pte pgtable.PTE) bool {
		if pte.IsSwap() && pte.Swap().Type == typ {
			addrs = append(addrs, va)
		}
		return true
	})
	as.ptl.Unlock()
	for _, va := range addrs {
		if err := as.handleFault(va, pgtable.AccessRead); err != nil {
			return err
		}
	}
	return nil
}

// SwapSlots counts the slots in use on every device: those named by swap
// PTEs, and those held only by the swap cache (a page swapped in whose
// PTEs are all gone, or read ahead and never mapped).
func (m *Manager) SwapSlots() (referenced, cacheOnly int) {
	for _, si := range m.devices() {
		si.mu.Lock()
		for _, w := range si.smap[1:] {
			switch {
			case w&swapCountMax != 0:
				referenced++
			case w == swapHasCache:
				cacheOnly++
			}
		}
		si.mu.Unlock()
	}
	return referenced, cacheOnly
}
