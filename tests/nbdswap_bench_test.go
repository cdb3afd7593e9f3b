package tests

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// Andrew Morton asked in 2006 how much reserve is enough. This sweep
// answers it for yolk's 4 MiB nbdswap pool: for each receive path and
// two flood rates, the smallest vm.min_free_kbytes (of 64 to 2048) at
// which a working set twice the pool swaps to NBD to the end,
// byte-exact, without the watchdog firing and, where the NBD connection
// is memalloc, without a frame of it dropped. A variant that falls short
// at every size reports 4096 ("> 2048" in the table). Reported per cell
// as min_free_kb_<reserve>_<rate>kbps; the table is printed for the
// README.
//
// The rates are the UDP stream's (64 and 512 KiB/s), on top of the
// deadlock matrix's sixteen TCP streams. A higher UDP rate costs too
// much here: at 4 MiB/s the emulated core spends most of its time
// taking datagrams in, and a run that completes takes two minutes
// instead of thirty seconds.
//
// The search assumes a run that completes at one size completes at any
// larger one, and goes from the end nearer the answer, to keep make
// bench in its budget: for the memalloc ways upwards from 64, where they
// complete; for reserve=off downwards from 2048, since with an ordinary
// socket a run completes only when the flood's unread data fits above
// the atomic watermark, and a run that stalls costs its watchdog's few
// seconds where one that completes costs thirty.
func BenchmarkNBDSwapMinFreeSweep(b *testing.B) {
	img := evkImage(b)
	sizes := []int{64, 128, 256, 512, 1024, 2048}
	reserves := []string{"off", "alloc-then-drop", "classify-first"}
	rates := []int{64, nbdswapFloodKBps}
	type cell struct {
		reserve string
		rate    int
	}
	// passes runs one cell at one size and reports whether it completed.
	passes := func(c cell, kb int) bool {
		r := runNBDSwap(b, img, "reserve="+c.reserve, fmt.Sprintf("flood_kbps=%d", c.rate),
			fmt.Sprintf("min_free_kbytes=%d", kb), "watchdog=6")
		if r.code == 0 {
			return true
		}
		if s, ok := r.find("nbdswap"); ok && r.code == 1 {
			b.Logf("fell short: %s", s)
		}
		if !r.fellShort() {
			b.Errorf("%s at %d KiB/s, min_free_kbytes=%d: exit %d, neither a pass, a stall nor dropped NBD frames\n%s", c.reserve, c.rate, kb, r.code, r.tail())
		}
		return false
	}
	const never = 4096
	search := func(c cell) int {
		if c.reserve == "off" {
			got := never
			for i := len(sizes) - 1; i >= 0 && passes(c, sizes[i]); i-- {
				got = sizes[i]
			}
			return got
		}
		for _, kb := range sizes {
			if passes(c, kb) {
				return kb
			}
		}
		return never
	}
	for range b.N {
		found := map[cell]int{}
		var mu sync.Mutex
		work := make(chan cell)
		var wg sync.WaitGroup
		for range 2 { // two QEMUs at a time, one per core
			wg.Add(1)
			go func() {
				defer wg.Done()
				for c := range work {
					kb := search(c)
					mu.Lock()
					found[c] = kb
					mu.Unlock()
				}
			}()
		}
		for _, res := range reserves {
			for _, rate := range rates {
				work <- cell{res, rate}
			}
		}
		close(work)
		wg.Wait()

		var t strings.Builder
		t.WriteString("| receive path |")
		for _, rate := range rates {
			fmt.Fprintf(&t, " flood %d KiB/s |", rate)
		}
		t.WriteString("\n|---|" + strings.Repeat("---|", len(rates)) + "\n")
		for _, res := range reserves {
			fmt.Fprintf(&t, "| %s |", res)
			for _, rate := range rates {
				kb := found[cell{res, rate}]
				v := fmt.Sprintf("%d", kb)
				if kb == never {
					v = fmt.Sprintf("> %d", sizes[len(sizes)-1])
				}
				fmt.Fprintf(&t, " %s |", v)
				b.ReportMetric(float64(kb), fmt.Sprintf("min_free_kb_%s_%dkbps", res, rate))
			}
			t.WriteString("\n")
		}
		fmt.Printf("smallest min_free_kbytes at which nbdswap completes (4 MiB pool, working set 8 MiB):\n%s", t.String())
	}
}

// fellShort reports whether a run that did not pass failed only in the
// ways a reserve too small for the flood explains: the watchdog fired
// (exit 5), or the run completed with frames of the NBD connection
// dropped and every other check passed.
func (r nbdswapRun) fellShort() bool {
	if r.code == 5 {
		return true
	}
	if r.code != 1 {
		return false
	}
	failed := 0
	for _, l := range r.results {
		if l.Event == "check" && l.Value("ok") == "false" {
			if l.Value("name") != "rx-memalloc-drops" {
				return false
			}
			failed++
		}
	}
	return failed == 1
}
