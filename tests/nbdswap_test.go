package tests

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu"
	"yolk/runtime/result"
)

// nbdswapRun is one cell of the deadlock matrix: its exit status and the
// result lines it printed.
type nbdswapRun struct {
	code    int
	stdout  string
	said    string
	results []result.Line
}

func (r nbdswapRun) find(event string, kv ...string) (result.Line, bool) {
	run := qemu.Run{Results: r.results}
	return run.Find(event, kv...)
}

func (r nbdswapRun) tail() string {
	lines := strings.Split(r.stdout, "\n")
	return strings.Join(lines[max(0, len(lines)-50):], "\n") + "\n" + r.said
}

func (r nbdswapRun) num(t testing.TB, l result.Line, key string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(l.Value(key), 10, 64)
	require.NoError(t, err, "%s in %s", key, l)
	return v
}

// nbdswapFloodKBps is the UDP flood's rate in the matrix: a steady stream
// well above what the image can take in while it swaps.
const nbdswapFloodKBps = 512

func runNBDSwap(t testing.TB, img string, args ...string) nbdswapRun {
	t.Helper()
	start := time.Now()
	code, stdout, said := runHarness(t, append([]string{"-image", img, "-timeout", "180s", "scenario=nbdswap"}, args...)...)
	t.Logf("%s: exit %d in %v", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond))
	r := nbdswapRun{code: code, stdout: stdout, said: said}
	for _, l := range strings.Split(stdout, "\n") {
		if res, err := result.Parse(l); err == nil {
			r.results = append(r.results, res)
		}
	}
	return r
}

// The swap-over-NBD deadlock, shown and cured, on the image: the matrix of
// receive paths {off, alloc-then-drop, classify-first} by {no flood,
// flood}, each a working set twice a 4 MiB pool swapped to nbdkit.
//
//   - off: the NBD connection is an ordinary socket. With the flood the
//     watchdog must fire (exit 5): the flood's unread data holds the pool
//     at the atomic watermark and the server's replies are dropped.
//   - alloc-then-drop and classify-first complete byte-exact with no
//     frame of the NBD connection dropped.
//   - classify-first copies nothing it drops, and its reserve peak is no
//     higher than alloc-then-drop's under the same flood. Most of either
//     peak is the NBD connection's own frames, which vary from run to
//     run by more than the flood adds, so the comparison is of the
//     flood's part (reserve_peak_other): none for classify-first, the
//     frames alloc-then-drop copied into the reserve before dropping
//     them for the other.
func TestNBDSwapDeadlockMatrix(t *testing.T) {
	t.Parallel() // a long run: two QEMUs at a time, one per core (see TestMain)
	img := evkImage(t)
	type cell struct{ reserve, flood string }
	var cells []cell
	for _, reserve := range []string{"off", "alloc-then-drop", "classify-first"} {
		for _, flood := range []string{"0", fmt.Sprint(nbdswapFloodKBps)} {
			cells = append(cells, cell{reserve, flood})
		}
	}
	var mu sync.Mutex
	runs := map[cell]nbdswapRun{}
	t.Run("matrix", func(t *testing.T) {
		for _, c := range cells {
			t.Run(c.reserve+"/flood="+c.flood, func(t *testing.T) {
				t.Parallel()
				r := runNBDSwap(t, img, "reserve="+c.reserve, "flood_kbps="+c.flood)
				mu.Lock()
				runs[c] = r
				mu.Unlock()
				checkNBDSwapCell(t, c.reserve, c.flood != "0", r)
			})
		}
	})

	early, late := runs[cell{"classify-first", fmt.Sprint(nbdswapFloodKBps)}], runs[cell{"alloc-then-drop", fmt.Sprint(nbdswapFloodKBps)}]
	e, ok1 := early.find("nbdswap")
	l, ok2 := late.find("nbdswap")
	if ok1 && ok2 {
		assert.Zero(t, early.num(t, e, "reserve_peak_other"), "no frame of the flood in classify-first's reserve: %s", e)
		assert.NotZero(t, late.num(t, l, "reserve_peak_other"), "alloc-then-drop copied the flood into its reserve: %s", l)
		t.Logf("reserve peak under the flood: classify-first %s frames (%s of the flood's), alloc-then-drop %s (%s)",
			e.Value("reserve_peak"), e.Value("reserve_peak_other"), l.Value("reserve_peak"), l.Value("reserve_peak_other"))
	}
}

func checkNBDSwapCell(t *testing.T, reserve string, flood bool, r nbdswapRun) {
	if _, ok := r.find("flood"); ok != flood {
		t.Errorf("flood line present: %v, want %v", ok, flood)
	}
	wd, fired := r.find("watchdog")
	switch {
	case reserve == "off" && flood:
		require.Equal(t, 5, r.code, "the deadlock is reproduced: the watchdog ends the run\n%s", r.tail())
		require.True(t, fired, r.tail())
		assert.NotZero(t, r.num(t, wd, "rx_drop_wmark"), "the server's replies were dropped at the watermark: %s", wd)
		assert.LessOrEqual(t, r.num(t, wd, "free_kb"), r.num(t, wd, "min_kb"), "%s", wd)
		t.Logf("%s", wd)
		return
	case reserve == "off":
		// Without the flood nothing holds the pool below min for long:
		// the run may get through, or the watchdog may still catch it.
		require.Contains(t, []int{0, 5}, r.code, r.tail())
		if r.code == 5 {
			require.True(t, fired, r.tail())
			t.Logf("reserve=off without a flood stalled too: %s", wd)
			return
		}
	default:
		require.Equal(t, 0, r.code, r.tail())
	}
	require.False(t, fired, "the watchdog fired on a run that passed: %s", wd)
	assert.NotContains(t, r.stdout, "ok=false", r.tail())
	want := []string{"pressure-data", "pressure-swapped", "pressure-no-leak", "rx-charges-zero", "rx-reserve-bound"}
	if reserve != "off" {
		want = append(want, "rx-memalloc-drops")
	}
	if reserve == "classify-first" {
		want = append(want, "rx-no-alloc-for-drops")
	}
	for _, c := range want {
		l, ok := r.find("check", "name", c)
		if assert.True(t, ok, "no check %s:\n%s", c, r.tail()) {
			assert.Equal(t, "true", l.Value("ok"), "%s", l)
		}
	}
	s, ok := r.find("nbdswap")
	require.True(t, ok, r.tail())
	if reserve != "off" {
		assert.NotZero(t, r.num(t, s, "memalloc_frames"), "%s", s)
	}
	if reserve != "off" {
		assert.Zero(t, r.num(t, s, "memalloc_drops"), "no frame of the NBD connection dropped: %s", s)
	}
	if reserve == "classify-first" {
		assert.Zero(t, r.num(t, s, "alloc_then_dropped"), "%s", s)
	}
	if flood {
		assert.NotZero(t, r.num(t, s, "dropped"), "the flood met the watermark: %s", s)
		if reserve == "alloc-then-drop" {
			assert.NotZero(t, r.num(t, s, "alloc_then_dropped"), "Linux's way copies what it drops: %s", s)
		}
	}
	assert.LessOrEqual(t, r.num(t, s, "reserve_peak"), r.num(t, s, "reserve_bound"), "%s", s)
	assert.Contains(t, r.stdout, "yolk: proc file=/proc/net/yolk_rx ")
	t.Logf("%s", s)
}
