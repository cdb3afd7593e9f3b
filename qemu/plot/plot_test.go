package plot

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/plot/plotter"

	"yolk/runtime/result"
)

// recorded returns the result lines of testdata/nbdswap-flood.log, the
// console of a real run: make qemu APPEND='scenario=nbdswap
// flood_kbps=512' (its params, set-up, stat lines and verdict).
func recorded(t *testing.T) []result.Line {
	t.Helper()
	f, err := os.Open("testdata/nbdswap-flood.log")
	require.NoError(t, err)
	defer f.Close()
	var lines []result.Line
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l, err := result.Parse(sc.Text())
		require.NoError(t, err, sc.Text())
		lines = append(lines, l)
	}
	require.NoError(t, sc.Err())
	return lines
}

// statLines returns the stat lines among lines.
func statLines(lines []result.Line) []result.Line {
	var out []result.Line
	for _, l := range lines {
		if l.Event == Event {
			out = append(out, l)
		}
	}
	return out
}

func num(t *testing.T, l result.Line, key string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(l.Value(key), 64)
	require.NoError(t, err, "%s in %s", key, l)
	return v
}

func stat(kv ...any) result.Line { return result.New(Event, kv...) }

func build(t *testing.T, lines ...result.Line) *Figure {
	t.Helper()
	s, err := FromResults(lines)
	require.NoError(t, err)
	f, err := Build("test", s)
	require.NoError(t, err)
	return f
}

// Every series of the recorded run's figure is its stat lines' field,
// point for point, at the line's t_ms in seconds; other events are
// left out.
func TestRecordedRunSeriesAreItsStatLines(t *testing.T) {
	lines := recorded(t)
	stats := statLines(lines)
	require.Len(t, stats, 22, "the recording")
	s, err := FromResults(lines)
	require.NoError(t, err)
	assert.Equal(t, len(stats), s.Lines())
	assert.Equal(t, []string{"free_kb", "min_kb", "low_kb", "high_kb", "active_kb", "inactive_kb", "lazyfree_kb",
		"swap_used_kb", "pswpin", "pswpout", "pgmajfault"}, s.Keys[:11], "in the order the line gives them")
	assert.NotContains(t, s.Keys, TimeKey)

	f, err := Build("recorded", s)
	require.NoError(t, err)
	assert.Equal(t, len(stats), f.Lines)
	assert.Equal(t, []string{"page cache (journaled regions)", "block I/O"}, f.Absent, "an nbdswap run maps no region")
	assert.Equal(t, num(t, stats[len(stats)-1], TimeKey)/1000, f.TMax)
	levels := 0
	for _, p := range f.Panels {
		assert.Empty(t, p.Missing, p.Title)
		for _, sr := range p.Series {
			if sr.Rate {
				continue
			}
			levels++
			require.Len(t, sr.XYs, len(stats), sr.Key)
			for i, l := range stats {
				assert.Equal(t, num(t, l, TimeKey)/1000, sr.XYs[i].X, "%s at line %d", sr.Key, i)
				assert.Equal(t, num(t, l, sr.Key), sr.XYs[i].Y, "%s at line %d", sr.Key, i)
			}
		}
	}
	assert.Equal(t, 4+3+1+3+6, levels)
	free, ok := f.Series("free_kb")
	require.True(t, ok)
	assert.Equal(t, 4072.0, free.XYs[0].Y, "the pool is free before the working set")
	assert.Equal(t, 392.0, free.XYs[len(free.XYs)-1].Y)
	drop, _ := f.Series("rx_drop")
	assert.True(t, drop.Total)
}

// region's stat lines, alone or after nbdswap's in the tour, which
// stamps them on one clock: the page cache and block I/O panels, with
// pgpgin and pgpgout in KiB per second, and the pressure panels' series
// only where pressure's lines are.
func TestRegionAndTheTour(t *testing.T) {
	region := func(tms, cached, dirty, in, out int) result.Line {
		return stat("memfree_kb", 3000, "cached_kb", cached, "active_file_kb", 0, "inactive_file_kb", cached,
			"dirty_kb", dirty, "writeback_kb", 0, "pgpgin", in, "pgpgout", out, TimeKey, tms)
	}
	f := build(t, region(0, 0, 0, 0, 0), region(1000, 704, 704, 704, 0), region(3000, 1024, 64, 1024, 960))
	require.Len(t, f.Panels, 2)
	cache, _ := f.Series("cached_kb")
	assert.Equal(t, plotter.XYs{{X: 0, Y: 0}, {X: 1, Y: 704}, {X: 3, Y: 1024}}, cache.XYs)
	out, _ := f.Series("pgpgout")
	assert.Equal(t, plotter.XYs{{X: 1, Y: 0}, {X: 3, Y: 480}}, out.XYs)
	p, _ := f.Panel("block I/O")
	assert.Equal(t, "KiB/s", p.Unit)

	tour := append(statLines(recorded(t)), region(70000, 0, 0, 0, 0), region(71000, 704, 704, 704, 0))
	f = build(t, tour...)
	assert.Len(t, f.Panels, 8, "every panel")
	assert.Empty(t, f.Absent)
	free, _ := f.Series("free_kb")
	assert.Len(t, free.XYs, 22, "nbdswap's lines only")
	cache, _ = f.Series("cached_kb")
	assert.Equal(t, plotter.XYs{{X: 70, Y: 0}, {X: 71, Y: 704}}, cache.XYs)
	assert.Equal(t, 71.0, f.TMax)
}

// MemFree starts at the whole pool and then hovers at the watermarks:
// its panel's y axis stops at four times high, and says so, when the
// data go higher; otherwise it shows all of them.
func TestFreeMemoryPanelZoomsToTheWatermarks(t *testing.T) {
	f := build(t, recorded(t)...)
	require.Equal(t, "free memory and the watermarks", f.Panels[0].Title)
	assert.Equal(t, "y axis up to 4 × high_kb", f.Panels[0].Note)
	assert.Equal(t, 4*384.0, f.Panels[0].YMax, "the recorded pool's high watermark is 384 kB")

	f = build(t,
		stat("free_kb", 1000, "high_kb", 384, TimeKey, 0),
		stat("free_kb", 300, "high_kb", 384, TimeKey, 1000))
	assert.Empty(t, f.Panels[0].Note)
	assert.Zero(t, f.Panels[0].YMax, "1000 kB is below 4 × 384")
}

// A counter is drawn as its increase per second between consecutive
// lines, at the later line's time; the recorded run's rates add back up
// to its counters.
func TestSwapRateIsTheCountersDifferencePerSecond(t *testing.T) {
	f := build(t,
		stat("pswpout", 0, "pswpin", 5, TimeKey, 0),
		stat("pswpout", 100, "pswpin", 5, TimeKey, 500),
		stat("pswpout", 400, "pswpin", 35, TimeKey, 1500),
		stat("pswpout", 400, "pswpin", 95, TimeKey, 3500))
	out, ok := f.Series("pswpout")
	require.True(t, ok)
	assert.True(t, out.Rate)
	assert.Equal(t, plotter.XYs{{X: 0.5, Y: 200}, {X: 1.5, Y: 300}, {X: 3.5, Y: 0}}, out.XYs)
	in, _ := f.Series("pswpin")
	assert.Equal(t, plotter.XYs{{X: 0.5, Y: 0}, {X: 1.5, Y: 30}, {X: 3.5, Y: 30}}, in.XYs)
	p, ok := f.Panel("swap I/O")
	require.True(t, ok)
	assert.Equal(t, "pages/s (4 KiB)", p.Unit)

	lines := recorded(t)
	stats := statLines(lines)
	rec := build(t, lines...)
	for _, key := range []string{"pswpout", "pswpin"} {
		sr, _ := rec.Series(key)
		require.Len(t, sr.XYs, len(stats)-1, key)
		sum, prev := 0.0, num(t, stats[0], TimeKey)/1000
		for _, xy := range sr.XYs {
			sum += xy.Y * (xy.X - prev)
			prev = xy.X
		}
		last, first := num(t, stats[len(stats)-1], key), num(t, stats[0], key)
		assert.InDelta(t, last-first, sum, 1e-6, key)
	}
}

// Two lines in the same millisecond give one rate point: the second
// line's increase counts in the next interval, not as an infinite rate.
func TestRateSkipsAZeroInterval(t *testing.T) {
	f := build(t,
		stat("pswpout", 0, TimeKey, 1000),
		stat("pswpout", 10, TimeKey, 1000),
		stat("pswpout", 50, TimeKey, 2000))
	out, _ := f.Series("pswpout")
	assert.Equal(t, plotter.XYs{{X: 2, Y: 50}}, out.XYs)
}

// A field the run lacks is not drawn at all: its panel says so, a panel
// with none of its fields is left out of the figure and its head says
// which, and a field some lines lack has points only where lines have it.
func TestMissingFieldsAreLeftOutNotZero(t *testing.T) {
	// pressure's line before lazyfree_kb and the watermarks, with no
	// receive path.
	f := build(t,
		stat("free_kb", 4000, "active_kb", 0, "inactive_kb", 0, "swap_used_kb", 0, "pswpin", 0, "pswpout", 0, TimeKey, 0),
		stat("free_kb", 300, "active_kb", 1000, "inactive_kb", 2000, "swap_used_kb", 40, "pswpin", 0, "pswpout", 10, TimeKey, 1000))
	titles := []string{}
	for _, p := range f.Panels {
		titles = append(titles, p.Title)
	}
	assert.Equal(t, []string{"free memory and the watermarks", "LRU lists", "swap in use", "swap I/O"}, titles)
	assert.Equal(t, []string{"page cache (journaled regions)", "block I/O", "receive memory", "receive drops, cumulative"}, f.Absent)
	mem, _ := f.Panel("free memory and the watermarks")
	assert.Equal(t, []string{"high_kb", "low_kb", "min_kb"}, mem.Missing)
	assert.Zero(t, mem.YMax, "no zoom without high_kb")
	require.Len(t, mem.Series, 1)
	assert.Equal(t, "free_kb", mem.Series[0].Key)
	lru, _ := f.Panel("LRU lists")
	assert.Equal(t, []string{"lazyfree_kb"}, lru.Missing)
	_, ok := f.Series("lazyfree_kb")
	assert.False(t, ok)

	f = build(t,
		stat("free_kb", 10, TimeKey, 0),
		stat("free_kb", 20, "rx_drop", 3, TimeKey, 1000),
		stat("free_kb", 30, TimeKey, 2000),
		stat("free_kb", 40, "rx_drop", 7, TimeKey, 3000))
	drop, ok := f.Series("rx_drop")
	require.True(t, ok)
	assert.Equal(t, plotter.XYs{{X: 1, Y: 3}, {X: 3, Y: 7}}, drop.XYs)
	s, err := FromResults([]result.Line{stat("free_kb", 10, TimeKey, 0), stat("rx_drop", 3, TimeKey, 1000)})
	require.NoError(t, err)
	assert.True(t, math.IsNaN(s.Column("free_kb")[1]))
	assert.True(t, math.IsNaN(s.Column("rx_drop")[0]))
	assert.Nil(t, s.Column("rx_reserve"))
}

// Malformed stat lines are refused with an error naming the line and
// the field, whatever else the run printed.
func TestMalformedStatLinesAreRefused(t *testing.T) {
	good := stat("free_kb", 1, TimeKey, 100)
	for _, c := range []struct {
		name string
		bad  result.Line
		want string
	}{
		{"no time", stat("free_kb", 1), "stat line 2: no t_ms field"},
		{"time not a number", stat("free_kb", 1, TimeKey, "soon"), `stat line 2: t_ms="soon" is not a whole number of milliseconds`},
		{"fractional time", stat(TimeKey, "1.5"), `t_ms="1.5" is not a whole number`},
		{"negative time", stat(TimeKey, -5), `t_ms="-5" is not a whole number`},
		{"time going back", stat("free_kb", 1, TimeKey, 99), "stat line 2: t_ms=99 is earlier than the line before's 100"},
		{"value not a number", stat("free_kb", "lots", TimeKey, 200), `stat line 2: free_kb="lots" is not a number`},
		{"empty value", stat("free_kb", "", TimeKey, 200), `free_kb="" is not a number`},
		{"NaN", stat("free_kb", "NaN", TimeKey, 200), `free_kb="NaN" is not a number`},
		{"infinity", stat("free_kb", "+Inf", TimeKey, 200), `free_kb="+Inf" is not a number`},
		{"negative", stat("free_kb", -1, TimeKey, 200), `free_kb=-1 is negative: a stat line gives sizes and counts`},
		{"field twice", stat("free_kb", 1, "free_kb", 2, TimeKey, 200), "stat line 2: field free_kb appears twice"},
		{"time twice", stat(TimeKey, 200, TimeKey, 300), "field t_ms appears twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := FromResults([]result.Line{result.New("params", "scenario", "pressure"), good, c.bad})
			require.Error(t, err)
			assert.Nil(t, s)
			assert.Contains(t, err.Error(), c.want)
			assert.True(t, strings.HasPrefix(err.Error(), "plot: "), err.Error())
		})
	}

	s, err := FromResults([]result.Line{stat("pswpout", 10, TimeKey, 0), stat("pswpout", 9, TimeKey, 1000)})
	require.NoError(t, err, "a table may hold anything numeric")
	_, err = Build("t", s)
	assert.EqualError(t, err, "plot: counter pswpout went down from 10 at t_ms=0 to 9 at t_ms=1000")

	_, err = FromResults([]result.Line{result.New("result", "status", "pass")})
	assert.ErrorIs(t, err, ErrNoStats)
	_, err = FromResults(nil)
	assert.ErrorIs(t, err, ErrNoStats)

	// Fields, but none that the figure draws.
	s, err = FromResults([]result.Line{stat("memfree_kb", 100, "active_file_kb", 3, TimeKey, 0)})
	require.NoError(t, err)
	_, err = Build("t", s)
	assert.ErrorIs(t, err, ErrNothingToPlot)
}

// The PNG is a PNG of the size the figure's panels make.
func TestWritePNG(t *testing.T) {
	for _, lines := range [][]result.Line{
		recorded(t),
		{stat("free_kb", 5, TimeKey, 0)}, // one line, one panel
	} {
		f := build(t, lines...)
		var b bytes.Buffer
		require.NoError(t, f.WritePNG(&b))
		img, err := png.Decode(&b)
		require.NoError(t, err)
		w, h := Size(len(f.Panels))
		assert.Equal(t, w, img.Bounds().Dx())
		assert.Equal(t, h, img.Bounds().Dy())
	}
	w1, h1 := Size(1)
	w6, h6 := Size(6)
	assert.Equal(t, w1, w6)
	assert.Greater(t, h6, h1)
}

// Save writes the PNG and the CSV beside it, and the CSV reads back to
// the same table, a line's missing fields included.
func TestSaveAndReadCSV(t *testing.T) {
	lines := append(recorded(t), stat("free_kb", 7, TimeKey, 999999)) // a last line lacking most fields
	s, err := FromResults(lines)
	require.NoError(t, err)
	f, err := Build("saved", s)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "sub", "run.png")
	csvPath, err := f.Save(path, s)
	require.NoError(t, err)
	assert.Equal(t, strings.TrimSuffix(path, ".png")+".csv", csvPath)

	pngFile, err := os.Open(path)
	require.NoError(t, err)
	defer pngFile.Close()
	_, err = png.Decode(pngFile)
	require.NoError(t, err)

	data, err := os.ReadFile(csvPath)
	require.NoError(t, err)
	rows := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, rows, s.Lines()+1)
	assert.True(t, strings.HasPrefix(rows[0], "t_ms,free_kb,min_kb,low_kb,high_kb,"), rows[0])
	assert.True(t, strings.HasPrefix(rows[1], "4,4072,256,320,384,0,0,0,0,0,0,"), rows[1])
	assert.True(t, strings.HasPrefix(rows[len(rows)-1], "999999,7,,"), rows[len(rows)-1])

	back, err := ReadCSV(bytes.NewReader(data))
	require.NoError(t, err)
	assert.Equal(t, s.TMs, back.TMs)
	assert.Equal(t, s.Keys, back.Keys)
	for _, k := range s.Keys {
		assert.Equal(t, fmt.Sprint(s.Column(k)), fmt.Sprint(back.Column(k)), k)
	}

	_, err = ReadCSV(strings.NewReader(""))
	assert.ErrorIs(t, err, ErrNoStats)
	_, err = ReadCSV(strings.NewReader("t_ms,free_kb\n0,1\n1000\n"))
	assert.ErrorContains(t, err, "plot: csv:")
	_, err = ReadCSV(strings.NewReader("t_ms,free_kb\n0,1\n1000,x\n"))
	assert.ErrorContains(t, err, `plot: stat line 2: free_kb="x" is not a number`)
}

func TestTitleLeavesOutAddresses(t *testing.T) {
	lines := recorded(t)
	assert.Equal(t, "yolk scenario=nbdswap pool=4 ws=200 rounds=2 spaces=3 reserve=classify-first flood_kbps=512 watchdog=8 min_free_kbytes=0 rx_reserve=64",
		Title(lines))
	assert.Equal(t, "yolk", Title(nil))
}

// No console text makes FromResults or Build panic; they return a
// figure or an error.
func FuzzStatLines(f *testing.F) {
	f.Add("yolk: stat free_kb=1 pswpout=3 t_ms=0\nyolk: stat free_kb=2 pswpout=5 t_ms=1000")
	f.Add("yolk: stat free_kb=1 t_ms=5\nyolk: stat pswpin=1 t_ms=5\nyolk: stat pswpin=0 t_ms=6")
	f.Add("yolk: stat t_ms=0 pswpin=0\nyolk: stat t_ms=1 pswpin=1e308")
	f.Add("yolk: stat t_ms=9223372036854775807 rx_drop=1e308\nyolk: stat t_ms=9223372036854775807 rx_drop=-1e308")
	f.Fuzz(func(t *testing.T, console string) {
		var lines []result.Line
		for _, s := range strings.Split(console, "\n") {
			if l, err := result.Parse(s); err == nil {
				lines = append(lines, l)
			}
		}
		s, err := FromResults(lines)
		if err != nil {
			if s != nil {
				t.Fatal("a table with an error")
			}
			return
		}
		fig, err := Build("fuzz", s)
		if err != nil && !errors.Is(err, ErrNothingToPlot) && !strings.Contains(err.Error(), "went down") &&
			!strings.Contains(err.Error(), "overflows") {
			t.Fatalf("unexpected error %v", err)
		}
		if fig != nil {
			for _, p := range fig.Panels {
				for _, sr := range p.Series {
					for _, xy := range sr.XYs {
						if math.IsNaN(xy.Y) || math.IsNaN(xy.X) || math.IsInf(xy.Y, 0) || math.IsInf(xy.X, 0) {
							t.Fatalf("%v in %s", xy, sr.Key)
						}
					}
				}
			}
		}
	})
}
