package phys

import (
	"runtime"
	"testing"
	"time"
)

// benchPool is a pool the size of the image's (380 MiB).
func benchPool(b *testing.B) *Pool {
	b.Helper()
	p, err := New(Config{Mem: make([]byte, 380<<20), Base: testBase})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkAllocFree: one op is an order-0 allocation and its free (the
// fault path's cost), on one goroutine; the pool is made before the timed
// loop. Reports ns/alloc-free. Target: at most 40 ns on the development
// host.
func BenchmarkAllocFree(b *testing.B) {
	p := benchPool(b)
	for b.Loop() {
		f, err := p.AllocPage(Kernel)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Free(f, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/alloc-free")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkAllocFreeParallel: one op is the same pair, with one goroutine
// per P (both cores) doing pairs at once: the cost of sharing the pool
// lock. The pool is made before the timer starts. Reports ns/alloc-free,
// the time one pair takes on each core while the others do the same
// (elapsed × goroutines / pairs; compare with BenchmarkAllocFree), and
// ns/op, Go's RunParallel figure: elapsed / pairs, all cores together.
func BenchmarkAllocFreeParallel(b *testing.B) {
	p := benchPool(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f, err := p.AllocPage(Kernel)
			if err != nil {
				b.Error(err)
				return
			}
			if err := p.Free(f, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())*float64(runtime.GOMAXPROCS(0))/float64(b.N), "ns/alloc-free")
}

// BenchmarkAllocFreeHuge: one op is a 1 MiB compound page (order 8: head
// and 255 tails set up and torn down) allocated and freed. Reports
// ns/alloc-free.
func BenchmarkAllocFreeHuge(b *testing.B) {
	p := benchPool(b)
	for b.Loop() {
		f, err := p.Alloc(HugeOrder, Kernel|Compound)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Put(f); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/alloc-free")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkZeroedPage compares an order-0 allocation that zeroes its
// frame, and its free, with a plain 4 KiB clear of the same memory, in
// the same run. The frame is the same every time (the pageset is LIFO),
// so both clear a cache-hot frame: the ratio is the allocator's overhead
// on top of the clear it cannot avoid. One op is 256 zeroed
// allocation + free pairs and 256 clears. Reports ns/zeroed-alloc-free
// (one pair), ns/clear (one 4 KiB clear) and x-clear, their ratio.
func BenchmarkZeroedPage(b *testing.B) {
	p := benchPool(b)
	f, err := p.AllocPage(Kernel)
	if err != nil {
		b.Fatal(err)
	}
	mem, _ := p.Frame(f)
	clear(mem) // the host faults it in before the timing
	if err := p.Free(f, 0); err != nil {
		b.Fatal(err)
	}
	var zeroed, plain time.Duration
	for b.Loop() {
		start := time.Now()
		for range 256 {
			g, err := p.AllocPage(Kernel | Zeroed)
			if err != nil || g != f {
				b.Fatalf("got %v (%v), want the hot frame %v", g, err, f)
			}
			if err := p.Free(g, 0); err != nil {
				b.Fatal(err)
			}
		}
		mid := time.Now()
		for range 256 {
			clear(mem)
		}
		zeroed += mid.Sub(start)
		plain += time.Since(mid)
	}
	reportZeroing(b, zeroed, plain, 256)
}

// BenchmarkZeroedFaultIn allocates 4 MiB of zeroed frames one at a time,
// as faulting in a fresh 4 MiB region does, frees them, and compares with
// clearing the same frames: memory that is not all in cache, so the clear
// costs what it does in a real fault. One op is 1024 zeroed allocations,
// their frees and 1024 clears. Reports the same metrics as
// BenchmarkZeroedPage, per frame.
func BenchmarkZeroedFaultIn(b *testing.B) {
	const frames = 1024
	p := benchPool(b)
	pfns := make([]PFN, frames)
	var zeroed, plain time.Duration
	round := func() {
		start := time.Now()
		for k := range pfns {
			f, err := p.AllocPage(Kernel | Zeroed)
			if err != nil {
				b.Fatal(err)
			}
			pfns[k] = f
		}
		for _, f := range pfns {
			if err := p.Free(f, 0); err != nil {
				b.Fatal(err)
			}
		}
		mid := time.Now()
		for _, f := range pfns {
			mem, _ := p.Frame(f)
			clear(mem)
		}
		zeroed += mid.Sub(start)
		plain += time.Since(mid)
	}
	round() // warm-up: the host faults these frames in once
	zeroed, plain = 0, 0
	for b.Loop() {
		round()
	}
	reportZeroing(b, zeroed, plain, frames)
}

// reportZeroing reports ns per zeroed allocation + free and per clear, and
// their ratio, and hides ns/op (which is both, per times).
func reportZeroing(b *testing.B, zeroed, plain time.Duration, per int) {
	n := float64(b.N) * float64(per)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(zeroed.Nanoseconds())/n, "ns/zeroed-alloc-free")
	b.ReportMetric(float64(plain.Nanoseconds())/n, "ns/clear")
	b.ReportMetric(float64(zeroed)/float64(plain), "x-clear")
}
