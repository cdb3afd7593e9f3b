package mm

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"yolk/mm/phys"
)

// Benchmarks for issue 4's figures, in the units it sets: ns per page for
// first-touch faults, fork and COW break over 64 MiB; ns per cycle for a
// small mmap-write-munmap; ns per extra mapper for unmapping a page from a
// fork tree. Setup and teardown run with the timer stopped.

const benchRegion = 64 << 20

func benchManager(b *testing.B, mib int) *Manager {
	pool, err := phys.New(phys.Config{Mem: make([]byte, mib<<20), Base: 0x80000000})
	require.NoError(b, err)
	m, err := New(Config{Pool: pool})
	require.NoError(b, err)
	return m
}

// touch writes one byte to every page of [addr, addr+size).
func touch(b *testing.B, as *AddressSpace, addr, size uint32) {
	one := []byte{1}
	for off := uint32(0); off < size; off += pg {
		if err := as.Write(addr+off, one); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFirstTouchFault(b *testing.B) {
	m := benchManager(b, 80)
	pages := float64(benchRegion / pg)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		as, _ := m.NewAddressSpace()
		a, err := as.Mmap(0, benchRegion, ProtRead|ProtWrite, 0)
		require.NoError(b, err)
		b.StartTimer()
		touch(b, as, a, benchRegion)
		b.StopTimer()
		require.NoError(b, as.Exit())
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/pages, "ns/page")
}

func populated(b *testing.B, m *Manager) (*AddressSpace, uint32) {
	as, _ := m.NewAddressSpace()
	a, err := as.Mmap(0, benchRegion, ProtRead|ProtWrite, 0)
	require.NoError(b, err)
	touch(b, as, a, benchRegion)
	return as, a
}

func BenchmarkFork(b *testing.B) {
	m := benchManager(b, 80)
	parent, _ := populated(b, m)
	b.ResetTimer()
	for range b.N {
		child, err := parent.Fork()
		require.NoError(b, err)
		b.StopTimer()
		require.NoError(b, child.Exit())
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(benchRegion/pg), "ns/page")
}

func BenchmarkCOWBreak(b *testing.B) {
	m := benchManager(b, 160)
	parent, a := populated(b, m)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		child, err := parent.Fork()
		require.NoError(b, err)
		b.StartTimer()
		touch(b, child, a, benchRegion)
		b.StopTimer()
		require.NoError(b, child.Exit())
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(benchRegion/pg), "ns/page")
}

func BenchmarkMmapWriteMunmap64K(b *testing.B) {
	m := benchManager(b, 16)
	as, _ := m.NewAddressSpace()
	one := []byte{1}
	for range b.N {
		a, err := as.Mmap(0, 64<<10, ProtRead|ProtWrite, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := as.Write(a, one); err != nil {
			b.Fatal(err)
		}
		if err := as.Munmap(a, 64<<10); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/cycle")
}

// BenchmarkUnmapFromMappers unmaps pages mapped by every address space of
// a fork tree of N spaces (each space forks a random earlier one). The
// figure that matters is the cost of each extra mapper: (t(N) - t(1)) /
// (N - 1), with t(1) from the first sub-benchmark.
func BenchmarkUnmapFromMappers(b *testing.B) {
	var t1 float64
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			const pages = 256
			m := benchManager(b, 64)
			var (
				spaces []*AddressSpace
				addr   uint32
				next   int
			)
			build := func() {
				for _, as := range spaces {
					require.NoError(b, as.Exit())
				}
				root, _ := m.NewAddressSpace()
				a, err := root.Mmap(0, pages*pg, ProtRead|ProtWrite, 0)
				require.NoError(b, err)
				touch(b, root, a, pages*pg)
				spaces, addr, next = []*AddressSpace{root}, a, 0
				for len(spaces) < n {
					c, err := spaces[(len(spaces)*7919)%len(spaces)].Fork()
					require.NoError(b, err)
					spaces = append(spaces, c)
				}
			}
			build()
			pfns := make([]phys.PFN, pages)
			resolve := func() {
				for i := range pfns {
					pfn, ok := spaces[0].FollowPage(addr + uint32(i)*pg)
					require.True(b, ok)
					m.pool.Page(pfn).Set(phys.PGLocked)
					pfns[i] = pfn
				}
			}
			resolve()
			b.ResetTimer()
			for range b.N {
				if next == pages {
					b.StopTimer()
					build()
					resolve()
					b.StartTimer()
				}
				pfn := pfns[next]
				next++
				ok, err := m.TryToUnmap(pfn, nil)
				if err != nil || !ok {
					b.Fatal(ok, err)
				}
				b.StopTimer()
				m.pool.Page(pfn).Clear(phys.PGLocked)
				m.pool.Put(pfn)
				b.StartTimer()
			}
			per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.StopTimer()
			for _, i := range pfns[next:] {
				m.pool.Page(i).Clear(phys.PGLocked)
				m.pool.Put(i)
			}
			for _, as := range spaces {
				as.Exit()
			}
			if n == 1 {
				t1 = per
				return
			}
			b.ReportMetric(per/float64(n), "ns/mapper")
			if t1 > 0 {
				b.ReportMetric((per-t1)/float64(n-1), "ns/extra-mapper")
			}
		})
	}
}
