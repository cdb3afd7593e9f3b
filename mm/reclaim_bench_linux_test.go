//go:build linux

package mm

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"yolk/blk/nbd"
	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
)

// Reclaim to a real NBD server: nbdkit's memory plugin on loopback, started
// with qemu/nbdserver, which runs programs (os/exec): so Linux only.

// nbdcopyRequests is how many requests nbdcopy keeps in flight: the NBD
// client's default MaxInFlight, the most its one connection carries.
// nbdRounds is how many rounds of each make one op: each takes about a
// quarter of a second, and the ratio, of two figures that vary from
// round to round by half on a busy host, needs a few.
const (
	nbdcopyRequests = 16
	nbdRounds       = 4
)

// needNBDTools skips the benchmark, or fails it when CI is set (as
// qemu/nbdserver does), if nbdkit or nbdcopy is missing.
func needNBDTools(b *testing.B) {
	for _, err := range []error{nbdserver.Available(nbdserver.NbdkitMemory), nbdserver.NbdcopyAvailable()} {
		if err == nil {
			continue
		}
		if os.Getenv("CI") != "" {
			b.Fatal(err)
		}
		b.Skipf("%v (make deps installs it)", err)
	}
}

// runNbdcopy copies file to srv with nbdcopy on one connection and one
// thread, in requests of size bytes, nbdcopyRequests in flight, as
// blk/nbd's BenchmarkVersusNbdcopy does; it returns the time the process
// took, its start-up included.
func runNbdcopy(b *testing.B, srv *nbdserver.Server, file string, size int) time.Duration {
	d, err := srv.Nbdcopy(file, size, nbdcopyRequests)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkReclaimDirtyNBD: one op is four rounds, alternately, of
// BenchmarkReclaimDirtyRAM's reclaim (8192 dirty 4 KiB pages, 32 MiB,
// swapped out by ProactiveReclaim and timed until every write is
// acknowledged) with swap on the NBD client (blk/nbd, one connection, its
// defaults) connected to nbdkit's memory plugin on loopback, and of
// nbdcopy writing the same 32 MiB, from a file of random bytes, to
// another nbdkit memory server: in 4 KiB requests, the size of reclaim's,
// and in 256 KiB ones, both with 16 in flight on one connection. Reports
// pages/s and MB/s (yolk), nbdcopy-MB/s (4 KiB requests),
// nbdcopy-256KiB-MB/s, and the ratios x_nbdcopy and x_nbdcopy-256KiB,
// yolk's throughput over nbdcopy's (the goal: ≥ 0.7). The pages
// are checked as in BenchmarkReclaimDirtyRAM (pswpout +8192 a round).
//
// Measured (AMD EPYC, 2 vCPUs, load about 1, go1.26.8, nbdkit 1.32.5,
// libnbd 1.14.2, -benchtime 1s; three runs):
//
//	pages/s 31–43 k          MB/s 128–177
//	nbdcopy-MB/s 165–202              x_nbdcopy 0.63, 0.89, 0.97
//	nbdcopy-256KiB-MB/s 706–803       x_nbdcopy-256KiB 0.17–0.25
//
// So the goal against nbdcopy's 4 KiB requests is met on the median, not
// in every run on a shared host. With the writeback queue at 8 workers,
// each waiting for one WriteAt, only 8 requests were on the wire and the
// median was 0.80 on a loaded host; Swapon now gives the queue as many
// workers as it has write requests (64, on a pool this size), and the
// client's 16 in flight, nbdcopy's number too, are the limit. Against
// nbdcopy's 256 KiB requests the gap is the request size: reclaim sends
// one 4 KiB page a request, though pages reclaimed together get adjacent
// slots (merging them is the next step).
func BenchmarkReclaimDirtyNBD(b *testing.B) {
	const bytes = reclaimPages * pg
	needNBDTools(b)
	swapSrv := nbdservertest.Start(b, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: 64 << 20})
	copySrv := nbdservertest.Start(b, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: 64 << 20})
	c, err := nbd.Dial(context.Background(), nbd.Config{Addr: swapSrv.Addr, Export: swapSrv.Export})
	require.NoError(b, err)
	b.Cleanup(func() { c.Close() }) // after the manager's clean-up, which swaps off
	dev := &countingDev{Device: c}
	m, as, a := dirtyBenchSpace(b, dev)

	src := make([]byte, bytes)
	for i := range src {
		src[i] = byte(rand.Uint32())
	}
	file := filepath.Join(b.TempDir(), "src")
	require.NoError(b, os.WriteFile(file, src, 0o600))

	// Warm-up: the host's first touch of the pool, and nbdcopy's first
	// run (its binary and libraries read in).
	dirtyReclaim(b, m, as, a, dev)
	runNbdcopy(b, copySrv, file, pg)
	var ours, theirs, theirs256 time.Duration
	b.ResetTimer()
	for range b.N * nbdRounds {
		ours += dirtyReclaim(b, m, as, a, dev)
		theirs += runNbdcopy(b, copySrv, file, pg)
		theirs256 += runNbdcopy(b, copySrv, file, 256<<10)
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(b.N*nbdRounds) * bytes / d.Seconds() / 1e6 }
	reportPagesPerSec(b, b.N*nbdRounds*reclaimPages, ours)
	b.ReportMetric(mbps(ours), "MB/s")
	b.ReportMetric(mbps(theirs), "nbdcopy-MB/s")
	b.ReportMetric(mbps(theirs256), "nbdcopy-256KiB-MB/s")
	b.ReportMetric(mbps(ours)/mbps(theirs), "x_nbdcopy")
	b.ReportMetric(mbps(ours)/mbps(theirs256), "x_nbdcopy-256KiB")
}
