//go:build linux

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
