package plot

import (
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The picture's size: panels stacked on a page as wide as a terminal
// screenshot, each tall enough for its legend.
const (
	width       = 10 * vg.Inch
	panelHeight = 2.4 * vg.Inch
	headHeight  = 0.7 * vg.Inch
	dpi         = 96
)

// Size returns the PNG's size in pixels for a figure of n panels.
func Size(n int) (w, h int) {
	return int(width.Dots(dpi) + 0.5), int(height(n).Dots(dpi) + 0.5)
}

// height is the page's height for n panels.
func height(n int) vg.Length { return headHeight + vg.Length(n)*panelHeight }

// WritePNG draws the figure as a PNG: its panels stacked on one time
// axis (labelled on the bottom panel only), the title and which panels
// the run had no data for above them.
func (f *Figure) WritePNG(w io.Writer) error {
	c := vgimg.NewWith(vgimg.UseWH(width, height(len(f.Panels))), vgimg.UseDPI(dpi))
	dc := draw.New(c)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	f.drawHead(draw.Crop(dc, 0, 0, dc.Max.Y-dc.Min.Y-headHeight, 0))

	rows := make([][]*plot.Plot, len(f.Panels))
	for i, p := range f.Panels {
		pl, err := f.plot(p, i == len(f.Panels)-1)
		if err != nil {
			return err
		}
		rows[i] = []*plot.Plot{pl}
	}
	body := draw.Crop(dc, 0, 0, 0, -headHeight)
	tiles := draw.Tiles{Rows: len(rows), Cols: 1, PadX: vg.Millimeter, PadY: 2 * vg.Millimeter,
		PadTop: vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	for i, cs := range plot.Align(rows, tiles, body) {
		rows[i][0].Draw(cs[0])
	}
	_, err := vgimg.PngCanvas{Canvas: c}.WriteTo(w)
	return err
}

// drawHead writes the title and, smaller, what the run lacked.
func (f *Figure) drawHead(dc draw.Canvas) {
	sty := draw.TextStyle{Color: color.Black, Font: plot.DefaultFont, Handler: plot.DefaultTextHandler}
	sty.Font.Size = 12
	x := dc.Min.X + 4*vg.Millimeter
	y := dc.Max.Y - 3*vg.Millimeter
	sty.YAlign = draw.YTop
	dc.FillText(sty, vg.Point{X: x, Y: y}, f.Title)
	sty.Font.Size = 9
	note := fmt.Sprintf("%d stat lines over %.1f s", f.Lines, f.TMax)
	if len(f.Absent) > 0 {
		note += "; no stat field of theirs in this run: " + strings.Join(f.Absent, "; ")
	}
	dc.FillText(sty, vg.Point{X: x, Y: y - 7*vg.Millimeter}, note)
}

// plot makes one panel's plot, on the figure's time axis.
func (f *Figure) plot(p Panel, bottom bool) (*plot.Plot, error) {
	pl := plot.New()
	pl.Title.Text = p.Title
	if p.Note != "" {
		pl.Title.Text += " (" + p.Note + ")"
	}
	if len(p.Missing) > 0 {
		pl.Title.Text += " (not in this run: " + strings.Join(p.Missing, ", ") + ")"
	}
	pl.Y.Label.Text = p.Unit
	pl.X.Min, pl.X.Max = 0, max(f.TMax, 1)
	if bottom {
		pl.X.Label.Text = "time (s): t_ms / 1000 of the stat lines"
	}
	pl.Add(plotter.NewGrid())
	pl.Legend.Top = true
	pl.Legend.TextStyle.Font.Size = 9
	for i, s := range p.Series {
		l, err := plotter.NewLine(s.XYs)
		if err != nil {
			return nil, fmt.Errorf("plot: %s: %w", s.Key, err)
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		if s.Dashed {
			l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
			l.Width = vg.Points(1)
		}
		if s.Total {
			l.Width = vg.Points(4) // a total under its parts, showing where they add up to it
		}
		pl.Add(l)
		pl.Legend.Add(s.Legend, l)
	}
	// Set after Add, which widens the axes to the data: room above the
	// data for the legend, a line per series, and the zoom if any.
	top := p.max()
	if p.YMax > 0 {
		top = p.YMax
	}
	pl.Y.Min, pl.Y.Max = 0, max(top, 1)*(1+0.12*float64(len(p.Series)))
	pl.Y.Tick.Marker = plainTicks{}
	return pl, nil
}

// plainTicks are gonum's default ticks labelled as plain numbers: 250,
// not 250.00, since every figure drawn is a count or a size.
type plainTicks struct{}

func (plainTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', -1, 64)
		}
	}
	return ticks
}

// Save writes the figure's PNG to path, and the table behind it as CSV
// to the same path with .csv for its extension; it returns the CSV's
// path.
func (f *Figure) Save(path string, s *Stats) (csvPath string, err error) {
	csvPath = strings.TrimSuffix(path, filepath.Ext(path)) + ".csv"
	if err := writeFile(path, f.WritePNG); err != nil {
		return "", err
	}
	return csvPath, writeFile(csvPath, s.WriteCSV)
}

// writeFile creates path, lets write fill it, and reports the first
// error, the close's included.
func writeFile(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(out); err != nil {
		out.Close()
		return fmt.Errorf("plot: %s: %w", path, err)
	}
	return out.Close()
}
