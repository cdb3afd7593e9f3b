//go:build linux

package mm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/blk/journal"
	"yolk/blk/nbd"
	"yolk/mm/phys"
	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
)

// Journaled regions on a real NBD server: nbdkit's memory plugin on
// loopback, one client connection with its defaults, the journal's log
// at block 0 (4 MiB), the region after it, and a raw area beyond both
// that the same client writes and reads directly, for comparison.

const (
	benchLogBlocks    = 1024
	benchRegionPages  = 1024
	benchRawStart     = benchLogBlocks + benchRegionPages
	benchServerBlocks = benchRawStart + 1024
)

type nbdRegion struct {
	m  *Manager
	c  *nbd.Client
	j  *journal.Journal
	r  *Region
	as *AddressSpace
	a  uint32
}

func newNBDRegion(b *testing.B, readahead int) *nbdRegion {
	if err := nbdserver.Available(nbdserver.NbdkitMemory); err != nil {
		if os.Getenv("CI") != "" {
			b.Fatal(err)
		}
		b.Skipf("%v (make deps installs it)", err)
	}
	srv := nbdservertest.Start(b, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: benchServerBlocks * phys.PageSize})
	c, err := nbd.Dial(context.Background(), nbd.Config{Addr: srv.Addr, Export: srv.Export})
	require.NoError(b, err)
	b.Cleanup(func() { c.Close() })
	require.NoError(b, journal.Format(c, journal.Layout{BlockSize: phys.PageSize, LogBlocks: benchLogBlocks}))
	jpool, err := phys.New(phys.Config{Mem: make([]byte, 4<<20), Base: 0x40000000})
	require.NoError(b, err)
	j, err := journal.Open(c, 0, phys.PageSize, journal.Config{Name: "bench", Pool: jpool})
	require.NoError(b, err)
	pool, err := phys.New(phys.Config{Mem: make([]byte, 16<<20), Base: 0x80000000})
	require.NoError(b, err)
	m, err := New(Config{Pool: pool})
	require.NoError(b, err)
	r, err := m.OpenRegion(RegionConfig{Name: "/dev/nbd0", Journal: j, Start: benchLogBlocks, Pages: benchRegionPages,
		WritebackInterval: -1, Readahead: readahead})
	require.NoError(b, err)
	as, err := m.NewAddressSpace()
	require.NoError(b, err)
	a, err := as.MmapRegion(0, benchRegionPages*pg, ProtRead|ProtWrite, MapShared, r, 0)
	require.NoError(b, err)
	b.Cleanup(func() {
		as.Exit()
		r.Close()
		j.Close()
		m.Close()
	})
	return &nbdRegion{m: m, c: c, j: j, r: r, as: as, a: a}
}

// BenchmarkMsyncNBD: one op stores into n pages of a shared mapping
// (not timed), msyncs them (one journal transaction: the pages, a
// descriptor and a commit block in one FUA write, and, whenever the
// 4 MiB log fills, the checkpoint that writes them home and flushes),
// then writes the same n pages' bytes to the raw area with one FUA
// write. Reports msync-us and fua-us per op and x_fua, their ratio (the
// goal: ≤ 1.2).
func BenchmarkMsyncNBD(b *testing.B) {
	for _, n := range []int{1, 16, 62} {
		b.Run(fmt.Sprintf("pages=%d", n), func(b *testing.B) {
			nr := newNBDRegion(b, 1)
			data := make([]byte, n*pg)
			for i := range data {
				data[i] = byte(rand.Uint32())
			}
			var tMsync, tRaw time.Duration
			b.ResetTimer()
			for i := range b.N {
				for k := range n {
					data[k*pg] = byte(i)
					require.NoError(b, nr.as.Write(nr.a+uint32(k)*pg, data[k*pg:(k+1)*pg]))
				}
				t0 := time.Now()
				require.NoError(b, nr.as.Msync(nr.a, uint32(n)*pg, MsSync))
				tMsync += time.Since(t0)
				t0 = time.Now()
				require.NoError(b, nr.c.WriteAt(data, benchRawStart*phys.PageSize, blk.FUA))
				tRaw += time.Since(t0)
			}
			b.StopTimer()
			b.ReportMetric(float64(tMsync.Microseconds())/float64(b.N), "msync-us")
			b.ReportMetric(float64(tRaw.Microseconds())/float64(b.N), "fua-us")
			b.ReportMetric(tMsync.Seconds()/tRaw.Seconds(), "x_fua")
			st := nr.j.Stats()
			b.ReportMetric(float64(st.Checkpoints), "checkpoints")
		})
	}
}

// BenchmarkRegionReadFaultNBD: one op is a read fault on a page of the
// region that is not cached (read-ahead off: one page a miss), through
// the journal to the server, then a raw read of a block of the raw
// area. Reports fault-us, read-us and x_read, their ratio.
func BenchmarkRegionReadFaultNBD(b *testing.B) {
	nr := newNBDRegion(b, 1)
	buf := make([]byte, pg)
	var tFault, tRaw time.Duration
	b.ResetTimer()
	for i := range b.N {
		idx := uint32(i % benchRegionPages)
		if idx == 0 && i > 0 {
			b.StopTimer()
			// Every page has been read: unmap and drop them all.
			require.NoError(b, nr.as.Munmap(nr.a, benchRegionPages*pg))
			require.Equal(b, benchRegionPages, nr.m.DropCaches())
			a, err := nr.as.MmapRegion(nr.a, benchRegionPages*pg, ProtRead|ProtWrite, MapShared|MapFixed, nr.r, 0)
			require.NoError(b, err)
			nr.a = a
			b.StartTimer()
		}
		t0 := time.Now()
		require.NoError(b, nr.as.Read(nr.a+idx*pg, buf[:1]))
		tFault += time.Since(t0)
		t0 = time.Now()
		require.NoError(b, nr.c.ReadAt(buf, int64(benchRawStart+idx%1024)*phys.PageSize))
		tRaw += time.Since(t0)
	}
	b.StopTimer()
	b.ReportMetric(float64(tFault.Microseconds())/float64(b.N), "fault-us")
	b.ReportMetric(float64(tRaw.Microseconds())/float64(b.N), "read-us")
	b.ReportMetric(tFault.Seconds()/tRaw.Seconds(), "x_read")
}
