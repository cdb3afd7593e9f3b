package mm

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// Benchmarks for the huge page issue's figures, each beside the same
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
	i := uint32(0)
	b.ResetTimer()
	for range b.N {
		if i == benchSections {
			b.StopTimer()
			redirty()
			i = 0
			b.StartTimer()
		}
		if err := as.Madvise(a+i*sec, sec, MadvFree); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	if got := vmstatB(b, m, "thp_split_pmd") - splits; got != 0 {
		b.Fatalf("MADV_FREE of whole sections split %d of them", got)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/section")
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
	b.ResetTimer()
	for range b.N {
		if err := as.Madvise(a, pages*pg, MadvFree); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		touch(b, as, a, pages*pg)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/pages, "ns/page")
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

// The host's Linux, for the figures beside ours.

type linuxMM struct{ size int } // its THP size, 0 if unknown

const (
	madvFree       = 8
	madvHugepage   = 14
	madvNohugepage = 15
	linuxRounds    = 64
)

// linuxTHP reports the host's THP size, and whether MADV_HUGEPAGE can give
// huge pages here.
func linuxTHP(b *testing.B) (linuxMM, bool) {
	raw, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")
	if err != nil {
		b.Logf("no Linux THP figures: %v", err)
		return linuxMM{size: os.Getpagesize() * 512}, false
	}
	size, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || size <= 0 {
		b.Logf("no Linux THP figures: hpage_pmd_size %q", raw)
		return linuxMM{}, false
	}
	mode, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if strings.Contains(string(mode), "[never]") {
		b.Logf("no Linux THP figures: transparent_hugepage/enabled is %q", strings.TrimSpace(string(mode)))
		return linuxMM{size: size}, false
	}
	return linuxMM{size: size}, true
}

// area maps n huge pages' worth of anonymous memory, aligned to the huge
// page size, advised as asked; unmap releases it.
func (l linuxMM) area(b *testing.B, n int, huge bool) ([]byte, func()) {
	raw, err := syscall.Mmap(-1, 0, (n+1)*l.size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	require.NoError(b, err)
	off := (l.size - int(uintptr(unsafe.Pointer(&raw[0])))%l.size) % l.size
	mem := raw[off : off+n*l.size]
	advice := madvNohugepage
	if huge {
		advice = madvHugepage
	}
	require.NoError(b, syscall.Madvise(mem, advice))
	return mem, func() { syscall.Munmap(raw) }
}

// fault times Linux's first write to each of linuxRounds fresh huge pages,
// and zeroing that much memory, per huge page.
func (l linuxMM) fault(b *testing.B) (fault, zero float64) {
	mem, unmap := l.area(b, linuxRounds, true)
	start := time.Now()
	for k := 0; k < linuxRounds; k++ {
		mem[k*l.size] = 1
	}
	fault = float64(time.Since(start).Nanoseconds()) / linuxRounds
	if !l.huge(mem) {
		b.Logf("Linux gave no huge pages: its fault figure is for small pages")
	}
	start = time.Now()
	for k := 0; k < linuxRounds; k++ {
		clear(mem[k*l.size : (k+1)*l.size])
	}
	zero = float64(time.Since(start).Nanoseconds()) / linuxRounds
	unmap()
	return fault, zero
}

// madvFree times Linux's MADV_FREE: of each whole huge page (huge), or
// per page of a small-page area.
func (l linuxMM) madvFree(b *testing.B, huge bool) float64 {
	const areas = 4
	mem, unmap := l.area(b, areas, huge)
	defer unmap()
	page := os.Getpagesize()
	dirty := func() {
		step := page
		if huge {
			step = l.size
		}
		for off := 0; off < len(mem); off += step {
			mem[off] = 1
		}
	}
	var total time.Duration
	var n int
	for range linuxRounds / areas {
		dirty()
		if huge {
			for k := 0; k < areas; k++ {
				start := time.Now()
				require.NoError(b, syscall.Madvise(mem[k*l.size:(k+1)*l.size], madvFree))
				total += time.Since(start)
				n++
			}
			continue
		}
		start := time.Now()
		require.NoError(b, syscall.Madvise(mem, madvFree))
		total += time.Since(start)
		n += len(mem) / page
	}
	return float64(total.Nanoseconds()) / float64(n)
}

// huge reports whether the kernel backs mem with huge pages
// (AnonHugePages in this process's smaps_rollup).
func (l linuxMM) huge(mem []byte) bool {
	raw, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "AnonHugePages:" {
			kb, _ := strconv.Atoi(f[1])
			return kb > 0
		}
	}
	return false
}
