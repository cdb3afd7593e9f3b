package mm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/blk/journal"
	"yolk/blk/logwrites"
	"yolk/mm/phys"
)

// Crash consistency through mappings: a workload of stores through shared
// and private mappings of a journaled region and Msync(MS_SYNC) calls over
// ranges of them, crashed (blk/logwrites) or cut off by killing the NBD
// server under it (filemap_crash_nbd_linux_test.go). After recovery the
// region must be exactly what some msync made durable: the last one that
// had returned, or the one in flight, never part of one, never a store no
// msync covered, never a store through a private mapping.
//
// The workloads keep every commit an msync's. Background writeback is off
// (WritebackInterval -1, DirtyExpire an hour) and the Manager's pool is a
// hundred times what the workload touches, with no kswapd, so reclaim never
// writes a dirty page back: either would commit pages nobody msync'd, by
// design (filemap.go, "Writeback"), and the region would legitimately be
// in a state no msync made. The tests check that no such commit happened.

// regionModel is what the workload must leave in a region.
type regionModel struct {
	mem     []byte            // the region as shared mappings see it: the page cache
	dirty   map[uint64]bool   // pages stored to through a shared mapping since an msync covered them
	priv    map[uint64][]byte // the pages the private mapping has copied, by region page
	states  [][]byte          // states[k]: the region on the device after msync k; states[0] before any
	commits int               // msyncs that had a dirty page to commit
}

func newRegionModel(initial []byte) *regionModel {
	return &regionModel{mem: bytes.Clone(initial), dirty: map[uint64]bool{}, priv: map[uint64][]byte{},
		states: [][]byte{bytes.Clone(initial)}}
}

// match returns the msync whose state got is, the latest of ack (the last
// msync that returned) and ack+1 (the one in flight, if any), or an error
// saying what got is instead.
func (mo *regionModel) match(got []byte, ack int) (int, error) {
	for k := min(ack+1, len(mo.states)-1); k >= ack; k-- {
		if bytes.Equal(got, mo.states[k]) {
			return k, nil
		}
	}
	var any []int
	for k, s := range mo.states {
		if bytes.Equal(got, s) {
			any = append(any, k)
		}
	}
	// Name each page that differs from the last msync's state and the
	// msyncs whose state it has.
	var pages []string
	want := mo.states[ack]
	for o := 0; o < len(got); o += pg {
		if bytes.Equal(got[o:o+pg], want[o:o+pg]) {
			continue
		}
		var from []int
		for k, s := range mo.states {
			if bytes.Equal(got[o:o+pg], s[o:o+pg]) {
				from = append(from, k)
			}
		}
		pages = append(pages, fmt.Sprintf("page %d as after msyncs %v", o/pg, from))
		if len(pages) == 8 {
			break
		}
	}
	return -1, fmt.Errorf("the region is not the state after msync %d (the last that returned) nor %d: it equals the states after msyncs %v; differing from msync %d: %s",
		ack, ack+1, any, ack, strings.Join(pages, ", "))
}

// regionMap is one mapping the workload goes through: pages pages of the
// region from page off, at addr of as.
type regionMap struct {
	as         *AddressSpace
	addr       uint32
	off, pages uint64
	shared     bool
}

// regionWorkload makes random stores, reads and msyncs through the
// mappings, keeping the model.
type regionWorkload struct {
	t     testing.TB
	rng   *rand.Rand
	maxTx uint64
	maps  []regionMap
	mo    *regionModel
}

// mapRegion maps the region's pages [off, off+pages) into as.
func (w *regionWorkload) mapRegion(as *AddressSpace, r *Region, off, pages uint64, shared bool) {
	flags := MapPrivate
	if shared {
		flags = MapShared
	}
	a, err := as.MmapRegion(0, uint32(pages)*pg, ProtRead|ProtWrite, flags, r, off*pg)
	require.NoError(w.t, err)
	w.maps = append(w.maps, regionMap{as: as, addr: a, off: off, pages: pages, shared: shared})
}

// view is the model of the bytes [at, at+n) of mapping mp.
func (w *regionWorkload) view(mp regionMap, at, n uint64) []byte {
	out := make([]byte, 0, n)
	for o := mp.off*pg + at; o < mp.off*pg+at+n; {
		idx := o / pg
		end := min((idx+1)*pg, mp.off*pg+at+n)
		src := w.mo.mem[idx*pg : (idx+1)*pg]
		if p := w.mo.priv[idx]; !mp.shared && p != nil {
			src = p
		}
		out = append(out, src[o-idx*pg:end-idx*pg]...)
		o = end
	}
	return out
}

// span picks a random byte range of a mapping: mostly a few bytes, now
// and then up to two pages.
func (w *regionWorkload) span(mp regionMap) (at, n uint64) {
	n = 1 + w.rng.Uint64N(64)
	if w.rng.IntN(4) == 0 {
		n = 1 + w.rng.Uint64N(2*pg)
	}
	n = min(n, mp.pages*pg)
	return w.rng.Uint64N(mp.pages*pg - n + 1), n
}

// store writes random bytes through a random mapping.
func (w *regionWorkload) store() {
	mp := w.maps[w.rng.IntN(len(w.maps))]
	at, n := w.span(mp)
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(w.rng.Uint32())
	}
	require.NoError(w.t, mp.as.Write(mp.addr+uint32(at), data))
	for i, o := uint64(0), mp.off*pg+at; i < n; i, o = i+1, o+1 {
		idx := o / pg
		if mp.shared {
			w.mo.mem[o] = data[i]
			w.mo.dirty[idx] = true
			continue
		}
		p := w.mo.priv[idx]
		if p == nil { // the store copied the page as it was
			p = bytes.Clone(w.mo.mem[idx*pg : (idx+1)*pg])
			w.mo.priv[idx] = p
		}
		p[o-idx*pg] = data[i]
	}
}

// check reads a random range through a random mapping.
func (w *regionWorkload) check() {
	mp := w.maps[w.rng.IntN(len(w.maps))]
	at, n := w.span(mp)
	got := make([]byte, n)
	require.NoError(w.t, mp.as.Read(mp.addr+uint32(at), got))
	require.True(w.t, bytes.Equal(w.view(mp, at, n), got), "read of %d bytes at %d of the mapping of pages %d+%d (shared %v)", n, at, mp.off, mp.pages, mp.shared)
}

// msync syncs a random range of at most a transaction's pages through a
// random mapping, now and then the private one (which has nothing to
// write). It returns the region the msync makes durable and Msync's
// error; the model moves on only if it succeeded.
func (w *regionWorkload) msync() ([]byte, error) {
	mp := w.maps[w.rng.IntN(len(w.maps))]
	lo := w.rng.Uint64N(mp.pages)
	n := 1 + w.rng.Uint64N(min(w.maxTx, mp.pages-lo))
	return w.msyncRange(mp, lo, n)
}

// msyncRange syncs pages [lo, lo+n) of mapping mp.
func (w *regionWorkload) msyncRange(mp regionMap, lo, n uint64) ([]byte, error) {
	next := bytes.Clone(w.mo.states[len(w.mo.states)-1])
	rlo, rhi := mp.off+lo, mp.off+lo+n
	dirty := false
	if mp.shared {
		copy(next[rlo*pg:rhi*pg], w.mo.mem[rlo*pg:rhi*pg])
		for idx := rlo; idx < rhi; idx++ {
			dirty = dirty || w.mo.dirty[idx]
		}
	}
	err := mp.as.Msync(mp.addr+uint32(lo)*pg, uint32(n)*pg, MsSync)
	if err == nil {
		w.mo.states = append(w.mo.states, next)
		if mp.shared {
			for idx := rlo; idx < rhi; idx++ {
				delete(w.mo.dirty, idx)
			}
		}
		if dirty {
			w.mo.commits++
		}
	}
	return next, err
}

// step does one random thing: a store (most often), a read or an msync.
// It returns the msync's result when it made one.
func (w *regionWorkload) step() (msynced bool, next []byte, err error) {
	switch x := w.rng.IntN(10); {
	case x < 7:
		w.store()
	case x < 8:
		w.check()
	default:
		next, err = w.msync()
		return true, next, err
	}
	return false, nil, nil
}

// readRegion reads the whole region through the journal.
func readRegion(t testing.TB, j *journal.Journal, start, pages uint64) []byte {
	t.Helper()
	got := make([]byte, pages*pg)
	for i := range pages {
		require.NoError(t, j.ReadBlock(start+i, got[i*pg:(i+1)*pg]))
	}
	return got
}

// newCrashManager is a Manager whose pool (8 MiB) is far more than the
// crash workloads touch, without kswapd: reclaim never runs, so it never
// writes back a page nobody msync'd.
func newCrashManager(t testing.TB) *Manager {
	t.Helper()
	pool, err := phys.New(phys.Config{Mem: make([]byte, 8<<20), Base: 0x80000000})
	require.NoError(t, err)
	m, err := New(Config{Pool: pool, VerifyZeroed: true, NoKswapd: true})
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, as := range m.AddressSpaces() {
			as.Exit()
		}
		require.NoError(t, m.Check())
		require.NoError(t, m.Close())
		require.Equal(t, uint64(pool.Frames()), pool.FreeFrames(), "frames leaked")
	})
	return m
}

// regionCrashConfig is the region of the crash workloads: no background
// writeback.
func regionCrashConfig(name string, j *journal.Journal, start, pages uint64) RegionConfig {
	return RegionConfig{Name: name, Journal: j, Start: start, Pages: pages,
		WritebackInterval: -1, DirtyExpire: time.Hour}
}

// msyncsAcked is the last msync a crash state's marks say had returned.
func msyncsAcked(marks []string) int {
	n := 0
	for _, m := range marks {
		if v, ok := strings.CutPrefix(m, "msync "); ok {
			k, _ := strconv.Atoi(v)
			n = max(n, k)
		}
	}
	return n
}

// TestRegionCrashStates runs stores and msyncs through three address
// spaces mapping a region shared, and one mapping it private, over a
// journal on a logwrites device, then rebuilds the device as a crash at
// each point of the run could have left it (prefixes, subsets and
// reorders of the writes not yet durable, torn writes, and the tears at
// journal block boundaries that blk/journal's crash tests add), recovers
// the journal on each, and requires the region to be exactly the state
// after the last msync that had returned, or after the one in flight.
func TestRegionCrashStates(t *testing.T) {
	const (
		logBlocks = 40 // a 39-block log of up to 8-block transactions: it wraps and fills
		maxTx     = 8
		pages     = 32
		msyncs    = 150 // random ones; then the whole region, a transaction's worth at a time
	)
	m := newCrashManager(t)
	ram, err := blk.NewRAM(blk.RAMConfig{Name: "ram-crash", Size: (logBlocks + pages) * pg})
	require.NoError(t, err)
	require.NoError(t, journal.Format(ram, journal.Layout{BlockSize: pg, LogStart: 0, LogBlocks: logBlocks, MaxTransaction: maxTx}))
	l, err := logwrites.New(ram)
	require.NoError(t, err)
	jpool, err := phys.New(phys.Config{Mem: make([]byte, 1<<20), Base: 0x40000000})
	require.NoError(t, err)
	jfree := jpool.FreeFrames()
	j, err := journal.Open(l, 0, pg, journal.Config{Name: "crash", Pool: jpool})
	require.NoError(t, err)
	r, err := m.OpenRegion(regionCrashConfig("/dev/crash", j, logBlocks, pages))
	require.NoError(t, err)

	w := &regionWorkload{t: t, rng: rand.New(rand.NewPCG(16, 2)), maxTx: maxTx, mo: newRegionModel(make([]byte, pages*pg))}
	a, b, c := newAS(t, m), newAS(t, m), newAS(t, m)
	w.mapRegion(a, r, 0, pages, true)
	w.mapRegion(b, r, 6, 16, true)
	w.mapRegion(c, r, 14, 18, true)
	w.mapRegion(b, r, 0, pages, false) // its stores must never reach the device
	for done := 0; done < msyncs; {
		msynced, _, err := w.step()
		if msynced {
			require.NoError(t, err)
			l.Mark(fmt.Sprintf("msync %d", len(w.mo.states)-1))
			done++
		}
	}
	for lo := uint64(0); lo < pages; lo += maxTx {
		_, err := w.msyncRange(w.maps[0], lo, maxTx)
		require.NoError(t, err)
		l.Mark(fmt.Sprintf("msync %d", len(w.mo.states)-1))
	}
	for _, mp := range w.maps {
		require.True(t, bytes.Equal(w.view(mp, 0, mp.pages*pg), readAll(t, mp)), "mapping of %d+%d (shared %v)", mp.off, mp.pages, mp.shared)
	}
	require.NotEmpty(t, w.mo.priv, "the private mapping copied pages")

	// Every commit was an msync's.
	rs, js := r.Stats(), j.Stats()
	require.Equal(t, uint64(w.mo.commits), rs.Commits, "commits are the msyncs that had dirty pages")
	require.Zero(t, rs.ReclaimWrites)
	require.Zero(t, rs.BgWritebacks)
	require.Equal(t, rs.Commits, js.Commits)
	require.Zero(t, rs.Dirty)
	for _, as := range []*AddressSpace{a, b, c} {
		require.NoError(t, as.Exit())
	}
	require.NoError(t, r.Close())
	require.NoError(t, j.Close())
	require.True(t, bytes.Equal(readRegionDev(t, ram, logBlocks, pages), w.mo.states[len(w.mo.states)-1]))
	t.Logf("workload: %d msyncs (%d with dirty pages), %d pages written, %d log blocks, %d checkpoints, %d pages copied by the private mapping",
		len(w.mo.states)-1, w.mo.commits, rs.PagesWritten, js.LogBlocks, js.Checkpoints, len(w.mo.priv))
	require.Positive(t, js.Checkpoints)
	require.Greater(t, js.LogBlocks, uint64(3*logBlocks), "the log wraps several times")
	require.Empty(t, l.Races(), "no overlapping writes in flight together")

	states, st := l.Enumerate(logwrites.EnumerateOptions{Seed: 16, MaxPerPoint: 8, MaxStates: 1500})
	states = withBlockTears(t, l, states)
	t.Logf("crash states: %d points, %d distinct possible, %d enumerated, %d with the block tears", st.Points, st.Distinct, st.Returned, len(states))
	require.GreaterOrEqual(t, len(states), 500)

	byK := map[int]int{}
	var inFlight, torn, reordered int
	for _, cs := range states {
		dev, err := l.ReplayImage(cs)
		require.NoError(t, err)
		jr, err := journal.Open(dev, 0, pg, journal.Config{Name: "recover", Pool: jpool})
		require.NoError(t, err, "recovery of state %s", cs.Name)
		got := readRegion(t, jr, logBlocks, pages)
		rec := jr.Recovery()
		require.NoError(t, jr.Close())
		require.NoError(t, dev.Close())
		ack := msyncsAcked(cs.Marks)
		k, err := w.mo.match(got, ack)
		require.NoError(t, err, "state %s (recovery %+v)", cs.Name, rec)
		byK[k]++
		if k > ack {
			inFlight++
		}
		if len(cs.Torn) > 0 {
			torn++
		}
		if len(cs.Reorder) > 0 {
			reordered++
		}
	}
	t.Logf("%d crash states recovered to an msync's state: %d to the msync in flight, the others to the last that had returned; %d with torn writes, %d reordered", len(states), inFlight, torn, reordered)
	t.Logf("states by msync, in tens (first msync: states): %s", histogram(byK, 10))
	assert.Positive(t, inFlight, "some crashes find the msync in flight durable")
	assert.Positive(t, torn)
	assert.Greater(t, len(byK), len(w.mo.states)/2, "crash states spread over the msyncs")
	assert.Equal(t, jfree, jpool.FreeFrames())
}

// readAll reads the whole of a mapping.
func readAll(t testing.TB, mp regionMap) []byte {
	t.Helper()
	got := make([]byte, mp.pages*pg)
	require.NoError(t, mp.as.Read(mp.addr, got))
	return got
}

// readRegionDev reads the region's home blocks from dev.
func readRegionDev(t testing.TB, dev blk.Device, start, pages uint64) []byte {
	t.Helper()
	got := make([]byte, pages*pg)
	require.NoError(t, dev.ReadAt(got, int64(start)*pg))
	return got
}

// histogram sums the states by msync in buckets of width.
func histogram(byK map[int]int, width int) string {
	buckets := map[int]int{}
	for k, n := range byK {
		buckets[k/width*width] += n
	}
	var ks []int
	for k := range buckets {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	var b strings.Builder
	for i, k := range ks {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d:%d", k, buckets[k])
	}
	return b.String()
}

// withBlockTears adds to states, as blk/journal's crash tests do, the two
// tears a journal fears most for each write of more than one journal block,
// just before it completes: the write without its last block (a commit
// block that did not land) and its last block alone (a commit block
// without what it seals). Each state once, in order of position.
func withBlockTears(t testing.TB, l *logwrites.Log, states []logwrites.CrashState) []logwrites.CrashState {
	t.Helper()
	type key struct {
		marks  int
		digest uint64
	}
	seen := map[key]bool{}
	for _, cs := range states {
		seen[key{len(cs.Marks), cs.Digest}] = true
	}
	perBlock := pg / l.SectorSize()
	for _, e := range l.Entries() {
		if e.Kind != logwrites.Write || e.Done < 0 || e.Err != nil || e.Len < 2*pg {
			continue
		}
		n := int(e.Len) / l.SectorSize()
		for _, landed := range []string{fmt.Sprintf("0-%d", n-perBlock-1), fmt.Sprintf("%d-%d", n-perBlock, n-1)} {
			cs, err := l.ParseState(fmt.Sprintf("@%d maybe{%d} torn{%d:%s}", e.Done, e.Seq, e.Seq, landed))
			require.NoError(t, err)
			if k := (key{len(cs.Marks), cs.Digest}); !seen[k] {
				seen[k] = true
				states = append(states, cs)
			}
		}
	}
	slices.SortStableFunc(states, func(a, b logwrites.CrashState) int { return a.At - b.At })
	return states
}

// A region whose journal has failed cannot write its dirty pages back:
// Close says so, and drops them all the same (the NBD test's teardown
// after every kill). It used to leave them cached in a region nothing
// could reach any more, their frames never freed.
func TestRegionCloseDropsPagesItCannotWrite(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 8, RegionConfig{})
	as := newAS(t, m)
	a := mmapRegion(t, as, tr.r, 4, ProtRead|ProtWrite, MapShared, 0)
	require.NoError(t, as.Write(a, []byte{1}))
	readPage(t, as, a+pg)
	require.NoError(t, tr.j.Close()) // every commit now fails
	require.NoError(t, as.Exit())
	err := tr.r.Close()
	require.ErrorIs(t, err, journal.ErrClosed)
	assert.Zero(t, meminfoKB(m, "Cached"))
	assert.Zero(t, meminfoKB(m, "Dirty"))
	require.NoError(t, m.Check())
}
