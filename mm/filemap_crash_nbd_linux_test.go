// This test starts an NBD server on the host (qemu/nbdserver, Linux only).

//go:build linux

package mm

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/blk/journal"
	"yolk/blk/nbd"
	"yolk/mm/phys"
	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
)

// TestRegionKilledServer runs the mapped workload of TestRegionCrashStates
// on a region over a real nbdkit file server and kills the server
// (SIGKILL) at random moments, mostly while an msync is committing, 25
// times. After each kill everything is torn down (the msync in flight
// fails, the journal aborts, the region's Close fails on its dirty pages),
// the server is restarted on the same backing file, and a fresh journal
// (recovering) and region are opened on it: read through a mapping, the
// region must be exactly the state after the last msync that returned, or
// after the one that failed when the server died, whose transaction may
// have reached the server whole. The next round starts from there.
func TestRegionKilledServer(t *testing.T) {
	const (
		kills     = 25
		logBlocks = 64
		maxTx     = 8
		pages     = 32
	)
	srv := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitFile, Size: (logBlocks + pages) * pg})
	m := newCrashManager(t)
	jpool, err := phys.New(phys.Config{Mem: make([]byte, 1<<20), Base: 0x40000000})
	require.NoError(t, err)
	jfree := jpool.FreeFrames()
	dial := func() *nbd.Client {
		c, err := nbd.Dial(context.Background(), nbd.Config{
			Addr: srv.Addr, Export: srv.Export,
			RequestTimeout:   5 * time.Second,
			ReconnectTimeout: -1, // the test restarts the server itself
		})
		require.NoError(t, err)
		return c
	}
	c := dial()
	require.NoError(t, journal.Format(c, journal.Layout{BlockSize: pg, LogStart: 0, LogBlocks: logBlocks, MaxTransaction: maxTx}))
	require.NoError(t, c.Close())

	rng := rand.New(rand.NewPCG(16, 20))
	// The region after the last msync that returned, and after the one
	// that failed when the server died (nil if none did).
	acked, pending := make([]byte, pages*pg), []byte(nil)
	var msyncs, failed, landed, closeErrs, replayed int
	for round := 0; ; round++ {
		c := dial()
		j, err := journal.Open(c, 0, pg, journal.Config{Name: "nbd", Pool: jpool})
		require.NoError(t, err, "recovery after kill %d", round)
		replayed += j.Recovery().Transactions
		r, err := m.OpenRegion(regionCrashConfig("/dev/nbd0", j, logBlocks, pages))
		require.NoError(t, err)
		w := &regionWorkload{t: t, rng: rng, maxTx: maxTx}
		a, b, d := newAS(t, m), newAS(t, m), newAS(t, m)
		w.mapRegion(a, r, 0, pages, true)

		// The recovered region, read through the mapping (which
		// caches every page: no store below reads the device).
		got := readAll(t, w.maps[0])
		if !bytes.Equal(got, acked) {
			require.True(t, pending != nil && bytes.Equal(got, pending),
				"after kill %d the region is neither the state after the last msync that returned nor after the one in flight (recovery %+v)", round, j.Recovery())
			landed++
		}
		if round == kills {
			for _, as := range []*AddressSpace{a, b, d} {
				require.NoError(t, as.Exit())
			}
			require.NoError(t, r.Close())
			require.NoError(t, j.Close())
			require.NoError(t, c.Close())
			break
		}
		w.mo = newRegionModel(got)
		w.mapRegion(b, r, 6, 16, true)
		w.mapRegion(d, r, 14, 18, true)
		w.mapRegion(b, r, 0, pages, false)

		// Kill the server at a random moment of the run.
		killed := make(chan error, 1)
		delay := time.Duration(rng.IntN(30)) * time.Millisecond
		go func() {
			time.Sleep(delay)
			killed <- srv.Kill()
		}()
		pending = nil
		for {
			msynced, next, err := w.step()
			if !msynced {
				continue
			}
			if err != nil {
				require.ErrorIs(t, err, journal.ErrAborted)
				require.ErrorIs(t, err, blk.ErrDisconnected)
				pending = next
				failed++
				break
			}
			msyncs++
		}
		acked = w.mo.states[len(w.mo.states)-1]
		require.NoError(t, <-killed)
		rs := r.Stats()
		require.Zero(t, rs.ReclaimWrites)
		require.Zero(t, rs.BgWritebacks)

		// Tear down: the region cannot write its dirty pages back.
		for _, as := range []*AddressSpace{a, b, d} {
			require.NoError(t, as.Exit())
		}
		if err := r.Close(); err != nil {
			require.ErrorIs(t, err, journal.ErrAborted)
			closeErrs++
		}
		require.ErrorIs(t, j.Close(), journal.ErrAborted)
		c.Close()
		require.NoError(t, srv.Restart())
	}
	t.Logf("killed nbdkit %d times: %d msyncs returned, %d failed at a kill, of which %d were found durable after recovery; %d transactions replayed by recovery; %d region closes failed on dirty pages",
		kills, msyncs, failed, landed, replayed, closeErrs)
	assert.Equal(t, jfree, jpool.FreeFrames())
}
