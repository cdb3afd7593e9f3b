package plot

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"gonum.org/v1/plot/plotter"

	"yolk/runtime/result"
)

// A field is one stat field drawn as one line of a panel.
type field struct {
	key    string
	legend string
	rate   bool // a counter, drawn as its increase per second
	dashed bool // a threshold rather than a quantity (the watermarks)
	total  bool // the sum of the panel's other fields, drawn under them
}

// A panelSpec is one panel of the figure: its title, the unit on its y
// axis, and the fields it draws. Every field of a panel has the unit.
// zoomTo, if set, names a field whose largest value times zoomBy tops
// the y axis, when the data go higher: MemFree starts at the whole pool,
// which would flatten the watermarks it then hovers around.
type panelSpec struct {
	title, unit string
	fields      []field
	zoomTo      string
	zoomBy      float64
}

// panels are the figure's panels, top to bottom, for the stat lines of
// scenarios/pressure.go (pressure and nbdswap) and scenarios/region.go,
// and of the tour, which runs both: sizes in kB as /proc/meminfo gives
// them, the vmstat swap counters in pages (4 KiB, as Linux counts pswpin
// and pswpout), pgpgin and pgpgout in KiB (as Linux counts them, swap
// included), the receive path's figures in pool frames (4 KiB), as
// net/rx counts them.
var panels = []panelSpec{
	{title: "free memory and the watermarks", unit: "kB", fields: []field{
		{key: "free_kb", legend: "MemFree"},
		{key: "high_kb", legend: "high", dashed: true},
		{key: "low_kb", legend: "low (kswapd wakes)", dashed: true},
		{key: "min_kb", legend: "min (direct reclaim)", dashed: true},
	}, zoomTo: "high_kb", zoomBy: 4},
	{title: "LRU lists", unit: "kB", fields: []field{
		{key: "active_kb", legend: "Active"},
		{key: "inactive_kb", legend: "Inactive"},
		{key: "lazyfree_kb", legend: "lazily freed (MADV_FREE)"},
	}},
	{title: "swap in use", unit: "kB", fields: []field{
		{key: "swap_used_kb", legend: "SwapTotal - SwapFree"},
	}},
	{title: "swap I/O", unit: "pages/s (4 KiB)", fields: []field{
		{key: "pswpout", legend: "pswpout per second", rate: true},
		{key: "pswpin", legend: "pswpin per second", rate: true},
	}},
	{title: "page cache (journaled regions)", unit: "kB", fields: []field{
		{key: "cached_kb", legend: "Cached"},
		{key: "dirty_kb", legend: "Dirty"},
		{key: "writeback_kb", legend: "Writeback"},
	}},
	{title: "block I/O", unit: "KiB/s", fields: []field{
		{key: "pgpgout", legend: "pgpgout per second", rate: true},
		{key: "pgpgin", legend: "pgpgin per second", rate: true},
	}},
	{title: "receive memory", unit: "frames (4 KiB)", fields: []field{
		{key: "rx_charged", legend: "charged to the pool"},
		{key: "rx_reserve", legend: "of it from the reserve"},
		{key: "rx_reserve_peak", legend: "reserve peak", dashed: true},
	}},
	{title: "receive drops, cumulative", unit: "frames", fields: []field{
		{key: "rx_drop", legend: "all reasons", total: true},
		{key: "rx_drop_wmark", legend: "watermark (ordinary socket)"},
		{key: "rx_drop_bound", legend: "reserve bound (memalloc socket)"},
		{key: "rx_drop_empty", legend: "reserve empty (memalloc socket)"},
		{key: "rx_drop_pfmem", legend: "pfmemalloc (reserve frame, ordinary socket)"},
		{key: "rx_alloc_drop", legend: "dropped after the copy"},
	}},
}

// ErrNothingToPlot is returned when no stat field of the run is one the
// figure draws.
var ErrNothingToPlot = errors.New("plot: the stat lines have none of the fields the figure draws")

// Figure is the data behind a plot: what WritePNG draws, and what a test
// can check without looking at pixels.
type Figure struct {
	Title  string
	Lines  int      // stat lines behind it
	TMax   float64  // the last line's time, in seconds
	Panels []Panel  // the panels with at least one series, top to bottom
	Absent []string // the titles of panels left out: no field of theirs in the run
}

// Panel is one panel of a figure.
type Panel struct {
	Title, Unit string
	Series      []Series
	Missing     []string // its fields the run lacks, not drawn
	// YMax, if not 0, tops the y axis below the data's largest value;
	// what is above it is cut off, and Note says so.
	YMax float64
	Note string
}

// Series is one line of a panel: a field's values, or for a counter
// its increase per second, against time in seconds (t_ms / 1000).
type Series struct {
	Key, Legend         string
	Rate, Dashed, Total bool
	XYs                 plotter.XYs
}

// Build turns a run's stats into the figure's data. A field no stat
// line has is left out of its panel, and a panel none of whose fields
// the run has is left out of the figure; neither is drawn as zeros. A
// counter that goes down is refused, as the image never resets one.
func Build(title string, s *Stats) (*Figure, error) {
	f := &Figure{Title: title, Lines: s.Lines(), TMax: seconds(s.TMs[s.Lines()-1])}
	for _, spec := range panels {
		p, err := buildPanel(spec, s)
		if err != nil {
			return nil, err
		}
		if len(p.Series) == 0 {
			f.Absent = append(f.Absent, spec.title)
			continue
		}
		f.Panels = append(f.Panels, p)
	}
	if len(f.Panels) == 0 {
		return nil, ErrNothingToPlot
	}
	return f, nil
}

// buildPanel gathers a panel's series, those of its fields the run has.
func buildPanel(spec panelSpec, s *Stats) (Panel, error) {
	p := Panel{Title: spec.title, Unit: spec.unit}
	for _, fl := range spec.fields {
		if !s.Has(fl.key) {
			p.Missing = append(p.Missing, fl.key)
			continue
		}
		xys, err := series(s, fl)
		if err != nil {
			return Panel{}, err
		}
		p.Series = append(p.Series, Series{Key: fl.key, Legend: fl.legend,
			Rate: fl.rate, Dashed: fl.dashed, Total: fl.total, XYs: xys})
	}
	if top, ok := zoom(spec, p); ok {
		p.YMax = top
		p.Note = fmt.Sprintf("y axis up to %v × %s", spec.zoomBy, spec.zoomTo)
	}
	return p, nil
}

// Panel returns the figure's panel with the title, if it has it.
func (f *Figure) Panel(title string) (Panel, bool) {
	for _, p := range f.Panels {
		if p.Title == title {
			return p, true
		}
	}
	return Panel{}, false
}

// Series returns the figure's series of the field, if it has it.
func (f *Figure) Series(key string) (Series, bool) {
	for _, p := range f.Panels {
		for _, s := range p.Series {
			if s.Key == key {
				return s, true
			}
		}
	}
	return Series{}, false
}

// zoom returns the y axis's top for a panel zoomed to a field, if the
// panel has the field and its data go higher.
func zoom(spec panelSpec, p Panel) (float64, bool) {
	if spec.zoomTo == "" {
		return 0, false
	}
	for _, s := range p.Series {
		if s.Key == spec.zoomTo {
			top := spec.zoomBy * maxY(s.XYs)
			return top, top > 0 && top < p.max()
		}
	}
	return 0, false
}

// max returns the panel's largest value.
func (p Panel) max() float64 {
	m := 0.0
	for _, s := range p.Series {
		m = max(m, maxY(s.XYs))
	}
	return m
}

func maxY(xys plotter.XYs) float64 {
	m := 0.0
	for _, xy := range xys {
		m = max(m, xy.Y)
	}
	return m
}

func seconds(ms int64) float64 { return float64(ms) / 1000 }

// series returns a field's points: its value at every line that has it,
// or for a counter its rate.
func series(s *Stats, fl field) (plotter.XYs, error) {
	col := s.Column(fl.key)
	if fl.rate {
		return rate(fl.key, s.TMs, col)
	}
	var xys plotter.XYs
	for i, v := range col {
		if !math.IsNaN(v) {
			xys = append(xys, plotter.XY{X: seconds(s.TMs[i]), Y: v})
		}
	}
	return xys, nil
}

// rate returns a counter's increase per second between each two lines
// that have it, at the later line's time, as sar plots per-second
// figures. The first line that has it gives no point; a line printed
// in the same millisecond as the one before gives none either, and its
// increase counts in the next interval.
func rate(key string, tms []int64, col []float64) (plotter.XYs, error) {
	var xys plotter.XYs
	prev := -1
	for i, v := range col {
		if math.IsNaN(v) {
			continue
		}
		if prev >= 0 {
			if v < col[prev] {
				return nil, fmt.Errorf("plot: counter %s went down from %v at t_ms=%d to %v at t_ms=%d",
					key, col[prev], tms[prev], v, tms[i])
			}
			dt := tms[i] - tms[prev]
			if dt == 0 {
				continue
			}
			r := (v - col[prev]) * 1000 / float64(dt)
			if math.IsInf(r, 0) {
				return nil, fmt.Errorf("plot: counter %s's rate overflows at t_ms=%d", key, tms[i])
			}
			xys = append(xys, plotter.XY{X: seconds(tms[i]), Y: r})
		}
		prev = i
	}
	return xys, nil
}

// Title names a run by its params line, as the image printed it, less
// the host services' addresses (nbd=, flood=, host=), which change from
// run to run: "yolk scenario=nbdswap pool=4 ...".
func Title(lines []result.Line) string {
	words := []string{"yolk"}
	for _, l := range lines {
		if l.Event != "params" {
			continue
		}
		for _, f := range l.Fields {
			switch f.Key {
			case "nbd", "flood", "host":
			default:
				words = append(words, f.Key+"="+f.Value)
			}
		}
		break
	}
	return strings.Join(words, " ")
}
