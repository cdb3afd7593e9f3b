package mm

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Benchmarks for the huge page figures in the README, each beside the same
// operation on the Linux this runs on, measured in the same run:
//
//   - BenchmarkHugeFault: ns per huge fault and its ratio to zeroing 1 MiB
//     (x_zero, target ≤ 1.15); Linux's THP fault and its ratio to zeroing
//     its own huge page size.
//   - BenchmarkMadvFreeSection: ns to MADV_FREE one whole dirty section
//     (target ≤ 1 µs); Linux's per whole THP.
//   - BenchmarkMadvFreePages: ns per 4 KiB page of MADV_FREE over dirty
//     small pages (target ≤ 80 ns); Linux's likewise.
//
// Linux's figures come from anonymous memory of this process, advised
// MADV_HUGEPAGE or MADV_NOHUGEPAGE; where the host has no THP they are
// left out, and the benchmark logs why.

const benchSections = 64

// stopwatch adds up the time of the operations a benchmark measures, for
// benchmarks whose operations each need set-up that costs far more than
// they do (redirtying what MADV_FREE cleaned: about two microseconds a
// section against a tenth of one). b.N is then scaled on the whole loop,
// so a one-second benchtime costs about a second; with b.StopTimer around
// the set-up it would be scaled on the measured part alone and cost some
// twenty. Each lap is a batch of operations, microseconds long, so that
// time.Now's own cost does not count.
type stopwatch struct {
	total time.Duration
	start time.Time
}

func (w *stopwatch) Start() { w.start = time.Now() }
func (w *stopwatch) Stop()  { w.total += time.Since(w.start) }

// per is the measured time per unit, over n units.
func (w *stopwatch) per(n int) float64 { return float64(w.total.Nanoseconds()) / float64(n) }

func hugeBenchManager(b *testing.B) (*Manager, *AddressSpace, uint32) {
	m := benchManager(b, 100)
	require.NoError(b, m.SetTHPEnabled(THPAlways))
	as, err := m.NewAddressSpace()
	require.NoError(b, err)
	a, err := as.Mmap(0, benchSections*sec, ProtRead|ProtWrite, 0)
	require.NoError(b, err)
	require.Zero(b, a%sec)
	return m, as, a
}

func BenchmarkHugeFault(b *testing.B) {
	m, as, a := hugeBenchManager(b)
	one := []byte{1}
	remap := func() {
		require.NoError(b, as.Munmap(a, benchSections*sec))
		_, err := as.Mmap(a, benchSections*sec, ProtRead|ProtWrite, MapFixed)
		require.NoError(b, err)
	}
	// Warm-up: the host faults the pool's memory in once.
	for i := uint32(0); i < benchSections; i++ {
		require.NoError(b, as.Write(a+i*sec, one))
	}
	remap()
	allocs := vmstatB(b, m, "thp_fault_alloc")
	i := uint32(0)
	b.ResetTimer()
	for range b.N {
		if i == benchSections {
			b.StopTimer()
			remap()
			i = 0
			b.StartTimer()
		}
		if err := as.Write(a+i*sec, one); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	fault := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	if got := vmstatB(b, m, "thp_fault_alloc") - allocs; got != uint64(b.N) {
		b.Fatalf("%d huge faults for %d writes", got, b.N)
	}
	// Zeroing 1 MiB, cycling through as much memory as the faults did.
	buf := make([]byte, benchSections*sec)
	clear(buf)
	start := time.Now()
	for k := range b.N {
		off := k % benchSections * sec
		clear(buf[off : off+sec])
	}
	zero := float64(time.Since(start).Nanoseconds()) / float64(b.N)
	b.ReportMetric(fault, "ns/fault")
	b.ReportMetric(zero, "ns/zero-1MiB")
	b.ReportMetric(fault/zero, "x_zero")
	b.ReportMetric(0, "ns/op")
	if l, ok := linuxTHP(b); ok {
		lf, lz := l.fault(b)
		b.ReportMetric(lf, "linux-ns/fault")
		b.ReportMetric(lf/lz, "linux-x_zero")
	}
	require.NoError(b, as.Exit())
}

func BenchmarkMadvFreeSection(b *testing.B) {
	m, as, a := hugeBenchManager(b)
	one := []byte{1}
	redirty := func() {
		for i := uint32(0); i < benchSections; i++ {
			require.NoError(b, as.Write(a+i*sec, one))
		}
	}
	redirty()
	splits := vmstatB(b, m, "thp_split_pmd")
	var w stopwatch
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := uint32(min(benchSections, b.N-done))
		w.Start()
		for i := range n {
			if err := as.Madvise(a+i*sec, sec, MadvFree); err != nil {
				b.Fatal(err)
			}
		}
		w.Stop()
		redirty()
		done += int(n)
	}
	b.StopTimer()
	if got := vmstatB(b, m, "thp_split_pmd") - splits; got != 0 {
		b.Fatalf("MADV_FREE of whole sections split %d of them", got)
	}
	b.ReportMetric(w.per(b.N), "ns/section")
	b.ReportMetric(0, "ns/op")
	if l, ok := linuxTHP(b); ok {
		b.ReportMetric(l.madvFree(b, true), "linux-ns/hugepage")
	}
	require.NoError(b, as.Exit())
}

func BenchmarkMadvFreePages(b *testing.B) {
	m := benchManager(b, 32)
	as, err := m.NewAddressSpace()
	require.NoError(b, err)
	const pages = 1024
	a, err := as.Mmap(0, pages*pg, ProtRead|ProtWrite, 0)
	require.NoError(b, err)
	touch(b, as, a, pages*pg)
	var w stopwatch
	b.ResetTimer()
	for range b.N {
		w.Start()
		if err := as.Madvise(a, pages*pg, MadvFree); err != nil {
			b.Fatal(err)
		}
		w.Stop()
		touch(b, as, a, pages*pg)
	}
	b.StopTimer()
	b.ReportMetric(w.per(b.N*pages), "ns/page")
	b.ReportMetric(0, "ns/op")
	if l, ok := linuxTHP(b); ok || l.size != 0 {
		b.ReportMetric(l.madvFree(b, false), "linux-ns/page")
	}
	require.NoError(b, as.Exit())
}

func vmstatB(b *testing.B, m *Manager, name string) uint64 {
	v, ok := m.VmstatValue(name)
	require.True(b, ok, name)
	return v
}
