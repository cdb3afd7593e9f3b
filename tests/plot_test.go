package tests

import (
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu"
	"yolk/qemu/plot"
	"yolk/runtime/result"
)

// A pressure run plotted by the harness (-plot FILE): the harness says
// where the PNG is and how many stat lines it drew, the PNG is one, and
// the CSV beside it holds exactly the stat lines the console showed, so
// the figure built from it is the run's: a point per stat line, the last
// free_kb the last line's, the swap rates adding up to the counters. A
// pressure run has no receive path, so its figure leaves those panels
// out rather than drawing zeros. About 25 s under QEMU.
func TestHarnessPlotsAPressureRun(t *testing.T) {
	t.Parallel() // a long run: two QEMUs at a time, one per core (see TestMain)
	img := evkImage(t)
	file := filepath.Join(t.TempDir(), "pressure.png")
	start := time.Now()
	code, stdout, said := runHarness(t, "-image", img, "-timeout", "150s", "-plot", file, "scenario=pressure")
	t.Logf("harness: %v, %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(said))
	require.Equal(t, 0, code, said)

	var results, stats []result.Line
	for _, l := range strings.Split(stdout, "\n") {
		if r, err := result.Parse(l); err == nil {
			results = append(results, r)
			if r.Event == plot.Event {
				stats = append(stats, r)
			}
		}
	}
	require.Greater(t, len(stats), 5, "a stat line a second")
	csvFile := strings.TrimSuffix(file, ".png") + ".csv"
	assert.Contains(t, said, "yolk-qemu: plot of "+strconv.Itoa(len(stats))+" stat lines in "+file+", data in "+csvFile+"\n")

	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	pic, err := png.Decode(f)
	require.NoError(t, err)

	data, err := os.Open(csvFile)
	require.NoError(t, err)
	defer data.Close()
	table, err := plot.ReadCSV(data)
	require.NoError(t, err)
	fig, err := plot.Build(plot.Title(results), table)
	require.NoError(t, err)
	w, h := plot.Size(len(fig.Panels))
	assert.Equal(t, w, pic.Bounds().Dx())
	assert.Equal(t, h, pic.Bounds().Dy())

	assert.Equal(t, len(stats), fig.Lines)
	assert.Regexp(t, regexp.MustCompile(`^yolk scenario=pressure pool=4 ws=200 rounds=2\b`), fig.Title)
	assert.Len(t, fig.Panels, 4, "free memory, LRU, swap in use, swap I/O")
	assert.Equal(t, []string{"page cache (journaled regions)", "block I/O", "receive memory", "receive drops, cumulative"}, fig.Absent,
		"no region and no receive path in a pressure run")
	for _, p := range fig.Panels {
		assert.Empty(t, p.Missing, "the pressure stat line has every field of %s", p.Title)
	}
	last := stats[len(stats)-1]
	value := func(l result.Line, key string) float64 {
		t.Helper()
		v, err := strconv.ParseFloat(l.Value(key), 64)
		require.NoError(t, err, "%s in %s", key, l)
		return v
	}
	for _, key := range []string{"free_kb", "min_kb", "high_kb", "active_kb", "inactive_kb", "lazyfree_kb", "swap_used_kb"} {
		s, ok := fig.Series(key)
		require.True(t, ok, key)
		require.Len(t, s.XYs, len(stats), key)
		assert.Equal(t, value(last, key), s.XYs[len(s.XYs)-1].Y, "last %s", key)
		assert.Equal(t, value(last, plot.TimeKey)/1000, s.XYs[len(s.XYs)-1].X, key)
	}
	free, _ := fig.Series("free_kb")
	low, _ := fig.Series("low_kb")
	dipped := false
	for i := range free.XYs {
		dipped = dipped || free.XYs[i].Y <= low.XYs[i].Y*2
	}
	assert.True(t, dipped, "a working set twice the pool brings free memory down to its watermarks")

	p, ok := (&qemu.Run{Results: results}).Find("pressure")
	require.True(t, ok)
	for _, key := range []string{"pswpout", "pswpin"} {
		s, ok := fig.Series(key)
		require.True(t, ok, key)
		require.Len(t, s.XYs, len(stats)-1, key)
		sum, prev := 0.0, value(stats[0], plot.TimeKey)/1000
		for _, xy := range s.XYs {
			sum += xy.Y * (xy.X - prev)
			prev = xy.X
		}
		assert.InDelta(t, value(last, key)-value(stats[0], key), sum, 1e-6, key)
		assert.NotZero(t, sum, "the run swapped: %s", p)
		assert.LessOrEqual(t, value(last, key), value(p, key), "the last stat line comes before the summary")
	}
}
