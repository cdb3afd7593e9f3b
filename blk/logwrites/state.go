package logwrites

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// CrashState is one state a crash could leave the device in: the crash
// position, and which of the writes that were not yet durable there reached
// the media, how, and in what order. Writes are named by their Seq.
type CrashState struct {
	// Name describes the state reproducibly, e.g.
	// "@57 marks=3 maybe{44,46} torn{46:0-3} reorder{49->44}":
	// crash at position 57, after 3 marks; of the writes that were not
	// durable, 44 and 46 landed, 46 only in its sectors 0 to 3, and 49
	// landed before 44 where they overlap. ParseState turns it back into
	// the state.
	Name string
	// At is the crash position: the events before it happened.
	At int
	// Marks are the labels of the marks before At, in order.
	Marks []string
	// Maybe are the writes, not durable at At, that reached the media,
	// ascending. The durable writes always did; the others did not.
	Maybe []int
	// Torn are those of Maybe that reached it only in part, ascending.
	Torn []Tear
	// Reorder are the pairs of overlapping writes (in flight together)
	// that landed in the reverse of their submission order: every such
	// pair among the writes that landed, so that the order of any two
	// writes landing on a sector is known. They come from an order the
	// device could have landed the writes in (ParseState checks that
	// they do not make a cycle).
	Reorder []Swap
	// Digest identifies the image: states with the same digest have the
	// same image (up to 64-bit hash collisions).
	Digest uint64
}

func (cs CrashState) String() string { return cs.Name }

// Tear says which sectors of a write reached the media.
type Tear struct {
	Seq    int
	Landed []Sectors // ascending, disjoint
}

// Sectors is a run of sectors [Start, End) of a write, in units of the
// Log's SectorSize from the write's first sector.
type Sectors struct{ Start, End int }

// Swap is a pair of writes that were in flight together and overlap: Later,
// submitted after Earlier, landed before it.
type Swap struct{ Earlier, Later int }

// choice is a state in terms of the model's write indices.
type choice struct {
	k     int
	maybe []int   // ascending
	torn  []tornW // ascending by i, each in maybe
	swaps []pair  // ascending by (a, b), both applied
}

type tornW struct {
	i    int
	land []Sectors
}

func (c *choice) chosen(i int) bool {
	_, ok := slices.BinarySearch(c.maybe, i)
	return ok
}

func (m *model) applied(c *choice, i int) bool { return m.durable(i, c.k) || c.chosen(i) }

// landsAt says whether write i, if applied, reached absolute sector s.
func (m *model) landsAt(c *choice, i, s int) bool {
	w := &m.writes[i]
	if s < w.s0 || s >= w.s1 {
		return false
	}
	j, ok := slices.BinarySearchFunc(c.torn, i, func(t tornW, i int) int { return t.i - i })
	if !ok {
		return true
	}
	for _, r := range c.torn[j].land {
		if s-w.s0 >= r.Start && s-w.s0 < r.End {
			return true
		}
	}
	return false
}

func (c *choice) swapped(a, b int) bool {
	_, ok := slices.BinarySearchFunc(c.swaps, pair{a, b}, func(x, y pair) int {
		if x.a != y.a {
			return x.a - y.a
		}
		return x.b - y.b
	})
	return ok
}

// visit calls fn for each run of sectors [s0, s1) that write i lays down in
// state c, in an order whose last call for each sector is the data the
// sector ends with: the writes of the window [h, n) in submission order,
// then, where reordered pairs overlap, the sector's last landing again.
// The writes before h are the snapshot's.
func (m *model) visit(c *choice, h, n int, fn func(i, s0, s1 int)) {
	mi, ti := 0, 0
	for i := h; i < n; i++ {
		for mi < len(c.maybe) && c.maybe[mi] < i {
			mi++
		}
		if !(mi < len(c.maybe) && c.maybe[mi] == i) && !m.durable(i, c.k) {
			continue
		}
		w := &m.writes[i]
		for ti < len(c.torn) && c.torn[ti].i < i {
			ti++
		}
		if ti < len(c.torn) && c.torn[ti].i == i {
			for _, r := range c.torn[ti].land {
				fn(i, w.s0+r.Start, w.s0+r.End)
			}
			continue
		}
		fn(i, w.s0, w.s1)
	}
	for _, p := range c.swaps {
		x, y := &m.writes[p.a], &m.writes[p.b]
		for s := max(x.s0, y.s0); s < min(x.s1, y.s1); s++ {
			if win := m.lastLanding(c, h, n, s); win >= 0 {
				fn(win, s, s+1)
			}
		}
	}
}

// lastLanding is the write whose data sector s ends with among the window's,
// or -1 if none landed there. The writes landing on s all overlap, so the
// state orders every two of them: by submission, or reversed if swapped.
func (m *model) lastLanding(c *choice, h, n, s int) int {
	last := -1
	for i := h; i < n; i++ {
		if !m.applied(c, i) || !m.landsAt(c, i, s) {
			continue
		}
		if last < 0 || !c.swapped(last, i) {
			last = i
		}
	}
	return last
}

// state turns a choice into a CrashState.
func (m *model) state(c *choice, digest uint64) CrashState {
	cs := CrashState{At: c.k, Digest: digest}
	cs.Marks = slices.Clone(m.markLabel[:m.marksBefore(c.k)])
	var b strings.Builder
	fmt.Fprintf(&b, "@%d marks=%d maybe{", c.k, len(cs.Marks))
	for j, i := range c.maybe {
		cs.Maybe = append(cs.Maybe, m.writes[i].seq)
		if j > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(m.writes[i].seq))
	}
	b.WriteByte('}')
	if len(c.torn) > 0 {
		b.WriteString(" torn{")
		for j, t := range c.torn {
			cs.Torn = append(cs.Torn, Tear{Seq: m.writes[t.i].seq, Landed: slices.Clone(t.land)})
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%d:", m.writes[t.i].seq)
			for q, r := range t.land {
				if q > 0 {
					b.WriteByte(',')
				}
				if r.End-r.Start == 1 {
					fmt.Fprintf(&b, "%d", r.Start)
				} else {
					fmt.Fprintf(&b, "%d-%d", r.Start, r.End-1)
				}
			}
		}
		b.WriteByte('}')
	}
	if len(c.swaps) > 0 {
		b.WriteString(" reorder{")
		for j, p := range c.swaps {
			sw := Swap{Earlier: m.writes[p.a].seq, Later: m.writes[p.b].seq}
			cs.Reorder = append(cs.Reorder, sw)
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%d->%d", sw.Later, sw.Earlier)
		}
		b.WriteByte('}')
	}
	cs.Name = b.String()
	return cs
}

// choiceOf checks a CrashState against the log and returns its choice.
func (m *model) choiceOf(cs CrashState) (*choice, error) {
	k := cs.At
	if k < 0 || k > m.clock {
		return nil, fmt.Errorf("crash position %d outside the log (0 to %d)", k, m.clock)
	}
	n := m.submittedBefore(k)
	c := &choice{k: k}
	idx := func(seq int) (int, error) {
		i := m.index(seq)
		if i < 0 {
			return 0, fmt.Errorf("%d is not a write that could have reached the device", seq)
		}
		if i >= n {
			return 0, fmt.Errorf("write %d was submitted after the crash at %d", seq, k)
		}
		return i, nil
	}
	for _, seq := range cs.Maybe {
		i, err := idx(seq)
		if err != nil {
			return nil, err
		}
		if m.durable(i, k) {
			return nil, fmt.Errorf("write %d is durable at %d, not a maybe", seq, k)
		}
		c.maybe = append(c.maybe, i)
	}
	slices.Sort(c.maybe)
	if len(slices.Compact(c.maybe)) != len(cs.Maybe) {
		return nil, errors.New("a write is listed twice in maybe")
	}
	for _, t := range cs.Torn {
		i, err := idx(t.Seq)
		if err != nil {
			return nil, err
		}
		if !c.chosen(i) {
			return nil, fmt.Errorf("torn write %d is not among the maybe writes", t.Seq)
		}
		w := &m.writes[i]
		land := slices.Clone(t.Landed)
		slices.SortFunc(land, func(x, y Sectors) int { return x.Start - y.Start })
		var merged []Sectors
		total := 0
		for _, r := range land {
			if r.Start < 0 || r.End > w.s1-w.s0 || r.Start >= r.End {
				return nil, fmt.Errorf("torn write %d: sectors %d-%d outside its %d", t.Seq, r.Start, r.End-1, w.s1-w.s0)
			}
			if len(merged) > 0 && r.Start <= merged[len(merged)-1].End {
				if r.Start < merged[len(merged)-1].End {
					return nil, fmt.Errorf("torn write %d: sector runs overlap", t.Seq)
				}
				merged[len(merged)-1].End = r.End
			} else {
				merged = append(merged, r)
			}
			total += r.End - r.Start
		}
		if total == 0 || total == w.s1-w.s0 {
			return nil, fmt.Errorf("torn write %d: a tear lands some of the sectors, not none or all", t.Seq)
		}
		c.torn = append(c.torn, tornW{i, merged})
	}
	slices.SortFunc(c.torn, func(x, y tornW) int { return x.i - y.i })
	for j := 1; j < len(c.torn); j++ {
		if c.torn[j].i == c.torn[j-1].i {
			return nil, errors.New("a write is listed twice in torn")
		}
	}
	for _, sw := range cs.Reorder {
		a, err := idx(sw.Earlier)
		if err != nil {
			return nil, err
		}
		b, err := idx(sw.Later)
		if err != nil {
			return nil, err
		}
		switch {
		case a >= b:
			return nil, fmt.Errorf("reorder %d->%d: %d was not submitted after %d", sw.Later, sw.Earlier, sw.Later, sw.Earlier)
		case !m.overlap(a, b) || !m.concurrent(a, b):
			return nil, fmt.Errorf("reorder %d->%d: the writes do not overlap or were not in flight together", sw.Later, sw.Earlier)
		case a < m.horizonAt(k):
			// Writes before the horizon are settled: durable, and
			// their order fixed in the snapshot states build on.
			// A pair is reordered while it is not settled.
			return nil, fmt.Errorf("reorder %d->%d: the writes are settled at %d", sw.Later, sw.Earlier, k)
		case !m.applied(c, a) || !m.applied(c, b):
			return nil, fmt.Errorf("reorder %d->%d: both writes must have landed", sw.Later, sw.Earlier)
		}
		c.swaps = append(c.swaps, pair{a, b})
	}
	slices.SortFunc(c.swaps, func(x, y pair) int {
		if x.a != y.a {
			return x.a - y.a
		}
		return x.b - y.b
	})
	if len(slices.Compact(c.swaps)) != len(cs.Reorder) {
		return nil, errors.New("a pair is listed twice in reorder")
	}
	return c, nil
}

// ordered says whether the state's order of the writes in [h, n) is one
// the device could have landed them in: no cycle among the pairs it orders
// (every two overlapping writes; reordered pairs reversed). Enumerate's
// states are by construction; a state from outside is checked.
func (m *model) ordered(c *choice, h, n int) bool {
	var ws []int
	for i := h; i < n; i++ {
		if m.applied(c, i) {
			ws = append(ws, i)
		}
	}
	indeg := make([]int, len(ws))
	after := make([][]int, len(ws)) // after[x]: the writes landing after x
	for x := range ws {
		for y := x + 1; y < len(ws); y++ {
			if !m.overlap(ws[x], ws[y]) {
				continue
			}
			if c.swapped(ws[x], ws[y]) {
				after[y] = append(after[y], x)
				indeg[x]++
			} else {
				after[x] = append(after[x], y)
				indeg[y]++
			}
		}
	}
	var ready []int
	for x, d := range indeg {
		if d == 0 {
			ready = append(ready, x)
		}
	}
	seen := 0
	for len(ready) > 0 {
		x := ready[len(ready)-1]
		ready = ready[:len(ready)-1]
		seen++
		for _, y := range after[x] {
			if indeg[y]--; indeg[y] == 0 {
				ready = append(ready, y)
			}
		}
	}
	return seen == len(ws)
}

var (
	nameAt      = regexp.MustCompile(`^@(\d+)\b`)
	nameMaybe   = regexp.MustCompile(`\bmaybe\{([^}]*)\}`)
	nameTorn    = regexp.MustCompile(`\btorn\{([^}]*)\}`)
	nameReorder = regexp.MustCompile(`\breorder\{([^}]*)\}`)
)

// ParseState turns a CrashState's Name back into the state, checking it
// against the log: to reproduce a failure from its report.
func (l *Log) ParseState(name string) (CrashState, error) {
	cs, err := parseName(name)
	if err != nil {
		return CrashState{}, fmt.Errorf("logwrites: state %q: %w", name, err)
	}
	m := l.current()
	c, err := m.choiceOf(cs)
	if err != nil {
		return CrashState{}, fmt.Errorf("logwrites: state %q: %w", name, err)
	}
	h, n := m.horizonAt(c.k), m.submittedBefore(c.k)
	if len(c.swaps) > 0 && !m.ordered(c, h, n) {
		return CrashState{}, fmt.Errorf("logwrites: state %q: the reorders make a cycle", name)
	}
	var hs hashSnap
	hs.reset(l.baseHash)
	hs.advance(m, h)
	sim := newHashSim(len(l.baseHash))
	return m.state(c, sim.digest(m, &hs, c, h, n)), nil
}

func parseName(name string) (CrashState, error) {
	var cs CrashState
	at := nameAt.FindStringSubmatch(name)
	if at == nil {
		return cs, errors.New("no crash position (@k)")
	}
	var err error
	if cs.At, err = strconv.Atoi(at[1]); err != nil {
		return cs, err
	}
	if mm := nameMaybe.FindStringSubmatch(name); mm != nil {
		if cs.Maybe, err = parseInts(mm[1], ","); err != nil {
			return cs, err
		}
	}
	if mt := nameTorn.FindStringSubmatch(name); mt != nil {
		for _, f := range strings.Fields(mt[1]) {
			seq, runs, ok := strings.Cut(f, ":")
			if !ok {
				return cs, fmt.Errorf("torn %q: want seq:sectors", f)
			}
			t := Tear{}
			if t.Seq, err = strconv.Atoi(seq); err != nil {
				return cs, err
			}
			for _, r := range strings.Split(runs, ",") {
				lo, hi, rng := strings.Cut(r, "-")
				s, err := strconv.Atoi(lo)
				if err != nil {
					return cs, err
				}
				e := s
				if rng {
					if e, err = strconv.Atoi(hi); err != nil {
						return cs, err
					}
				}
				t.Landed = append(t.Landed, Sectors{s, e + 1})
			}
			cs.Torn = append(cs.Torn, t)
		}
	}
	if mr := nameReorder.FindStringSubmatch(name); mr != nil {
		for _, f := range strings.Fields(mr[1]) {
			later, earlier, ok := strings.Cut(f, "->")
			if !ok {
				return cs, fmt.Errorf("reorder %q: want later->earlier", f)
			}
			var sw Swap
			if sw.Later, err = strconv.Atoi(later); err != nil {
				return cs, err
			}
			if sw.Earlier, err = strconv.Atoi(earlier); err != nil {
				return cs, err
			}
			cs.Reorder = append(cs.Reorder, sw)
		}
	}
	return cs, nil
}

func parseInts(s, sep string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, sep) {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
