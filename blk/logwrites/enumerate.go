package logwrites

import (
	"math/rand/v2"
	"slices"
)

// EnumerateOptions choose the crash states Enumerate returns. At each crash
// point it generates, over the writes not durable there (the maybe writes):
//
//	(a) none of them: the durable writes alone;
//	(b) all of them;
//	(c) each alone;
//	(d) all but each one;
//	(e) Random states: each maybe write with probability 1/2, each of
//	    those torn with probability 1/4, and the writes in flight together
//	    landing in a random order;
//	(f) for each maybe write of more than one tear unit, a tear of a
//	    prefix of its units with every other maybe write landed, and a
//	    tear of random units with no other;
//	(g) for each pair of overlapping writes in flight together (among the
//	    writes not yet settled: since the last point before which every
//	    write is durable and ordered), the reverse order, with the pair
//	    landed and no other maybe write. The earlier write lands just after
//	    the later one, so after the writes submitted between them as well.
//
// States with the same marks and the same image are one state: the first
// generated is kept. Caps then bound the cost with a sample seeded by Seed.
type EnumerateOptions struct {
	// Seed makes the random choices: the same log and options give the
	// same states.
	Seed uint64
	// Points are the crash positions; nil means CrashPoints().
	Points []int
	// Random is how many random states (e) to draw per point: 0 means 8,
	// a negative number none.
	Random int
	// MaxPerPoint caps the states kept per point (0: no cap). States (a)
	// and (b) are kept first, the rest sampled.
	MaxPerPoint int
	// MaxStates caps the states returned (0: no cap) with a uniform
	// sample of those MaxPerPoint kept. A uniform sample favours the
	// points with many states (many writes not durable); to spread the
	// states over the points, cap them too, e.g. MaxPerPoint 4 and
	// MaxStates 600.
	MaxStates int
	// TearUnit is the unit writes tear in, in bytes: 0 means the Log's
	// SectorSize; a multiple of it, e.g. 4096 for a device that writes
	// pages atomically.
	TearUnit int
	// NoTears leaves out torn writes; NoReorders leaves out reorders.
	NoTears, NoReorders bool
}

// EnumerateStats say how many states there were.
type EnumerateStats struct {
	Points       int // crash points enumerated
	Generated    int // states the rules generated
	Distinct     int // of those, distinct (marks and image): the states possible under the rules
	Returned     int // after the caps
	CappedPoints int // points where MaxPerPoint dropped states
	MaxMaybe     int // the most maybe writes at one point
	MaxPairs     int // the most reorderable pairs at one point
}

const (
	tierFirst = iota // (a) and (b), kept before the rest under a cap
	tierRest
)

type candidate struct {
	c      *choice
	digest uint64
	tier   int
}

type digestKey struct {
	marks  int
	digest uint64
}

// Enumerate returns crash states of the log, ordered by position (the order
// that materializes them fastest), and how many there were. See
// EnumerateOptions.
func (l *Log) Enumerate(opts EnumerateOptions) ([]CrashState, EnumerateStats) {
	m := l.current()
	points := opts.Points
	if points == nil {
		points = l.CrashPoints()
	}
	points = slices.Clone(points)
	slices.Sort(points)
	points = slices.Compact(points)
	points = slices.DeleteFunc(points, func(k int) bool { return k < 0 || k > m.clock })
	random := opts.Random
	if random == 0 {
		random = 8
	}
	unit := max(1, opts.TearUnit/m.sector)

	var st EnumerateStats
	var hs hashSnap
	hs.reset(l.baseHash)
	sim := newHashSim(len(l.baseHash))
	seen := make(map[digestKey]struct{})
	var kept []candidate
	for _, k := range points {
		st.Points++
		n, h := m.submittedBefore(k), m.horizonAt(k)
		hs.advance(m, h)
		marks := m.marksBefore(k)
		var maybe []int
		for i := h; i < n; i++ {
			if !m.durable(i, k) {
				maybe = append(maybe, i)
			}
		}
		var pairs []pair
		if !opts.NoReorders {
			for _, p := range m.pairs {
				if p.b >= n {
					break
				}
				if p.a >= h {
					pairs = append(pairs, p)
				}
			}
		}
		st.MaxMaybe = max(st.MaxMaybe, len(maybe))
		st.MaxPairs = max(st.MaxPairs, len(pairs))

		rng := rand.New(rand.NewPCG(opts.Seed, uint64(k)))
		var fresh []candidate
		add := func(c *choice, tier int) {
			st.Generated++
			d := sim.digest(m, &hs, c, h, n)
			key := digestKey{marks, d}
			if _, dup := seen[key]; dup {
				return
			}
			seen[key] = struct{}{}
			fresh = append(fresh, candidate{c, d, tier})
		}

		add(&choice{k: k}, tierFirst) // (a)
		if len(maybe) > 0 {
			add(&choice{k: k, maybe: maybe}, tierFirst) // (b)
		}
		for _, i := range maybe { // (c)
			add(&choice{k: k, maybe: []int{i}}, tierRest)
		}
		if len(maybe) > 1 { // (d)
			for j := range maybe {
				add(&choice{k: k, maybe: slices.Delete(slices.Clone(maybe), j, j+1)}, tierRest)
			}
		}
		if random > 0 && (len(maybe) > 0 || len(pairs) > 0) { // (e)
			for range random {
				add(m.randomChoice(rng, k, maybe, pairs, unit, opts.NoTears), tierRest)
			}
		}
		if !opts.NoTears { // (f)
			for _, i := range maybe {
				units := m.units(i, unit)
				if units < 2 {
					continue
				}
				prefix := make([]bool, units)
				for u := range 1 + rng.IntN(units-1) {
					prefix[u] = true
				}
				add(&choice{k: k, maybe: maybe, torn: []tornW{{i, m.landed(i, unit, prefix)}}}, tierRest)
				add(&choice{k: k, maybe: []int{i}, torn: []tornW{{i, m.landed(i, unit, randomTear(rng, units))}}}, tierRest)
			}
		}
		for _, p := range pairs { // (g)
			c := &choice{k: k}
			for _, i := range []int{p.a, p.b} {
				if !m.durable(i, k) {
					c.maybe = append(c.maybe, i)
				}
			}
			// a lands just after b: after every write submitted
			// between them too, all of which were in flight with
			// it. Where it overlaps those, it is reversed too.
			for i := p.a + 1; i <= p.b; i++ {
				if m.overlap(p.a, i) && m.applied(c, i) {
					c.swaps = append(c.swaps, pair{p.a, i})
				}
			}
			add(c, tierRest)
		}

		st.Distinct += len(fresh)
		if opts.MaxPerPoint > 0 && len(fresh) > opts.MaxPerPoint {
			st.CappedPoints++
			fresh = sample(rng, fresh, opts.MaxPerPoint, true)
		}
		kept = append(kept, fresh...)
	}
	if opts.MaxStates > 0 && len(kept) > opts.MaxStates {
		kept = sample(rand.New(rand.NewPCG(opts.Seed, 1<<63)), kept, opts.MaxStates, false)
	}
	st.Returned = len(kept)
	states := make([]CrashState, len(kept))
	for j, cd := range kept {
		states[j] = m.state(cd.c, cd.digest)
	}
	return states, st
}

// sample keeps n of cs, in their original order, chosen at random: with
// tiers, the first tier first.
func sample(rng *rand.Rand, cs []candidate, n int, tiers bool) []candidate {
	var keep []int
	for _, tier := range []int{tierFirst, tierRest} {
		var in []int
		for j, c := range cs {
			if !tiers || c.tier == tier {
				in = append(in, j)
			}
		}
		rng.Shuffle(len(in), func(x, y int) { in[x], in[y] = in[y], in[x] })
		keep = append(keep, in[:min(len(in), n-len(keep))]...)
		if !tiers {
			break
		}
	}
	slices.Sort(keep)
	out := make([]candidate, len(keep))
	for j, i := range keep {
		out[j] = cs[i]
	}
	return out
}

// randomChoice draws state (e).
func (m *model) randomChoice(rng *rand.Rand, k int, maybe []int, pairs []pair, unit int, noTears bool) *choice {
	c := &choice{k: k}
	for _, i := range maybe {
		if rng.IntN(2) == 0 {
			continue
		}
		c.maybe = append(c.maybe, i)
		if units := m.units(i, unit); !noTears && units > 1 && rng.IntN(4) == 0 {
			c.torn = append(c.torn, tornW{i, m.landed(i, unit, randomTear(rng, units))})
		}
	}
	if len(pairs) == 0 {
		return c
	}
	// Each write lands at a random moment while it was in flight: before
	// it completed (a durable one, or one completed before k) or before
	// k. Writes ordered by completion and submission land in that order,
	// so the order is one the device could have produced; the pairs it
	// reverses are the state's reorders.
	var ws []int
	for _, p := range pairs {
		ws = append(ws, p.a, p.b)
	}
	slices.Sort(ws)
	ws = slices.Compact(ws)
	t := make(map[int]float64, len(ws))
	for _, i := range ws {
		w := &m.writes[i]
		end := k
		if w.done < k {
			end = w.done
		}
		t[i] = float64(w.submit) + rng.Float64()*float64(end-w.submit)
	}
	for _, p := range pairs {
		if t[p.b] < t[p.a] && m.applied(c, p.a) && m.applied(c, p.b) {
			c.swaps = append(c.swaps, p)
		}
	}
	slices.SortFunc(c.swaps, func(x, y pair) int {
		if x.a != y.a {
			return x.a - y.a
		}
		return x.b - y.b
	})
	return c
}

// units is the number of tear units write i spans; units are aligned on
// the device, so a write's first and last may be partial.
func (m *model) units(i, unit int) int {
	w := &m.writes[i]
	return (w.s1-1)/unit - w.s0/unit + 1
}

// landed turns a set of write i's tear units into its sectors.
func (m *model) landed(i, unit int, set []bool) []Sectors {
	w := &m.writes[i]
	var out []Sectors
	first := w.s0 / unit
	for u, in := range set {
		if !in {
			continue
		}
		s0 := max(w.s0, (first+u)*unit) - w.s0
		s1 := min(w.s1, (first+u+1)*unit) - w.s0
		if len(out) > 0 && out[len(out)-1].End == s0 {
			out[len(out)-1].End = s1
		} else {
			out = append(out, Sectors{s0, s1})
		}
	}
	return out
}

// randomTear draws a set of units, neither none nor all.
func randomTear(rng *rand.Rand, units int) []bool {
	set := make([]bool, units)
	for {
		n := 0
		for u := range set {
			set[u] = rng.IntN(2) == 0
			if set[u] {
				n++
			}
		}
		if n > 0 && n < units {
			return set
		}
	}
}

// hashSnap is the per-sector content hashes of the image at a horizon h:
// the base with writes[:h] applied in order. Its sum is the image's digest.
type hashSnap struct {
	h    int
	base []uint64
	cur  []uint64
	sum  uint64
}

func (hs *hashSnap) reset(base []uint64) {
	hs.h, hs.base, hs.sum = 0, base, 0
	hs.cur = append(hs.cur[:0], base...)
}

func (hs *hashSnap) advance(m *model, h int) {
	if h < hs.h {
		hs.reset(hs.base)
	}
	for i := hs.h; i < h; i++ {
		w := &m.writes[i]
		for s := w.s0; s < w.s1; s++ {
			nh := m.secHash(i, s)
			hs.sum += mix(s, nh) - mix(s, hs.cur[s])
			hs.cur[s] = nh
		}
	}
	hs.h = h
}

// hashSim computes states' digests: the snapshot's, changed by the sectors
// the state's window writes leave.
type hashSim struct {
	tmp     []uint64
	stamp   []uint32
	epoch   uint32
	touched []int
}

func newHashSim(sectors int) *hashSim {
	return &hashSim{tmp: make([]uint64, sectors), stamp: make([]uint32, sectors)}
}

func (e *hashSim) digest(m *model, hs *hashSnap, c *choice, h, n int) uint64 {
	if e.epoch++; e.epoch == 0 {
		clear(e.stamp)
		e.epoch = 1
	}
	e.touched = e.touched[:0]
	m.visit(c, h, n, func(i, s0, s1 int) {
		for s := s0; s < s1; s++ {
			if e.stamp[s] != e.epoch {
				e.stamp[s] = e.epoch
				e.touched = append(e.touched, s)
			}
			e.tmp[s] = m.secHash(i, s)
		}
	})
	sum := hs.sum
	for _, s := range e.touched {
		sum += mix(s, e.tmp[s]) - mix(s, hs.cur[s])
	}
	return sum
}
