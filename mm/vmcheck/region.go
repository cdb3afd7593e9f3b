package vmcheck

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"yolk/blk"
	"yolk/blk/journal"
	"yolk/mm"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// The model's journaled region: one mm.Region that the streams map
// shared and private, in any space, beside their anonymous memory.
//
// The model keeps the region's contents (what every shared mapping and
// every private mapping not yet written sees), which change only through
// stores to shared mappings. What is durable is judged through the
// journal (journal.ReadBlock, which reads committed blocks from the log
// until they are checkpointed home): after msync(MS_SYNC) returns, the
// pages of its range; after Region.Sync, or once background writeback has
// left no page dirty or under writeback, every page.

// Region is a journaled region for the model (Config.Region): an
// mm.Region of a RAM device behind a blk/journal whose buffers come from
// a pool of their own, so that the Manager's pool stays its alone
// (CheckFrames). NewRegion makes one; Close closes it after the run.
type Region struct {
	R     *mm.Region
	J     *journal.Journal
	Start uint64 // the region's first block on the device
	dev   *blk.RAM
}

// Region geometry: a log of regionLogBlocks at block 0, the region after
// it. Transactions are small (regionMaxTx pages) so that an msync of a
// model-sized range (up to 16 pages) may be refused with ErrMsyncTooBig.
const (
	regionLogBlocks = 128
	regionMaxTx     = 8
)

// NewRegion opens a region of pages pages on mgr, its blocks filled with
// a known pattern (regionPattern). Pages dirty for more than a nanosecond
// are due for background writeback, which no flusher does: the model's
// "writeback" operation calls WritebackExpired.
func NewRegion(mgr *mm.Manager, pages int) (*Region, error) {
	dev, err := blk.NewRAM(blk.RAMConfig{Name: "ram-region", Size: int64(regionLogBlocks+pages) * phys.PageSize})
	if err != nil {
		return nil, err
	}
	reg := &Region{Start: regionLogBlocks, dev: dev}
	fail := func(err error) (*Region, error) {
		if reg.J != nil {
			reg.J.Close()
		}
		dev.Close()
		return nil, err
	}
	l := journal.Layout{BlockSize: phys.PageSize, LogStart: 0, LogBlocks: regionLogBlocks, MaxTransaction: regionMaxTx}
	if err := journal.Format(dev, l); err != nil {
		return fail(err)
	}
	b := make([]byte, phys.PageSize)
	for idx := range pages {
		regionPattern(uint64(idx), b)
		if err := dev.WriteAt(b, int64(reg.Start+uint64(idx))*phys.PageSize, 0); err != nil {
			return fail(err)
		}
	}
	jpool, err := phys.New(phys.Config{Mem: make([]byte, 1<<20), Base: 0x40000000})
	if err != nil {
		return fail(err)
	}
	if reg.J, err = journal.Open(dev, 0, phys.PageSize, journal.Config{Name: "vmcheck", Pool: jpool}); err != nil {
		return fail(err)
	}
	reg.R, err = mgr.OpenRegion(mm.RegionConfig{Name: "/dev/vmcheck", Journal: reg.J, Start: reg.Start, Pages: uint64(pages),
		DirtyExpire: time.Nanosecond, WritebackInterval: -1})
	if err != nil {
		return fail(err)
	}
	return reg, nil
}

// regionPattern is page idx's initial content: bytes that differ from
// page to page, and every eighth page zero (a region page of zeroes must
// still never be the zero page).
func regionPattern(idx uint64, b []byte) {
	for i := range b {
		b[i] = 0
		if idx%8 != 7 {
			b[i] = byte(idx*29 + uint64(i)*13 + 7)
		}
	}
}

// Close closes the region (every mapping of it must be gone), its
// journal and its device.
func (reg *Region) Close() error {
	err := reg.R.Close()
	if jerr := reg.J.Close(); err == nil {
		err = jerr
	}
	if derr := reg.dev.Close(); err == nil {
		err = derr
	}
	return err
}

// regionModel is the model of the region: its pages' contents, and which
// pages may be dirty in the page cache.
type regionModel struct {
	*Region
	data []*[pageSize]byte // never nil, never written in place
	// dirty: stored to through a shared mapping since the model last
	// saw no page dirty or under writeback (settle). A superset of the
	// pages mm has dirty or under writeback (reclaim writes pages back
	// unseen, and a page it handed to writeback stays so until its own
	// commit, after any msync that committed it too), so an msync range
	// with no more of them than a transaction holds must not be refused.
	dirty []bool
	buf   []byte
}

// newRegionModel reads the region's initial contents through its journal.
// The region must have no mapping and no dirty page.
func newRegionModel(reg *Region) (*regionModel, error) {
	n := reg.R.Pages()
	rm := &regionModel{Region: reg, data: make([]*[pageSize]byte, n), dirty: make([]bool, n), buf: make([]byte, pageSize)}
	for idx := range n {
		var d [pageSize]byte
		if err := reg.J.ReadBlock(reg.Start+idx, d[:]); err != nil {
			return nil, fmt.Errorf("region page %d: %w", idx, err)
		}
		rm.data[idx] = &d
	}
	return rm, nil
}

// durable checks that the committed contents of pages [lo, hi) are the
// model's.
func (rm *regionModel) durable(lo, hi uint32) error {
	for idx := lo; idx < hi; idx++ {
		if err := rm.J.ReadBlock(rm.Start+uint64(idx), rm.buf); err != nil {
			return fmt.Errorf("reading region page %d from the journal: %w", idx, err)
		}
		if want := rm.data[idx][:]; !bytes.Equal(rm.buf, want) {
			i := 0
			for rm.buf[i] == want[i] {
				i++
			}
			return fmt.Errorf("region page %d is durable with byte %d = %#02x, model says %#02x", idx, i, rm.buf[i], want[i])
		}
	}
	return nil
}

// settle is called with reclaim quiesced: if no page is dirty or under
// writeback, every page must be durable, and none is dirty any more.
func (r *runner) settle(after string) error {
	if st := r.reg.R.Stats(); st.Dirty != 0 || st.Writeback != 0 {
		return nil
	}
	r.stats.DurableChecks++
	if err := r.reg.durable(0, uint32(len(r.reg.data))); err != nil {
		return fmt.Errorf("after %s: %w", after, err)
	}
	clear(r.reg.dirty)
	return nil
}

// content is what a read of p sees: its own data (anonymous memory, or a
// private mapping's copy), else the region's page for a mapping of the
// region, else zeroes (nil).
func (r *runner) content(p *page) *[pageSize]byte {
	if p.data != nil || !p.file {
		return p.data
	}
	return r.reg.data[p.idx]
}

// store writes b at off in page p as a store through its mapping does:
// into the region for a shared mapping (every mapping of the page sees
// it), else into the page's own data, copied from what it read before
// (copy-on-write of a region page for a private mapping). It returns the
// bytes stored, at most to the end of the page.
func (r *runner) store(p *page, off uint32, b []byte) int {
	var nd [pageSize]byte
	if c := r.content(p); c != nil {
		nd = *c
	}
	n := copy(nd[off:], b)
	if p.file && p.shared {
		r.reg.data[p.idx] = &nd
		r.reg.dirty[p.idx] = true
		return n
	}
	p.data, p.lazy, p.maybeZero = &nd, false, false
	return n
}

// msync is msync(2) of a range: with MS_SYNC, the dirty pages of each
// shared region mapping in it, up to the first hole, are committed, one
// transaction per run of region pages (adjacent areas of consecutive
// pages are one run), and durable when it returns; a run with more dirty
// pages than a transaction holds is refused with ErrMsyncTooBig, and the
// runs after it are not synced. A hole makes it ErrNotMapped after the
// runs before it; MS_ASYNC does nothing but report holes.
func (r *runner) msync(s *space) error {
	addr, npages := r.addr(), r.pages()
	if r.src.Intn(4) != 0 {
		// Mostly from a page of a shared mapping of the region, or a
		// few pages before one: walk up from the random address.
		back := uint32(r.src.Intn(3))
		for a := addr; a < pgtable.WindowEnd; a += pageSize {
			if p := s.pages[a]; p != nil && p.file && p.shared {
				addr = max(a-back*pageSize, arenaStart)
				break
			}
		}
	}
	size := npages * pageSize
	flags := mm.MsSync
	switch r.src.Intn(16) {
	case 0:
		flags = mm.MsAsync
	case 1:
		flags |= mm.MsInvalidate
	case 2:
		flags |= mm.MsAsync
	}
	err := s.as.Msync(addr, size, flags)
	if flags&mm.MsAsync != 0 && flags&mm.MsSync != 0 {
		r.refused(err)
		return expectErr(err, mm.ErrInvalid)
	}
	if uint64(addr)+uint64(size) > uint64(pgtable.WindowEnd) {
		r.refused(err)
		return expectErr(err, mm.ErrNotMapped)
	}
	type run struct{ lo, hi uint32 }
	var runs []run
	var hole error
	for i := uint32(0); i < npages; i++ {
		p := s.pages[addr+i*pageSize]
		if p == nil {
			hole = mm.ErrNotMapped
			break
		}
		if !p.file || !p.shared {
			continue
		}
		// mm merges the spans of consecutive shared areas whose pages
		// follow on, whatever lies between them.
		if n := len(runs); n > 0 && runs[n-1].hi == p.idx {
			runs[n-1].hi++
		} else {
			runs = append(runs, run{p.idx, p.idx + 1})
		}
	}
	if flags&mm.MsSync == 0 {
		r.refused(hole)
		return expectErr(err, hole)
	}
	for _, rn := range runs {
		dirty := 0
		for idx := rn.lo; idx < rn.hi; idx++ {
			if r.reg.dirty[idx] {
				dirty++
			}
		}
		if dirty > regionMaxTx && errors.Is(err, mm.ErrMsyncTooBig) {
			// Refused here, or at a later run: this one may or may not
			// have been committed, and nothing after it was.
			r.stats.MsyncRefused++
			r.refused(err)
			return nil
		}
		if err := r.reg.durable(rn.lo, rn.hi); err != nil {
			return fmt.Errorf("after msync(%#08x, %d pages): %w", addr, npages, err)
		}
		r.stats.DurableChecks++
	}
	r.refused(hole)
	return expectErr(err, hole)
}

// writeback is the flusher's pass (WritebackExpired, with every dirty
// page expired). It changes no byte any mapping sees; if it has left no
// page dirty and reclaim none under writeback, every page is durable.
func (r *runner) writeback() error {
	if _, err := r.reg.R.WritebackExpired(); err != nil {
		return err
	}
	return r.mgr.Quiesce(func() error { return r.settle("writeback") })
}

// sync commits every dirty page (Region.Sync): every page is durable
// (pages reclaim handed to writeback are in its transactions too).
func (r *runner) sync() error {
	if err := r.reg.R.Sync(); err != nil {
		return err
	}
	r.stats.DurableChecks++
	if err := r.reg.durable(0, uint32(len(r.reg.data))); err != nil {
		return fmt.Errorf("after sync: %w", err)
	}
	return r.mgr.Quiesce(func() error { return r.settle("sync") })
}

// isCachePage reports whether the page at pfn is a page cache page.
func (r *runner) isCachePage(pfn phys.PFN) bool {
	_, ok := r.mgr.Pool().Page(pfn).Mapping.(*mm.Region)
	return ok
}
