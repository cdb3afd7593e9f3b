package phys

import "sync/atomic"

// The buddy lists. Everything here runs with p.mu held.

// addFree puts the free block at frame index i on its list.
func (p *Pool) addFree(i uint32, order int, mt MigrateType) {
	pg := &p.pages[i]
	atomic.StoreUint32(&pg.flags, uint32(PGBuddy))
	pg.order = uint8(order)
	pg.mt = uint8(mt)
	p.pushFront(&p.free[order].lists[mt], i)
	p.free[order].nr++
}

// delFree takes the free block at i off its list. Its descriptor is left
// clean: no flags, not on a list.
func (p *Pool) delFree(i uint32) {
	pg := &p.pages[i]
	p.unlink(&p.free[pg.order].lists[pg.mt], i)
	p.free[pg.order].nr--
	atomic.StoreUint32(&pg.flags, 0)
}

// buddyOf returns the index of the buddy of the order-sized block at i,
// if that buddy is a free block of the same order.
func (p *Pool) buddyOf(i uint32, order int) (uint32, bool) {
	buddy := uint32(p.pfn(i)) ^ 1<<order
	if buddy < uint32(p.base) || buddy-uint32(p.base) >= p.n {
		return 0, false
	}
	j := buddy - uint32(p.base)
	pg := &p.pages[j]
	// The buddy may be allocated, its flags changed atomically by its
	// owner: read them the same way.
	if pg.Flags()&PGBuddy == 0 || int(pg.order) != order {
		return 0, false
	}
	return j, true
}

// freeOne returns a block to the buddy lists, merging it with its buddy
// for as long as the buddy is free and whole (Linux's __free_one_page).
// The caller accounts nrFree.
func (p *Pool) freeOne(i uint32, order int) {
	mt := p.blockType(i)
	for order < MaxOrder {
		j, ok := p.buddyOf(i, order)
		if !ok {
			break
		}
		p.delFree(j)
		i = min(i, j)
		order++
	}
	if order >= PageblockOrder {
		// A free block of whole pageblocks has one type: it can become
		// anything, so it takes the type of the block just freed.
		p.setBlockTypes(i, order, mt)
	}
	p.addFree(i, order, mt)
}

// setBlockTypes labels every pageblock of the block at i (of at least
// pageblock order) with mt.
func (p *Pool) setBlockTypes(i uint32, order int, mt MigrateType) {
	for b := i / PageblockFrames; b < (i+1<<order)/PageblockFrames && b < uint32(len(p.blockMT)); b++ {
		p.blockMT[b] = mt
	}
}

// expand splits the block at i of order high down to order low, putting
// the unused upper halves on the lists of type mt.
func (p *Pool) expand(i uint32, low, high int, mt MigrateType) {
	for high > low {
		high--
		p.addFree(i+1<<high, high, mt)
	}
}

// rmqueueSmallest takes a block of the given order from the smallest
// non-empty list of type mt that can supply it.
func (p *Pool) rmqueueSmallest(order int, mt MigrateType) (uint32, bool) {
	for o := order; o <= MaxOrder; o++ {
		l := &p.free[o].lists[mt]
		if l.Empty() {
			continue
		}
		i := l.first - 1
		p.delFree(i)
		p.expand(i, order, o, mt)
		return i, true
	}
	return 0, false
}

// rmqueue takes a block of the given order for an allocation of type mt,
// falling back to other types' lists when mt's are empty.
func (p *Pool) rmqueue(order int, mt MigrateType) (uint32, bool) {
	for {
		if i, ok := p.rmqueueSmallest(order, mt); ok {
			return i, true
		}
		if !p.grouping || !p.rmqueueFallback(order, mt) {
			return 0, false
		}
	}
}

// fallbacks is the order in which other types' lists are raided
// (Linux's fallbacks[]).
var fallbacks = [NrMigrateTypes][NrMigrateTypes - 1]MigrateType{
	Unmovable:   {Reclaimable, Movable},
	Movable:     {Reclaimable, Unmovable},
	Reclaimable: {Unmovable, Movable},
}

// canSteal reports whether an allocation of type start that falls back to
// a block of the given order should take over the block's whole pageblock
// (Linux's can_steal_fallback). Unmovable and reclaimable allocations
// always try to, so that they cluster; movable ones only for big blocks,
// since they can be moved away again.
func canSteal(order int, start MigrateType) bool {
	return order >= PageblockOrder/2 || start == Unmovable || start == Reclaimable
}

// findFallback returns the first fallback type with a free block of the
// given order.
func (p *Pool) findFallback(order int, start MigrateType) (MigrateType, bool) {
	for _, mt := range fallbacks[start] {
		if !p.free[order].lists[mt].Empty() {
			return mt, true
		}
	}
	return 0, false
}

// rmqueueFallback moves a free block from another type's lists to start's
// (Linux's __rmqueue_fallback). It looks for the largest block first, so
// that one steal serves many later allocations and mixes as few
// pageblocks as possible; a movable allocation that may not claim the
// pageblock takes the smallest block instead, to leave big ones alone.
// It reports whether it moved anything.
func (p *Pool) rmqueueFallback(order int, start MigrateType) bool {
	for o := MaxOrder; o >= order; o-- {
		mt, ok := p.findFallback(o, start)
		if !ok {
			continue
		}
		whole := canSteal(o, start)
		if !whole && start == Movable && o > order {
			// The search down from the top stops at o at the latest.
			for o = order; ; o++ {
				if mt, ok = p.findFallback(o, start); ok {
					break
				}
			}
			whole = canSteal(o, start)
		}
		p.stat.Fallbacks++
		p.stealFallback(p.free[o].lists[mt].first-1, start, whole)
		return true
	}
	return false
}

// stealFallback moves the free block at i to start's lists and, when
// whole allows and enough of its pageblock is free or already holds
// allocations of a compatible kind, relabels the pageblock and moves all
// of its free blocks too (Linux's steal_suitable_fallback).
func (p *Pool) stealFallback(i uint32, start MigrateType, whole bool) {
	order := int(p.pages[i].order)
	if order >= PageblockOrder {
		p.delFree(i)
		p.setBlockTypes(i, order, start)
		p.stat.PageblockSteals += uint64(1) << (order - PageblockOrder)
		p.addFree(i, order, start)
		return
	}
	if whole {
		old := p.blockType(i)
		free, movable := p.moveFreeBlocks(i/PageblockFrames, start)
		var alike uint32
		switch {
		case start == Movable:
			alike = movable
		case old == Movable:
			alike = PageblockFrames - free - movable
		}
		if free+alike >= PageblockFrames/2 {
			p.blockMT[i/PageblockFrames] = start
			p.stat.PageblockSteals++
		}
		return
	}
	p.delFree(i)
	p.addFree(i, order, start)
}

// moveFreeBlocks moves every free block in pageblock b to mt's lists and
// returns how many frames are free in it and how many are allocated as
// Movable (Linux's move_freepages_block).
func (p *Pool) moveFreeBlocks(b uint32, mt MigrateType) (free, movable uint32) {
	start := b * PageblockFrames
	end := min(start+PageblockFrames, p.n)
	for i := start; i < end; {
		pg := &p.pages[i]
		switch f := pg.Flags(); { // allocated frames' flags change under their owners
		case f&PGBuddy != 0:
			order := int(pg.order)
			p.delFree(i)
			p.addFree(i, order, mt)
			free += 1 << order
			i += 1 << order
		case f&PGPCP != 0:
			// Stays on the pageset; it returns to the lists of its
			// pageblock's type when drained.
			free++
			i++
		case f&PGTail == 0 && atomic.LoadInt32(&pg.refcount) > 0:
			if MigrateType(pg.mt) == Movable {
				movable += 1 << pg.order
			}
			i += 1 << pg.order
		default:
			i++
		}
	}
	return free, movable
}
