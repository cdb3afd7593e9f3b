// These tests start NBD servers on the host (qemu/nbdserver), which does
// not build for the image.

//go:build !tamago

package journal

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/blk/nbd"
	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
)

// TestKilledServer runs the journal on a real nbdkit file server and kills
// the server (SIGKILL) at random points while commits are in flight, 50
// times. After each kill the server is restarted, a new client recovers the
// journal, and the home blocks must hold every acknowledged transaction and
// nothing of a half one: exactly the acknowledged transactions, or those
// and the one whose commit was in flight when the server died.
func TestKilledServer(t *testing.T) {
	const (
		kills     = 50
		devBlocks = 1024
		logBlocks = 128
		homeFrom  = 256
		maxTx     = 16
	)
	srv := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitFile, Size: devBlocks * testBS})
	pool := newPool(t, 32)
	free := pool.FreeFrames()
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
	require.NoError(t, Format(c, Layout{BlockSize: testBS, LogStart: 0, LogBlocks: logBlocks, MaxTransaction: maxTx}))
	require.NoError(t, c.Close())

	r := rand.New(rand.NewPCG(5, 5))
	// want is the home area after every transaction known to be done.
	want := make([]byte, (devBlocks-homeFrom)*testBS)
	// pending is the home area if the transaction in flight at the kill
	// landed.
	var pending []byte
	version := 0
	var committed, inFlightLanded, replayed int
	for kill := range kills {
		c := dial()
		j, err := Open(c, 0, testBS, Config{Pool: pool})
		require.NoError(t, err, "recovery after kill %d", kill)
		replayed += j.Recovery().Transactions
		got := make([]byte, len(want))
		require.NoError(t, c.ReadAt(got, homeFrom*testBS))
		if !bytes.Equal(got, want) {
			require.True(t, pending != nil && bytes.Equal(got, pending), "after kill %d the home blocks hold neither the acknowledged transactions nor those and the one in flight", kill)
			want, inFlightLanded = pending, inFlightLanded+1
		}
		pending = nil

		// Kill the server at a random point of a run of commits.
		killed := make(chan struct{})
		delay := time.Duration(r.IntN(40)) * time.Millisecond
		go func() {
			time.Sleep(delay)
			srv.Kill()
			close(killed)
		}()
		for {
			version++
			n := 1 + r.IntN(maxTx)
			next := bytes.Clone(want)
			h, err := j.Begin(n)
			if err != nil {
				break
			}
			for range n {
				home := homeFrom + r.Uint64N(devBlocks-homeFrom)
				b := block(home, version)
				require.NoError(t, h.Add(home, b))
				copy(next[(home-homeFrom)*testBS:], b)
			}
			pending = next
			if err := h.Commit(); err != nil {
				require.ErrorIs(t, err, ErrAborted)
				require.ErrorIs(t, err, blk.ErrDisconnected)
				break
			}
			want, pending = next, nil
			committed++
		}
		<-killed
		require.ErrorIs(t, j.Close(), ErrAborted)
		c.Close()
		require.NoError(t, srv.Restart())
	}
	t.Logf("killed nbdkit %d times: %d transactions acknowledged, %d replayed by recovery, %d in flight at a kill found committed", kills, committed, replayed, inFlightLanded)
	require.Equal(t, free, pool.FreeFrames())
}
