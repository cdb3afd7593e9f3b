package mm

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/blk/journal"
	"yolk/mm/phys"
	"yolk/runtime/workqueue"
)

// Seed 001 through the memory manager: reclaim waits on the writeback of
// dirty page cache pages, the writeback waits on a journal commit, and
// the pool has not one free frame. With the journal's I/O on a MemReclaim
// queue, the rescuer runs the commit and reclaim completes; on a plain
// queue the commit needs a new worker, whose buffer needs memory, which
// only the commit can free: reclaim stalls (bcache's journal_write on
// system_wq, fixed by "add separate workqueue for journal_write to avoid
// deadlock", 2018).

const rescuerWatchdog = 2 * time.Second

type reclaimRun struct {
	stalled                   bool
	freeAtStart               uint64
	freed                     int
	journalStats, regionStats workqueue.Stats
	region                    RegionStats
	oomKills                  uint64
}

func reclaimThroughJournal(t *testing.T, flags workqueue.Flags) reclaimRun {
	pool, err := phys.New(phys.Config{Mem: make([]byte, 8<<20), Base: 0x80000000, ThrottleTimeout: time.Millisecond})
	require.NoError(t, err)
	m, err := New(Config{Pool: pool, NoKswapd: true})
	require.NoError(t, err)
	q, err := workqueue.New("jbd2/region", pool, workqueue.Config{Flags: flags, MaxActive: 8})
	require.NoError(t, err)

	const logBlocks, pages = 256, 512
	dev, err := blk.NewRAM(blk.RAMConfig{Size: (logBlocks + pages) * phys.PageSize})
	require.NoError(t, err)
	require.NoError(t, journal.Format(dev, journal.Layout{BlockSize: phys.PageSize, LogBlocks: logBlocks}))
	j, err := journal.Open(dev, 0, phys.PageSize, journal.Config{Name: "region", Pool: pool, Queue: q})
	require.NoError(t, err)
	r, err := m.OpenRegion(RegionConfig{Name: "/dev/ram0", Journal: j, Start: logBlocks, Pages: pages,
		WritebackInterval: -1, Readahead: 1})
	require.NoError(t, err)

	// Every worker the journal's queue has is busy elsewhere, so that a
	// commit needs a new one.
	release := make(chan struct{})
	for busy := 0; ; busy++ {
		st := q.Stats()
		if st.Idle == 0 && st.Pending == 0 {
			time.Sleep(20 * time.Millisecond)
			if q.Stats() == st {
				break
			}
			continue
		}
		require.Less(t, busy, 4, "workers keep appearing: %+v", st)
		started := make(chan struct{})
		require.True(t, q.Queue(&workqueue.Work{Func: func(*workqueue.Work, []byte) { close(started); <-release }}))
		<-started
	}

	// Dirty page cache, then not one free frame.
	as := newAS(t, m)
	a := mmapRegion(t, as, r, pages/2, ProtRead|ProtWrite, MapShared, 0)
	for i := uint32(0); i < pages/2; i++ {
		require.NoError(t, as.Write(a+i*pg, []byte{byte(i), 0x5a}))
	}
	var hog []phys.PFN
	for {
		f, err := pool.AllocPage(phys.Nowait | phys.Memalloc)
		if err != nil {
			break
		}
		hog = append(hog, f)
	}
	res := reclaimRun{freeAtStart: pool.FreeFrames()}

	done := make(chan int, 1)
	go func() { done <- m.ProactiveReclaim(64) }()
	select {
	case res.freed = <-done:
	case <-time.After(rescuerWatchdog):
		res.stalled = true
		assert.Positive(t, r.Stats().Writeback, "stalled with pages under writeback")
		// Break the cycle from outside: memory comes back, a worker is
		// created, the commit runs, the pages are freed.
		for _, f := range hog {
			require.NoError(t, pool.Put(f))
		}
		hog = nil
		res.freed = <-done
	}
	res.region = r.Stats()
	for _, f := range hog {
		require.NoError(t, pool.Put(f))
	}
	close(release)
	q.Flush()
	r.wq.Flush()
	res.journalStats = q.Stats()
	res.regionStats = r.wq.Stats()
	res.oomKills, _ = m.VmstatValue("oom_kill")
	require.NoError(t, m.Check())

	// Every byte written is there, from the cache or read back: through
	// a space of its own, since the stalled run's OOM killer may have
	// ended the writer (which freed nothing: its memory is page cache).
	reader := newAS(t, m)
	ra := mmapRegion(t, reader, r, pages/2, ProtRead, MapShared, 0)
	for i := uint32(0); i < pages/2; i++ {
		b := make([]byte, 2)
		require.NoError(t, reader.Read(ra+i*pg, b))
		require.Equal(t, []byte{byte(i), 0x5a}, b, "page %d", i)
	}
	require.NoError(t, reader.Exit())
	as.Exit()
	require.NoError(t, r.Close())
	require.NoError(t, j.Close())
	q.Destroy()
	require.NoError(t, m.Close())
	return res
}

func TestReclaimThroughJournalStallsOnAPlainQueue(t *testing.T) {
	res := reclaimThroughJournal(t, 0)
	require.Zero(t, res.freeAtStart)
	require.True(t, res.stalled, "reclaim completed with the journal on a plain queue and no free frame: the deadlock was not reproduced, so this test proves nothing")
	t.Logf("plain queue: reclaim waited %v on writeback through the journal with 0 free frames (OOM kills meanwhile, which freed nothing: %d); released from outside it freed %d (journal queue %+v)",
		rescuerWatchdog, res.oomKills, res.freed, res.journalStats)
}

func TestReclaimThroughJournalCompletesOnAMemReclaimQueue(t *testing.T) {
	res := reclaimThroughJournal(t, workqueue.MemReclaim)
	require.Zero(t, res.freeAtStart, "the run starts with the pool empty")
	require.False(t, res.stalled, "the journal's rescuer did not run the commit")
	assert.Zero(t, res.oomKills)
	assert.Positive(t, res.freed)
	assert.Positive(t, res.region.ReclaimWrites)
	assert.Positive(t, res.region.Commits)
	assert.GreaterOrEqual(t, res.journalStats.RescuerRuns, uint64(1), "the journal's rescuer ran the commit")
	assert.GreaterOrEqual(t, res.regionStats.RescuerRuns, uint64(1), "the region's rescuer ran the writeback")
	t.Logf("MemReclaim queue: reclaim freed %d frames from 0 free, %d pages written back in %d commits (journal queue %+v, region queue %+v)",
		res.freed, res.region.ReclaimWrites, res.region.Commits, res.journalStats, res.regionStats)
}
