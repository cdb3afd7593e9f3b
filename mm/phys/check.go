package phys

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Check verifies the allocator's invariants (see the package doc) and
// returns every violation it finds, joined. It takes the pool lock and
// walks every list and every descriptor: O(frames). Frames' owners may go
// on using them meanwhile; allocating and freeing wait for it.
func (p *Pool) Check() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := checker{p: p, where: make([]uint8, p.n)}
	c.freeLists()
	c.pageset()
	c.allocated()
	c.totals()
	return errors.Join(c.errs...)
}

func (p *Pool) mustCheck() {
	if err := p.Check(); err != nil {
		panic(err) // debug builds only, like VM_BUG_ON
	}
}

// Where a frame was found.
const (
	nowhere uint8 = iota
	onFreeList
	onPageset
	inAllocation
)

type checker struct {
	p     *Pool
	where []uint8
	errs  []error
	free  uint64 // frames found free
	pfmem uint64 // frames marked pfmemalloc
}

const maxErrs = 20

func (c *checker) fail(format string, args ...any) {
	if len(c.errs) < maxErrs {
		c.errs = append(c.errs, fmt.Errorf("phys: check: "+format, args...))
	}
}

// claim records that frames [i, i+n) were found at w.
func (c *checker) claim(i, n uint32, w uint8) {
	if i+n > c.p.n || i+n < i {
		c.fail("block at index %d of %d frames runs past the pool (%d frames)", i, n, c.p.n)
		return
	}
	for k := i; k < i+n; k++ {
		if c.where[k] != nowhere {
			c.fail("%v is in two places (%d and %d)", c.p.pfn(k), c.where[k], w)
			return
		}
		c.where[k] = w
	}
}

// walk visits the members of l, checking its links, and stops after more
// than the pool's frames (a cycle).
func (c *checker) walk(l *List, name string, visit func(i uint32)) {
	n, prev := 0, uint32(0)
	for link := l.first; link != 0; link = c.p.pages[link-1].next {
		if link > c.p.n {
			c.fail("%s: link %d outside the pool", name, link)
			return
		}
		if c.p.pages[link-1].prev != prev {
			c.fail("%s: %v has prev %d, want %d", name, c.p.pfn(link-1), c.p.pages[link-1].prev, prev)
		}
		if n++; n > int(c.p.n) {
			c.fail("%s: cycle", name)
			return
		}
		visit(link - 1)
		prev = link
	}
	if l.last != prev {
		c.fail("%s: last is %d, walk ended at %d", name, l.last, prev)
	}
	if n != l.n {
		c.fail("%s: holds %d frames, count says %d", name, n, l.n)
	}
}

func (c *checker) freeLists() {
	p := c.p
	for o := range NrOrders {
		var blocks uint64
		for mt := range NrMigrateTypes {
			name := fmt.Sprintf("free list order %d %v", o, mt)
			c.walk(&p.free[o].lists[mt], name, func(i uint32) {
				pg := &p.pages[i]
				if pg.Flags() != PGBuddy || int(pg.order) != o || MigrateType(pg.mt) != mt {
					c.fail("%s: %v has flags %v order %d type %v", name, p.pfn(i), pg.Flags(), pg.order, MigrateType(pg.mt))
				}
				if uint32(p.pfn(i))&(1<<o-1) != 0 {
					c.fail("%s: %v is not aligned to its order", name, p.pfn(i))
				}
				if o >= PageblockOrder {
					for k := uint32(0); k < 1<<o; k += PageblockFrames {
						if i+k < p.n && p.blockType(i+k) != mt {
							c.fail("%s: %v spans a %v pageblock", name, p.pfn(i), p.blockType(i+k))
						}
					}
				}
				c.claim(i, 1<<o, onFreeList)
				c.free += 1 << o
				blocks++
			})
		}
		if blocks != p.free[o].nr {
			c.fail("order %d: %d free blocks on the lists, nr_free says %d", o, blocks, p.free[o].nr)
		}
	}
}

func (c *checker) pageset() {
	p := c.p
	total := 0
	for mt := range NrMigrateTypes {
		name := fmt.Sprintf("pageset %v", mt)
		c.walk(&p.pcp.lists[mt], name, func(i uint32) {
			if f := p.pages[i].Flags(); f != PGPCP {
				c.fail("%s: %v has flags %v", name, p.pfn(i), f)
			}
			c.claim(i, 1, onPageset)
			total++
		})
	}
	if total != p.pcp.count {
		c.fail("pageset holds %d frames, count says %d", total, p.pcp.count)
	}
	c.free += uint64(total)
}

// allocated checks every frame not found free: it must belong to an
// allocated block, which starts with a head holding a reference.
func (c *checker) allocated() {
	p := c.p
	for i := uint32(0); i < p.n; {
		if c.where[i] != nowhere {
			i++
			continue
		}
		pg := &p.pages[i]
		f := pg.Flags()
		order := uint32(pg.order)
		switch {
		case f&(PGBuddy|PGPCP) != 0:
			c.fail("%v is marked free (%v) but on no list", p.pfn(i), f)
		case f&PGTail != 0:
			c.fail("%v is a tail with no head before it", p.pfn(i))
		case atomic.LoadInt32(&pg.refcount) <= 0:
			c.fail("%v is neither free nor referenced (refcount %d)", p.pfn(i), pg.RefCount())
		case uint32(p.pfn(i))&(1<<order-1) != 0:
			c.fail("%v is allocated as order %d but not aligned to it", p.pfn(i), order)
		}
		if f&PGPfmemalloc != 0 {
			c.pfmem++
		}
		if f&PGHead != 0 {
			c.compound(i, order)
		}
		c.claim(i, 1<<order, inAllocation)
		i += 1 << order
	}
}

func (c *checker) compound(i, order uint32) {
	p := c.p
	if order == 0 {
		c.fail("%v is a compound head of order 0", p.pfn(i))
		return
	}
	for k := uint32(1); k < 1<<order && i+k < p.n; k++ {
		t := &p.pages[i+k]
		// The first two tails' reference counts are the large map
		// counts (LargeCounts), mm's to keep.
		if f := t.Flags(); f != PGTail || t.head != i+1 || t.RefCount() != 0 && k > 2 || t.RefCount() < 0 {
			c.fail("%v: tail %d of the compound page at %v has flags %v head %d refcount %d",
				p.pfn(i+k), k, p.pfn(i), f, t.head, t.RefCount())
			return
		}
	}
}

func (c *checker) totals() {
	p := c.p
	if c.free != p.nrFree {
		c.fail("%d frames found free, MemFree says %d", c.free, p.nrFree)
	}
	if c.pfmem != p.stat.NrPfmemalloc {
		c.fail("%d allocated frames marked pfmemalloc, counter says %d", c.pfmem, p.stat.NrPfmemalloc)
	}
}
