package plot

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	"yolk/runtime/result"
)

// Event is the result event a scenario prints once a second.
const Event = "stat"

// TimeKey is the field every stat line carries: milliseconds since the
// run's stat loop started.
const TimeKey = "t_ms"

// ErrNoStats is returned for a run that printed no stat line.
var ErrNoStats = errors.New("plot: the run printed no stat line")

// Stats is a run's stat lines as a table: a row per line in the order
// the image printed them, a column per field in the order the fields
// first appeared. A line that lacks a field has NaN in its column, so
// a field absent from the whole run is simply not a column.
type Stats struct {
	TMs  []int64  // each line's t_ms, never decreasing
	Keys []string // the columns, t_ms not among them
	cols map[string][]float64
}

// Lines returns the number of stat lines behind the table.
func (s *Stats) Lines() int { return len(s.TMs) }

// Has reports whether any line carried the field.
func (s *Stats) Has(key string) bool {
	_, ok := s.cols[key]
	return ok
}

// Column returns the field's value in every line, NaN where a line
// lacks it, or nil if no line has it. The slice is the table's own.
func (s *Stats) Column(key string) []float64 { return s.cols[key] }

// FromResults builds the table from a run's result lines, taking the
// stat lines and ignoring every other event. A stat line whose t_ms is
// missing, not a whole number or earlier than the line before, with a
// value that is not a number or is negative (a stat line gives sizes
// and counts), or which names a field twice is refused: the error says
// which stat line (counting from 1) and why.
func FromResults(lines []result.Line) (*Stats, error) {
	s := &Stats{cols: map[string][]float64{}}
	for _, l := range lines {
		if l.Event != Event {
			continue
		}
		if err := s.add(l.Fields); err != nil {
			return nil, fmt.Errorf("plot: stat line %d: %w", s.Lines()+1, err)
		}
	}
	if s.Lines() == 0 {
		return nil, ErrNoStats
	}
	return s, nil
}

// add appends one line's fields as a row.
func (s *Stats) add(fields []result.Field) error {
	row := make(map[string]float64, len(fields))
	var order []string
	tms, haveT := int64(0), false
	for _, f := range fields {
		if _, dup := row[f.Key]; dup || (f.Key == TimeKey && haveT) {
			return fmt.Errorf("field %s appears twice", f.Key)
		}
		if f.Key == TimeKey {
			t, err := strconv.ParseInt(f.Value, 10, 64)
			if err != nil || t < 0 {
				return fmt.Errorf("%s=%q is not a whole number of milliseconds", TimeKey, f.Value)
			}
			tms, haveT = t, true
			continue
		}
		v, err := strconv.ParseFloat(f.Value, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%s=%q is not a number", f.Key, f.Value)
		}
		if v < 0 {
			return fmt.Errorf("%s=%s is negative: a stat line gives sizes and counts", f.Key, f.Value)
		}
		row[f.Key] = v
		order = append(order, f.Key)
	}
	if !haveT {
		return fmt.Errorf("no %s field", TimeKey)
	}
	if n := s.Lines(); n > 0 && tms < s.TMs[n-1] {
		return fmt.Errorf("%s=%d is earlier than the line before's %d", TimeKey, tms, s.TMs[n-1])
	}
	for _, k := range order {
		if _, ok := s.cols[k]; !ok {
			s.Keys = append(s.Keys, k)
			s.cols[k] = nans(s.Lines())
		}
	}
	s.TMs = append(s.TMs, tms)
	for _, k := range s.Keys {
		v, ok := row[k]
		if !ok {
			v = math.NaN()
		}
		s.cols[k] = append(s.cols[k], v)
	}
	return nil
}

func nans(n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = math.NaN()
	}
	return v
}

// WriteCSV writes the table as CSV: a header of t_ms and the columns,
// then a row per stat line, with an empty cell where the line lacked
// the field. Numbers are written as the image printed them (whole
// numbers without a fraction), so any plotting tool can read the file.
func (s *Stats) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	rec := append([]string{TimeKey}, s.Keys...)
	if err := cw.Write(rec); err != nil {
		return err
	}
	for i, t := range s.TMs {
		rec = rec[:0]
		rec = append(rec, strconv.FormatInt(t, 10))
		for _, k := range s.Keys {
			v, cell := s.cols[k][i], ""
			if !math.IsNaN(v) {
				cell = strconv.FormatFloat(v, 'f', -1, 64)
			}
			rec = append(rec, cell)
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// ReadCSV reads a table WriteCSV wrote, with the same checks as
// FromResults, so that a saved run can be plotted again.
func ReadCSV(r io.Reader) (*Stats, error) {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if err == io.EOF {
		return nil, ErrNoStats
	}
	if err != nil {
		return nil, fmt.Errorf("plot: csv header: %w", err)
	}
	var lines []result.Line
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("plot: csv: %w", err)
		}
		l := result.Line{Event: Event}
		for i, cell := range rec {
			if cell != "" {
				l.Fields = append(l.Fields, result.Field{Key: header[i], Value: cell})
			}
		}
		lines = append(lines, l)
	}
	return FromResults(lines)
}
