package mm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/blk/journal"
	"yolk/mm/phys"
)

// A test region: a RAM device with a journal at block 0 and the region
// after it. The journal's buffers come from a pool of their own, so that
// the Manager's pool is its alone (CheckFrames).
type testRegion struct {
	dev     *blk.RAM
	jpool   *phys.Pool
	j       *journal.Journal
	r       *Region
	layout  journal.Layout
	start   uint64
	pages   uint64
	cfg     RegionConfig
	m       *Manager
	journal journal.Config
}

const testLogBlocks = 256

func newTestRegion(t testing.TB, m *Manager, pages uint64, cfg RegionConfig) *testRegion {
	t.Helper()
	tr := &testRegion{m: m, start: testLogBlocks, pages: pages}
	var err error
	tr.dev, err = blk.NewRAM(blk.RAMConfig{Name: "ram-region", Size: int64(testLogBlocks+pages) * phys.PageSize})
	require.NoError(t, err)
	tr.layout = journal.Layout{BlockSize: phys.PageSize, LogStart: 0, LogBlocks: testLogBlocks, MaxTransaction: 62}
	require.NoError(t, journal.Format(tr.dev, tr.layout))
	tr.jpool, err = phys.New(phys.Config{Mem: make([]byte, 4<<20), Base: 0x40000000})
	require.NoError(t, err)
	tr.journal = journal.Config{Name: "test", Pool: tr.jpool}
	if cfg.Name == "" {
		cfg.Name = "/dev/ram-region"
	}
	if cfg.WritebackInterval == 0 {
		cfg.WritebackInterval = -1 // tests call WritebackExpired themselves
	}
	tr.cfg = cfg
	tr.open(t)
	return tr
}

func (tr *testRegion) open(t testing.TB) {
	t.Helper()
	var err error
	tr.j, err = journal.Open(tr.dev, 0, phys.PageSize, tr.journal)
	require.NoError(t, err)
	cfg := tr.cfg
	cfg.Journal, cfg.Start, cfg.Pages = tr.j, tr.start, tr.pages
	tr.r, err = tr.m.OpenRegion(cfg)
	require.NoError(t, err)
}

func (tr *testRegion) close(t testing.TB) {
	t.Helper()
	require.NoError(t, tr.r.Close())
	require.NoError(t, tr.j.Close())
}

// onDevice returns page idx as recovery would find it: through a fresh
// journal on a copy of the device.
func (tr *testRegion) onDevice(t testing.TB, idx uint64) []byte {
	t.Helper()
	b := make([]byte, phys.PageSize)
	require.NoError(t, tr.j.ReadBlock(tr.start+idx, b))
	return b
}

// samePage asserts two pages are equal, naming the first byte that is not.
func samePage(t testing.TB, want, got []byte, msg ...any) {
	t.Helper()
	for i := range want {
		if i >= len(got) || want[i] != got[i] {
			assert.Fail(t, fmt.Sprintf("pages differ at byte %d", i), msg...)
			return
		}
	}
}

func pattern(seed, idx uint64) []byte {
	b := make([]byte, phys.PageSize)
	for i := range b {
		b[i] = byte(seed*131 + idx*7 + uint64(i)*3)
	}
	return b
}

func mmapRegion(t testing.TB, as *AddressSpace, r *Region, pages uint32, prot Prot, flags MapFlags, off uint64) uint32 {
	t.Helper()
	a, err := as.MmapRegion(0, pages*pg, prot, flags, r, off*pg)
	require.NoError(t, err)
	return a
}

func readPage(t testing.TB, as *AddressSpace, a uint32) []byte {
	t.Helper()
	b := make([]byte, pg)
	require.NoError(t, as.Read(a, b))
	return b
}

func TestRegionSharedAcrossSpacesAndFork(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 64, RegionConfig{})
	a, b := newAS(t, m), newAS(t, m)
	pa := mmapRegion(t, a, tr.r, 16, ProtRead|ProtWrite, MapShared, 8)
	pb := mmapRegion(t, b, tr.r, 8, ProtRead|ProtWrite, MapShared, 12)
	require.NoError(t, m.Check())

	// A store through one mapping is seen through the other at once: one
	// page cache page.
	require.NoError(t, a.Write(pa+4*pg, pattern(1, 12)))
	samePage(t, pattern(1, 12), readPage(t, b, pb))
	assert.Equal(t, uint64(4), meminfoKB(m, "Dirty"))
	require.NoError(t, m.Check())

	// A child shares the region too, though fork copies no PTE of it.
	c, err := a.Fork()
	require.NoError(t, err)
	samePage(t, pattern(1, 12), readPage(t, c, pa+4*pg))
	require.NoError(t, c.Write(pa+5*pg, pattern(2, 13)))
	samePage(t, pattern(2, 13), readPage(t, a, pa+5*pg))
	samePage(t, pattern(2, 13), readPage(t, b, pb+pg))
	require.NoError(t, m.Check())

	// Nothing is durable before msync; after it, both pages are.
	samePage(t, make([]byte, pg), tr.onDevice(t, 12))
	require.NoError(t, b.Msync(pb, 2*pg, MsSync))
	samePage(t, pattern(1, 12), tr.onDevice(t, 12))
	samePage(t, pattern(2, 13), tr.onDevice(t, 13))
	assert.Equal(t, uint64(0), meminfoKB(m, "Dirty"))
	st := tr.r.Stats()
	assert.Equal(t, uint64(1), st.Commits, "one transaction for the range")
	assert.Equal(t, uint64(2), st.PagesWritten)
	require.NoError(t, m.Check())

	// The msync cleaned every PTE: the next store dirties the page again.
	require.NoError(t, c.Write(pa+4*pg, []byte{0xee}))
	assert.Equal(t, uint64(4), meminfoKB(m, "Dirty"))
	require.NoError(t, m.Check())
	for _, as := range []*AddressSpace{a, b, c} {
		require.NoError(t, as.Exit())
	}
	require.NoError(t, m.Check())
	tr.close(t) // Close writes the last store back
	tr.open(t)
	want := pattern(1, 12)
	want[0] = 0xee
	samePage(t, want, tr.onDevice(t, 12))
	tr.close(t)
}

func TestRegionPrivateMappingCopiesOnWrite(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 32, RegionConfig{})
	a, b := newAS(t, m), newAS(t, m)
	sh := mmapRegion(t, a, tr.r, 4, ProtRead|ProtWrite, MapShared, 0)
	pv := mmapRegion(t, b, tr.r, 4, ProtRead|ProtWrite, MapPrivate, 0)
	require.NoError(t, a.Write(sh, pattern(3, 0)))
	require.NoError(t, a.Write(sh+pg, pattern(3, 1)))
	// Until it writes, a private mapping sees the cache, stores included.
	samePage(t, pattern(3, 0), readPage(t, b, pv))
	require.NoError(t, m.Check())

	// Its store copies the page into anonymous memory: the region and
	// the shared mapping never see it.
	require.NoError(t, b.Write(pv+pg, []byte{1, 2, 3}))
	got := readPage(t, b, pv+pg)
	assert.Equal(t, []byte{1, 2, 3}, got[:3])
	assert.Equal(t, pattern(3, 1)[3:], got[3:])
	samePage(t, pattern(3, 1), readPage(t, a, sh+pg))
	assert.Equal(t, uint64(4), meminfoKB(m, "AnonPages"))
	require.NoError(t, m.Check())

	// A child of the private side shares its copy copy-on-write, and the
	// cache for the rest.
	c, err := b.Fork()
	require.NoError(t, err)
	samePage(t, got, readPage(t, c, pv+pg))
	require.NoError(t, a.Write(sh, []byte{9}))
	assert.Equal(t, byte(9), readByte(t, c, pv), "an uncopied page follows the cache")
	require.NoError(t, c.Write(pv+pg, []byte{7}))
	assert.Equal(t, byte(1), readByte(t, b, pv+pg))
	require.NoError(t, m.Check())

	// MADV_DONTNEED drops the copy: the cache shows through again.
	require.NoError(t, b.Madvise(pv+pg, pg, MadvDontneed))
	samePage(t, pattern(3, 1), readPage(t, b, pv+pg))
	assert.ErrorIs(t, b.Madvise(pv, pg, MadvFree), ErrInvalid, "MADV_FREE on a file mapping is EINVAL")
	require.NoError(t, m.Check())

	require.NoError(t, b.Msync(pv, 4*pg, MsSync)) // nothing shared to write
	samePage(t, make([]byte, pg), tr.onDevice(t, 1))
	for _, as := range []*AddressSpace{a, b, c} {
		require.NoError(t, as.Exit())
	}
	tr.close(t)
}

func TestRegionMmapErrors(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 8, RegionConfig{})
	as := newAS(t, m)
	for _, c := range []struct {
		name  string
		len   uint32
		flags MapFlags
		off   uint64
	}{
		{"neither shared nor private", pg, 0, 0},
		{"both", pg, MapShared | MapPrivate, 0},
		{"beyond the region", 2 * pg, MapShared, 7 * pg},
		{"unaligned offset", pg, MapShared, 100},
		{"zero length", 0, MapShared, 0},
	} {
		_, err := as.MmapRegion(0, c.len, ProtRead, c.flags, tr.r, c.off)
		assert.ErrorIs(t, err, ErrInvalid, c.name)
	}
	_, err := as.Mmap(0, pg, ProtRead, MapShared)
	assert.ErrorIs(t, err, ErrInvalid, "shared anonymous memory")
	a := mmapRegion(t, as, tr.r, 2, ProtRead|ProtWrite, MapShared, 0)
	assert.ErrorIs(t, as.Msync(a+1, pg, MsSync), ErrInvalid)
	assert.ErrorIs(t, as.Msync(a, pg, MsSync|MsAsync), ErrInvalid)
	assert.ErrorIs(t, as.Msync(a, 4*pg, MsSync), ErrNotMapped)
	assert.ErrorIs(t, tr.r.Close(), ErrRegionBusy)
	require.NoError(t, as.Munmap(a, 2*pg))
	tr.close(t)
	_, err = as.MmapRegion(0, pg, ProtRead, MapShared, tr.r, 0)
	assert.ErrorIs(t, err, ErrRegionClosed)
}

// A mapping split by mprotect is still one range: msync commits it whole.
func TestMsyncSplitMappingIsOneTransaction(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 16, RegionConfig{})
	as := newAS(t, m)
	a := mmapRegion(t, as, tr.r, 8, ProtRead|ProtWrite, MapShared, 0)
	for i := uint32(0); i < 8; i++ {
		require.NoError(t, as.Write(a+i*pg, pattern(5, uint64(i))))
	}
	require.NoError(t, as.Mprotect(a+2*pg, 3*pg, ProtRead))
	assert.Len(t, as.VMAs(), 3)
	require.NoError(t, m.Check())
	require.NoError(t, as.Msync(a, 8*pg, MsSync))
	assert.Equal(t, uint64(1), tr.r.Stats().Commits)
	for i := uint64(0); i < 8; i++ {
		samePage(t, pattern(5, i), tr.onDevice(t, i))
	}
	var ferr *FaultError
	require.ErrorAs(t, as.Write(a+3*pg, []byte{1}), &ferr)
	assert.Equal(t, AccessError, ferr.Reason)
	require.NoError(t, as.Exit())
	tr.close(t)
}

func TestMsyncRefusesMoreThanATransaction(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 128, RegionConfig{})
	as := newAS(t, m)
	a := mmapRegion(t, as, tr.r, 100, ProtRead|ProtWrite, MapShared, 0)
	for i := uint32(0); i < 63; i++ {
		require.NoError(t, as.Write(a+i*pg, []byte{byte(i + 1)}))
	}
	err := as.Msync(a, 100*pg, MsSync)
	require.ErrorIs(t, err, ErrMsyncTooBig)
	assert.Equal(t, uint64(63*4), meminfoKB(m, "Dirty"), "the pages stay dirty")
	require.NoError(t, as.Msync(a, 62*pg, MsSync))
	require.NoError(t, as.Msync(a+62*pg, pg, MsSync))
	assert.Equal(t, uint64(0), meminfoKB(m, "Dirty"))
	require.NoError(t, m.Check())
	require.NoError(t, as.Exit())
	tr.close(t)
}

func TestBackgroundWritebackCommitsExpiredPages(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 16, RegionConfig{DirtyExpire: 50 * time.Millisecond})
	as := newAS(t, m)
	a := mmapRegion(t, as, tr.r, 4, ProtRead|ProtWrite, MapShared, 0)
	require.NoError(t, as.Write(a, []byte{1}))
	n, err := tr.r.WritebackExpired()
	require.NoError(t, err)
	assert.Zero(t, n, "not dirty long enough")
	time.Sleep(60 * time.Millisecond)
	require.NoError(t, as.Write(a+pg, []byte{2}))
	n, err = tr.r.WritebackExpired()
	require.NoError(t, err)
	assert.Equal(t, 1, n, "only the page dirty for longer than the expiry")
	assert.Equal(t, byte(1), tr.onDevice(t, 0)[0])
	assert.Equal(t, byte(0), tr.onDevice(t, 1)[0])
	assert.Equal(t, uint64(4), meminfoKB(m, "Dirty"))
	require.NoError(t, m.Check())
	require.NoError(t, as.Exit())
	tr.close(t)

	// The flusher does the same on its own.
	tr = newTestRegion(t, m, 16, RegionConfig{DirtyExpire: 10 * time.Millisecond, WritebackInterval: 5 * time.Millisecond})
	as = newAS(t, m)
	a = mmapRegion(t, as, tr.r, 4, ProtRead|ProtWrite, MapShared, 0)
	require.NoError(t, as.Write(a+2*pg, []byte{3}))
	require.Eventually(t, func() bool { return tr.r.Stats().BgWritebacks > 0 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, byte(3), tr.onDevice(t, 2)[0])
	require.NoError(t, as.Exit())
	tr.close(t)
}

// Reclaim drops clean cache pages and writes dirty ones back through the
// journal, freeing them when the commit is durable; a later fault reads
// them back, from the log before the checkpoint has written them home.
func TestReclaimWritesBackAndDropsCachePages(t *testing.T) {
	pool, err := phys.New(phys.Config{Mem: make([]byte, 2<<20), Base: 0x80000000})
	require.NoError(t, err)
	m, err := New(Config{Pool: pool, VerifyZeroed: true, NoKswapd: true})
	require.NoError(t, err)
	const pages = 1024 // 4 MiB: twice the pool
	tr := newTestRegion(t, m, pages, RegionConfig{})
	as := newAS(t, m)
	a := mmapRegion(t, as, tr.r, pages, ProtRead|ProtWrite, MapShared, 0)
	for i := uint32(0); i < pages; i++ {
		require.NoError(t, as.Write(a+i*pg, pattern(9, uint64(i))[:64]), "page %d", i)
		if i%128 == 0 {
			require.NoError(t, m.Check())
		}
	}
	st := tr.r.Stats()
	assert.Greater(t, st.ReclaimWrites, uint64(0), "reclaim wrote dirty pages back")
	assert.Less(t, st.Cached, int64(pages), "and freed them")
	v, _ := m.VmstatValue("pgpgout")
	assert.Equal(t, st.PagesWritten*4, v)
	require.NoError(t, m.Check())
	for i := uint32(0); i < pages; i++ {
		got := make([]byte, 64)
		require.NoError(t, as.Read(a+i*pg, got), "page %d", i)
		require.Equal(t, pattern(9, uint64(i))[:64], got, "page %d", i)
	}
	assert.Greater(t, tr.r.Stats().PagesRead, uint64(0))
	v, _ = m.VmstatValue("pgpgin")
	assert.Equal(t, tr.r.Stats().PagesRead*4, v)
	require.NoError(t, m.Check())
	require.NoError(t, as.Exit())
	tr.close(t)
	require.NoError(t, m.Close())
	require.Equal(t, uint64(pool.Frames()), pool.FreeFrames(), "frames leaked")
}

func TestRegionProcFiles(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 16, RegionConfig{Name: "/dev/nbd0", Readahead: 1})
	as, other := newAS(t, m), newAS(t, m)
	sh := mmapRegion(t, as, tr.r, 4, ProtRead|ProtWrite, MapShared, 2)
	pv := mmapRegion(t, as, tr.r, 2, ProtRead|ProtWrite, MapPrivate, 8)
	osh := mmapRegion(t, other, tr.r, 1, ProtRead, MapShared, 3)
	require.NoError(t, as.Write(sh, []byte{1}))      // private dirty: mapped once
	readPage(t, as, sh+pg)                           // shared clean: other maps it too
	readPage(t, other, osh)                          //
	require.NoError(t, as.Write(sh+2*pg, []byte{1})) // private dirty
	readPage(t, as, pv)                              // private clean
	require.NoError(t, as.Write(pv+pg, []byte{1}))   // anonymous copy

	var b strings.Builder
	require.NoError(t, as.WriteMaps(&b))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	require.Len(t, lines, 2)
	assert.Equal(t, fmt.Sprintf("%08x-%08x rw-p 00008000 00:00 0          /dev/nbd0", pv, pv+2*pg), lines[0])
	assert.Equal(t, fmt.Sprintf("%08x-%08x rw-s 00002000 00:00 0          /dev/nbd0", sh, sh+4*pg), lines[1])

	sm := as.Smaps()
	require.Len(t, sm, 2)
	priv, shared := sm[0], sm[1]
	assert.Equal(t, uint64(3*pg), shared.Rss)
	assert.Equal(t, uint64(pg), shared.SharedClean)
	assert.Equal(t, uint64(2*pg), shared.PrivateDirty)
	assert.Zero(t, shared.Anonymous)
	assert.Equal(t, uint64(pg/2+2*pg), shared.Pss, "the page other maps too counts half")
	assert.Equal(t, uint64(2*pg), priv.Rss)
	assert.Equal(t, uint64(pg), priv.PrivateClean)
	assert.Equal(t, uint64(pg), priv.PrivateDirty)
	assert.Equal(t, uint64(pg), priv.Anonymous, "the copy alone is anonymous")
	assert.Equal(t, VMRead|VMWrite|VMShared|VMMayRead|VMMayWrite|VMMayExec|VMMayShare, shared.Flags)

	assert.Equal(t, uint64(8), meminfoKB(m, "Dirty"))
	assert.Equal(t, uint64(20), meminfoKB(m, "Cached"), "pages 2, 3, 4, 8 and 9, which the copy was made from")
	assert.Equal(t, uint64(16), meminfoKB(m, "Mapped"), "page 9 is not mapped: the copy is")
	for name, want := range map[string]uint64{"nr_dirty": 2, "nr_file_pages": 5, "nr_mapped": 4} {
		v, ok := m.VmstatValue(name)
		assert.True(t, ok, name)
		assert.Equal(t, want, v, name)
	}
	require.NoError(t, m.Check())
	require.NoError(t, as.Exit())
	require.NoError(t, other.Exit())
	tr.close(t)
	assert.Equal(t, uint64(0), meminfoKB(m, "Cached"))
}

// A read error fails the fault alone, with SIGBUS.
func TestRegionReadErrorIsSIGBUS(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 8, RegionConfig{})
	as := newAS(t, m)
	a := mmapRegion(t, as, tr.r, 2, ProtRead, MapShared, 0)
	tr.j.Close() // every read now fails with ErrClosed
	var ferr *FaultError
	err := as.Read(a, make([]byte, 1))
	require.ErrorAs(t, err, &ferr)
	assert.Equal(t, SwapError, ferr.Reason)
	assert.True(t, errors.Is(err, journal.ErrClosed), "%v", err)
	assert.Equal(t, uint64(1), tr.r.Stats().ReadErrors)
	require.NoError(t, as.Exit())
	require.NoError(t, tr.r.Close())
	require.NoError(t, m.Check())
}

func TestDropCachesKeepsDirtyAndMappedPages(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 16, RegionConfig{Readahead: 1})
	as := newAS(t, m)
	a := mmapRegion(t, as, tr.r, 4, ProtRead|ProtWrite, MapShared, 0)
	require.NoError(t, as.Write(a, []byte{1}))      // dirty
	readPage(t, as, a+pg)                           // mapped, clean
	require.NoError(t, as.Write(a+2*pg, []byte{2})) // clean after msync, unmapped after munmap
	require.NoError(t, as.Msync(a+2*pg, pg, MsSync))
	require.NoError(t, as.Munmap(a+2*pg, 2*pg))
	assert.Equal(t, 1, m.DropCaches())
	assert.Equal(t, uint64(8), meminfoKB(m, "Cached"))
	require.NoError(t, m.Check())
	b := mmapRegion(t, as, tr.r, 1, ProtRead, MapShared, 2)
	assert.Equal(t, byte(2), readByte(t, as, b), "read back from the journal")
	require.NoError(t, as.Exit())
	tr.close(t)
}

func TestMincoreSeesThePageCache(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 16, RegionConfig{Readahead: 1})
	a, b := newAS(t, m), newAS(t, m)
	pa := mmapRegion(t, a, tr.r, 4, ProtRead, MapShared, 0)
	pb := mmapRegion(t, b, tr.r, 4, ProtRead, MapPrivate, 0)
	readByte(t, a, pa+pg)
	vec, err := b.Mincore(pb, 4*pg)
	require.NoError(t, err)
	assert.Equal(t, []byte{0, 1, 0, 0}, vec, "cached by the other space's fault")
	require.NoError(t, a.Exit())
	require.NoError(t, b.Exit())
	tr.close(t)
}

// Sync while reclaim's writeback of some pages is still queued: it
// commits the dirty pages and waits for the rest.
func TestSyncWaitsForReclaimWriteback(t *testing.T) {
	m := newTestManager(t)
	tr := newTestRegion(t, m, 64, RegionConfig{Readahead: 1})
	as := newAS(t, m)
	a := mmapRegion(t, as, tr.r, 16, ProtRead|ProtWrite, MapShared, 0)
	for i := uint32(0); i < 16; i++ {
		require.NoError(t, as.Write(a+i*pg, []byte{byte(i + 1)}))
	}
	// Hold the writeback lock so that the pages reclaim hands over wait
	// in the queue, under writeback, while Sync starts.
	tr.r.wbMu.Lock()
	require.NoError(t, as.Madvise(a, 8*pg, MadvPageout))
	assert.Positive(t, tr.r.Stats().Writeback)
	require.NoError(t, as.Write(a+12*pg, []byte{0xcc}))
	tr.r.wbMu.Unlock()
	done := make(chan error, 1)
	go func() { done <- tr.r.Sync() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Sync did not return with reclaim writeback queued")
	}
	assert.Zero(t, tr.r.Stats().Writeback)
	assert.Zero(t, tr.r.Stats().Dirty)
	for i := uint64(0); i < 16; i++ {
		want := byte(i + 1)
		if i == 12 {
			want = 0xcc
		}
		assert.Equal(t, want, tr.onDevice(t, i)[0], "page %d", i)
	}
	require.NoError(t, m.Check())
	require.NoError(t, as.Exit())
	tr.close(t)
}
