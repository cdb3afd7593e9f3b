package tests

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// gormanArgs is Mel Gorman's test as nbdswap parameters: a working set of
// four times a 4 MiB pool, in eight address spaces (he ran 8 × NUM_CPU
// processes, and the board has one core), five of them writers of an
// area of their own, through two rounds of writing every page and reading
// every byte back.
var gormanArgs = []string{"pool=4", "ws=400", "spaces=8", "rounds=2"}

// gormanCell is one run of the test: its name in the figures, and what it
// adds to gormanArgs.
type gormanCell struct {
	name string
	args []string
}

var gormanCells = []gormanCell{
	{"quiet", []string{"flood_kbps=0"}},
	{"flood", []string{fmt.Sprintf("flood_kbps=%d", nbdswapFloodKBps)}},
}

// gormanFigures are what one run reports, in the order of the README's
// table: the workload's elapsed time (boot and the final checks left
// out), the swap traffic (and how much of what came in was read ahead
// of a fault), the network's reserve peak in frames, and the frames the
// receive path dropped: all of them, those at the watermark, and those
// of the NBD connection.
var gormanFigures = []struct {
	event, key, unit, column string
}{
	{"pressure", "elapsed_ms", "s", "elapsed"},
	{"pressure", "pswpout", "pswpout", "pswpout"},
	{"pressure", "pswpin", "pswpin", "pswpin"},
	{"pressure", "swap_ra", "swap_ra", "of which read ahead"},
	{"nbdswap", "reserve_peak", "reserve_peak_frames", "reserve peak (frames)"},
	{"nbdswap", "dropped", "drops", "drops"},
	{"nbdswap", "drop_watermark", "drops_watermark", "at the watermark"},
	{"nbdswap", "memalloc_drops", "drops_nbd", "of the NBD connection"},
}

// Mel Gorman tested his swap-over-NBD series (Linux 3.6) on a machine
// whose only swap was an NBD device: processes that each write an
// anonymous mapping in a loop, four times physical memory in all. Without
// the series the machine locked up within minutes; with it the test ran
// to completion. BenchmarkGorman is that test on the image: nbdswap with
// gormanArgs and the receive path's default, classify-first, without a
// flood and under the deadlock matrix's 512 KiB/s one.
//
// One op is both runs at once, two QEMUs, one per core. Each figure is
// reported per run as UNIT_RUN (s_quiet, pswpout_flood, ...), and the
// table is printed for the README. A run that does not complete
// byte-exact fails the benchmark: the test is that it finishes.
func BenchmarkGorman(b *testing.B) {
	img := evkImage(b)
	// The harness is built here, on the benchmark's goroutine, where a
	// failure may stop it; the runs' goroutines only start it.
	harness(b)
	b.ReportMetric(0, "ns/op") // minutes, and mostly the emulator's
	for range b.N {
		runs := make([]nbdswapRun, len(gormanCells))
		var wg sync.WaitGroup
		for i, c := range gormanCells {
			wg.Go(func() { runs[i] = runNBDSwap(b, img, append(append([]string{}, gormanArgs...), c.args...)...) })
		}
		wg.Wait()

		var t strings.Builder
		t.WriteString("| run |")
		for _, f := range gormanFigures {
			fmt.Fprintf(&t, " %s |", f.column)
		}
		t.WriteString("\n|---|" + strings.Repeat("---|", len(gormanFigures)) + "\n")
		for i, c := range gormanCells {
			r := runs[i]
			if r.code != 0 {
				b.Errorf("%s: exit %d: Gorman's test did not complete byte-exact\n%s", c.name, r.code, r.tail())
				continue
			}
			for _, ev := range []string{"pressure", "nbdswap"} {
				if l, ok := r.find(ev); ok {
					b.Logf("%s: %s", c.name, l)
				}
			}
			fmt.Fprintf(&t, "| %s |", c.name)
			for _, f := range gormanFigures {
				l, ok := r.find(f.event)
				if !ok {
					b.Fatalf("%s: no %s line\n%s", c.name, f.event, r.tail())
				}
				n := r.num(b, l, f.key)
				v, cell := float64(n), fmt.Sprint(n)
				if f.key == "elapsed_ms" {
					v /= 1000
					cell = fmt.Sprintf("%.1f s", v)
				}
				b.ReportMetric(v, f.unit+"_"+c.name)
				fmt.Fprintf(&t, " %s |", cell)
			}
			t.WriteString("\n")
		}
		fmt.Printf("Gorman's test on the image (%s, classify-first):\n%s", strings.Join(gormanArgs, " "), t.String())
	}
}
