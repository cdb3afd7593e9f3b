package rx

import "yolk/mm/phys"

// Receive memory is charged to the pool in slots of SlotSize bytes, two to
// a frame of the pool. One received frame is one slot: gVisor copies a
// frame's payload (at most 1504 bytes after the Ethernet header) into a
// 2 KiB chunk of its buffer pools, and keeps that chunk for as long as any
// layer holds the packet or a clone of it. Smaller frames land in smaller
// chunks and are overcharged, never under.
const (
	SlotSize     = 2048
	slotsPerPage = phys.PageSize / SlotSize
)

// chargeClass says which pages a slot may come from. Ordinary slots are
// charged as Atomic, which stops at its watermark (3/8 of min); memalloc
// slots may also take frames below min, the reserve, up to the bound.
type chargeClass uint8

const (
	classOrdinary chargeClass = iota
	classMemalloc
	nrClasses
)

func (c chargeClass) ctx() phys.Context {
	if c == classMemalloc {
		return phys.Atomic | phys.Memalloc
	}
	return phys.Atomic
}

// netPage is a frame of the pool held for receive memory.
type netPage struct {
	pool  *phys.Pool // the pool it came from (the receiver's may change)
	pfn   phys.PFN
	class chargeClass
	used  int  // slots charged on it
	pfmem bool // taken from the reserve (phys marked it PGPfmemalloc)
}

// account is what one socket (a TCP or UDP flow, or "other" for ARP,
// ICMP, fragments and the rest) has charged now.
type account struct {
	tuple    Tuple
	other    bool
	slots    int
	reserve  int // of slots, those on reserve pages
	memalloc bool
}

// charge is one frame's slot, from when it is charged until the stack no
// longer holds its memory.
type charge struct {
	page     *netPage
	acct     *account
	memalloc bool // for a memalloc socket (or critical ARP)
}

// chargeError says why a frame could not be charged.
type chargeError uint8

const (
	chargeOK chargeError = iota
	chargeWatermark
	chargeReserveBound
	chargeReserveEmpty
	chargeNoPool
)

// charger holds the pages. Called with Receiver.mu held.
type charger struct {
	pool    *phys.Pool
	bound   int // reserve frames the network may hold
	partial [nrClasses][]*netPage
	pages   int // frames held
	byPool  map[*phys.Pool]int
	slots   int
	reserve int // reserve (pfmemalloc) frames held
	peak    int // most reserve frames ever held
	// otherRes counts the slots on reserve frames charged to frames for
	// no memalloc socket (AllocThenDrop's), otherResPk the most at once.
	otherRes, otherResPk int
	pagePk               int // most frames ever held
	accts                map[Tuple]*account
	other                account

	freeErrors uint64 // pages the pool refused back (a bug)
}

func (c *charger) account(f *Frame, memalloc bool) *account {
	if f.Kind != KindTCP && f.Kind != KindUDP {
		return &c.other
	}
	a := c.accts[f.Tuple]
	if a == nil {
		a = &account{tuple: f.Tuple}
		c.accts[f.Tuple] = a
	}
	a.memalloc = a.memalloc || memalloc
	return a
}

// take charges one slot of class cl to f's socket. It allocates nothing
// (not even the socket's account) unless the charge succeeds: a dropped
// frame costs no memory at all.
func (c *charger) take(cl chargeClass, f *Frame, memalloc bool) (*charge, chargeError) {
	if c.pool == nil {
		return nil, chargeNoPool
	}
	pg := c.popPartial(cl)
	if pg == nil {
		var err chargeError
		if pg, err = c.newPage(cl); err != chargeOK {
			return nil, err
		}
	}
	pg.used++
	if pg.used < slotsPerPage {
		c.partial[cl] = append(c.partial[cl], pg)
	}
	c.slots++
	a := c.account(f, memalloc)
	a.slots++
	if pg.pfmem {
		a.reserve++
		if !memalloc {
			c.otherRes++
			c.otherResPk = max(c.otherResPk, c.otherRes)
		}
	}
	return &charge{page: pg, acct: a, memalloc: memalloc}, chargeOK
}

func (c *charger) popPartial(cl chargeClass) *netPage {
	l := c.partial[cl]
	if len(l) == 0 {
		return nil
	}
	pg := l[len(l)-1]
	c.partial[cl] = l[:len(l)-1]
	return pg
}

// newPage takes a frame from the pool for class cl. A memalloc slot asks
// for the reserve only while the network holds less of it than its
// bound; past the bound it gets what an ordinary slot would.
func (c *charger) newPage(cl chargeClass) (*netPage, chargeError) {
	ctx := cl.ctx()
	atBound := cl == classMemalloc && c.reserve >= c.bound
	if atBound {
		ctx = phys.Atomic
	}
	f, ok := c.pool.TryAllocPage(ctx)
	switch {
	case ok:
	case atBound:
		return nil, chargeReserveBound
	case cl == classMemalloc:
		return nil, chargeReserveEmpty
	default:
		return nil, chargeWatermark
	}
	pg := &netPage{pool: c.pool, pfn: f, class: cl, pfmem: c.pool.Page(f).Flags()&phys.PGPfmemalloc != 0}
	c.pages++
	c.byPool[c.pool]++
	c.pagePk = max(c.pagePk, c.pages)
	if pg.pfmem {
		c.reserve++
		c.peak = max(c.peak, c.reserve)
	}
	return pg, chargeOK
}

// release returns ch's slot, and its page to the pool when it was the
// page's last.
func (c *charger) release(ch *charge) {
	pg, a := ch.page, ch.acct
	c.slots--
	a.slots--
	if pg.pfmem {
		a.reserve--
		if !ch.memalloc {
			c.otherRes--
		}
	}
	if a.slots == 0 && !a.other {
		delete(c.accts, a.tuple)
	}
	if pg.used--; pg.used > 0 {
		if pg.used == slotsPerPage-1 {
			c.partial[pg.class] = append(c.partial[pg.class], pg)
		}
		return
	}
	c.removePartial(pg)
	c.pages--
	if c.byPool[pg.pool]--; c.byPool[pg.pool] == 0 {
		delete(c.byPool, pg.pool)
	}
	if pg.pfmem {
		c.reserve--
	}
	// The frame was allocated by take with a count of one; nothing else
	// holds it, so a refusal is a bug to count, not to crash the image on.
	if err := pg.pool.Put(pg.pfn); err != nil {
		c.freeErrors++
	}
}

func (c *charger) removePartial(pg *netPage) {
	l := c.partial[pg.class]
	for i, p := range l {
		if p == pg {
			l[i] = l[len(l)-1]
			c.partial[pg.class] = l[:len(l)-1]
			return
		}
	}
}
