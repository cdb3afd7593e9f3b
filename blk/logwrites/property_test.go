package logwrites

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
)

const (
	propBS     = 512
	propBlocks = 16
)

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// randomLog scripts a random interleaving of up to six requests in flight:
// writes (some FUA) of one to four blocks, trims, zeroing, flushes, marks,
// and completions, a few of them failures. Some requests are still in flight
// at the end: the caller completes them with finish.
func randomLog(t testing.TB, rng *rand.Rand, steps int) (s *script, finish func()) {
	blocks := propBlocks
	s = newScriptImage(t, propBS, randBytes(rng, propBS*blocks))
	var open []*pending
	marks := 0
	for range steps {
		r := rng.IntN(20)
		if len(open) >= 6 {
			r = 19
		}
		switch {
		case r < 8:
			b := rng.IntN(blocks)
			n := 1 + rng.IntN(min(4, blocks-b))
			open = append(open, s.write(b, randBytes(rng, n*propBS), rng.IntN(5) == 0))
		case r < 9:
			b := rng.IntN(blocks)
			open = append(open, s.trim(b, 1+rng.IntN(min(2, blocks-b))))
		case r < 10:
			b := rng.IntN(blocks)
			open = append(open, s.zero(b, 1+rng.IntN(min(2, blocks-b))))
		case r < 12:
			open = append(open, s.flush())
		case r < 13:
			marks++
			s.l.Mark(fmt.Sprintf("mark %d", marks))
		default:
			if len(open) == 0 {
				continue
			}
			j := rng.IntN(len(open))
			var err error
			if rng.IntN(15) == 0 {
				err = blk.ErrIO
			}
			open[j].complete(err)
			open = slices.Delete(open, j, j+1)
		}
	}
	return s, func() {
		for _, p := range open {
			p.complete(nil)
		}
	}
}

// checkState checks a state's image against what the model promises: every
// sector holds the base or the data of a write covering it submitted before
// the crash (never bytes from nowhere), and a sector whose last write was
// durable and ordered after every other write to it holds that write.
func checkState(t testing.TB, l *Log, entries []Entry, cs CrashState, img []byte) {
	k := cs.At
	sector := l.SectorSize()
	durable := func(e Entry) bool {
		if e.Done < 0 || e.Done >= k || e.Err != nil {
			return false
		}
		if e.FUA {
			return true
		}
		for _, f := range entries {
			if f.Kind == Flush && f.Done >= 0 && f.Done < k && f.Err == nil && e.Done < f.Submit {
				return true
			}
		}
		return false
	}
	content := func(e Entry, s int) []byte {
		if e.Kind == Write {
			at := s*sector - int(e.Off)
			return e.Data[at : at+sector]
		}
		return make([]byte, sector)
	}
	var marks []string
	for _, e := range entries {
		if e.Kind == Mark && e.Seq < k {
			marks = append(marks, e.Label)
		}
	}
	require.Equal(t, marks, nilIfEmpty(cs.Marks), cs.Name)

	for s := 0; s < len(img)/sector; s++ {
		got := img[s*sector : (s+1)*sector]
		var covering []Entry
		for _, e := range entries {
			if (e.Kind == Write || e.Kind == Trim || e.Kind == WriteZeroes) && e.Submit < k &&
				int(e.Off) <= s*sector && s*sector < int(e.Off+e.Len) {
				covering = append(covering, e)
			}
		}
		from := bytes.Equal(got, l.base[s*sector:(s+1)*sector])
		for _, e := range covering {
			from = from || bytes.Equal(got, content(e, s))
		}
		if !from {
			t.Fatalf("%s: sector %d holds bytes from nowhere", cs.Name, s)
		}

		if len(covering) == 0 {
			continue
		}
		last := covering[len(covering)-1]
		if !durable(last) {
			continue
		}
		ordered := true
		for _, e := range covering[:len(covering)-1] {
			ordered = ordered && e.Done >= 0 && e.Err == nil && e.Done < last.Submit
		}
		if ordered && !bytes.Equal(content(last, s), got) {
			t.Fatalf("%s: sector %d lost durable write %d", cs.Name, s, last.Seq)
		}
	}
}

func TestPropertyRandomLogs(t *testing.T) {
	logs := 300
	if testing.Short() || raceEnabled {
		logs = 60
	}
	var states, torn, reordered, withRaces int
	for seed := range logs {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		s, finish := randomLog(t, rng, 10+rng.IntN(40))
		all, st := s.l.Enumerate(EnumerateOptions{Seed: uint64(seed)})
		require.Equal(t, st.Distinct, len(all))
		// The states stay valid as the log moves on.
		finish()
		entries := s.l.Entries()
		if len(s.l.Races()) > 0 {
			withRaces++
		}
		type key struct {
			marks int
			img   string
		}
		seenImg := map[key]string{}
		digests := map[uint64]string{}
		for _, cs := range all {
			img := s.l.Materialize(cs)
			if !bytes.Equal(reference(t, entries, s.l.base, s.l.bs, s.l.sector, cs), img) {
				t.Fatalf("seed %d %s: materialized image differs from the reference", seed, cs.Name)
			}
			checkState(t, s.l, entries, cs, img)

			k := key{len(cs.Marks), string(img)}
			if prev, dup := seenImg[k]; dup {
				t.Fatalf("seed %d: %s repeats %s", seed, cs.Name, prev)
			}
			seenImg[k] = cs.Name
			if d, ok := digests[cs.Digest]; ok && d != string(img) {
				t.Fatalf("seed %d %s: one digest, two images", seed, cs.Name)
			}
			digests[cs.Digest] = string(img)

			back, err := s.l.ParseState(cs.Name)
			if err != nil || !reflect.DeepEqual(cs, back) {
				t.Fatalf("seed %d: ParseState(%s) = %+v, %v; want %+v", seed, cs.Name, back, err, cs)
			}

			states++
			if len(cs.Torn) > 0 {
				torn++
			}
			if len(cs.Reorder) > 0 {
				reordered++
			}
		}
	}
	t.Logf("%d logs (%d with races), %d states: %d torn, %d reordered", logs, withRaces, states, torn, reordered)
	assert.Positive(t, torn)
	assert.Positive(t, reordered)
}

func TestEnumerateIsDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 7))
	s, finish := randomLog(t, rng, 60)
	defer finish()
	opts := EnumerateOptions{Seed: 9, MaxPerPoint: 20, MaxStates: 200}
	a, sa := s.l.Enumerate(opts)
	b, sb := s.l.Enumerate(opts)
	assert.Equal(t, sa, sb)
	assert.Equal(t, names(a), names(b))
	opts.Seed = 10
	c, _ := s.l.Enumerate(opts)
	assert.NotEqual(t, names(a), names(c), "another seed draws other states")
}

func TestEnumerateCaps(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 7))
	s, finish := randomLog(t, rng, 80)
	defer finish()
	all, st := s.l.Enumerate(EnumerateOptions{Seed: 1})
	require.Equal(t, st.Distinct, st.Returned)
	require.Equal(t, len(all), st.Returned)
	require.LessOrEqual(t, st.Distinct, st.Generated)
	t.Logf("uncapped: %+v", st)

	perPoint, sp := s.l.Enumerate(EnumerateOptions{Seed: 1, MaxPerPoint: 3})
	assert.Equal(t, st.Distinct, sp.Distinct, "caps do not change what was possible")
	assert.Equal(t, len(perPoint), sp.Returned)
	assert.Positive(t, sp.CappedPoints)
	at := map[int]int{}
	for _, cs := range perPoint {
		at[cs.At]++
	}
	for k, n := range at {
		assert.LessOrEqual(t, n, 3, "point %d", k)
	}

	capped, sc := s.l.Enumerate(EnumerateOptions{Seed: 1, MaxStates: 25})
	assert.Len(t, capped, 25)
	assert.Equal(t, 25, sc.Returned)
	assert.Equal(t, st.Distinct, sc.Distinct)
	assert.True(t, slices.IsSortedFunc(capped, func(x, y CrashState) int { return x.At - y.At }))
	// Every capped state is one of the uncapped ones.
	full := map[string]bool{}
	for _, cs := range all {
		full[cs.Name] = true
	}
	for _, cs := range capped {
		assert.True(t, full[cs.Name], cs.Name)
	}

	// Points restrict the enumeration.
	pts := s.l.CrashPoints()
	one, so := s.l.Enumerate(EnumerateOptions{Seed: 1, Points: pts[len(pts)/2 : len(pts)/2+1]})
	assert.Equal(t, 1, so.Points)
	for _, cs := range one {
		assert.Equal(t, pts[len(pts)/2], cs.At)
	}
}

func TestParseStateRejects(t *testing.T) {
	s := newScript(t, bs, 4, base)
	a := s.write(0, fill(0xA1, 2*bs), false)
	b := s.write(1, fill(0xB2, 2*bs), false)
	a.complete(nil)
	b.complete(nil)
	s.do(s.write(3, dataA, true))
	end := s.clock()
	for _, name := range []string{
		"",
		"@999",
		fmt.Sprintf("@%d maybe{%d}", end, 4),   // a FUA write, durable
		fmt.Sprintf("@%d maybe{%d}", end, 2),   // not a write
		fmt.Sprintf("@%d maybe{%d}", 1, b.seq), // submitted after the crash
		fmt.Sprintf("@%d maybe{%d} torn{%d:0-15}", end, a.seq, a.seq),                    // all sectors
		fmt.Sprintf("@%d maybe{%d} torn{%d:3}", end, a.seq, b.seq),                       // torn but not landed
		fmt.Sprintf("@%d maybe{%d} reorder{%d->%d}", end, a.seq, b.seq, a.seq),           // b did not land
		fmt.Sprintf("@%d maybe{%d,%d} reorder{%d->%d}", end, a.seq, b.seq, a.seq, b.seq), // backwards
	} {
		_, err := s.l.ParseState(name)
		assert.Error(t, err, name)
	}
	cs, err := s.l.ParseState(fmt.Sprintf("@%d maybe{%d,%d} torn{%d:0-3,9} reorder{%d->%d}", end, a.seq, b.seq, a.seq, b.seq, a.seq))
	require.NoError(t, err)
	img := s.l.Materialize(cs)
	assert.Equal(t, reference(t, s.l.Entries(), s.l.base, s.l.bs, s.l.sector, cs), img)
	assert.Equal(t, []Tear{{a.seq, []Sectors{{0, 4}, {9, 10}}}}, cs.Torn)
	// Sector 9 of a is block 1's second sector: a landed over b there.
	assert.Equal(t, fill(0xA1, SectorSize), img[bs+SectorSize:bs+2*SectorSize])
	assert.Equal(t, fill(0xB2, SectorSize), img[bs:bs+SectorSize])
}

func TestParseStateRejectsCycles(t *testing.T) {
	s := newScript(t, bs, 4, base)
	a := s.write(0, fill(0xA1, 2*bs), false)
	m := s.write(0, dataB, false)
	b := s.write(0, fill(0xC3, 2*bs), false)
	m.complete(nil)
	s.do(s.flush()) // m is durable, a and b not
	a.complete(nil)
	b.complete(nil)
	end := s.clock()
	// b before a alone leaves m after a (submission order), b after m,
	// and a after b: a cycle on block 0.
	_, err := s.l.ParseState(fmt.Sprintf("@%d maybe{%d,%d} reorder{%d->%d}", end, a.seq, b.seq, b.seq, a.seq))
	assert.ErrorContains(t, err, "cycle")
	// a landing last, after m and b, is an order.
	cs, err := s.l.ParseState(fmt.Sprintf("@%d maybe{%d,%d} reorder{%d->%d %d->%d}", end, a.seq, b.seq, m.seq, a.seq, b.seq, a.seq))
	require.NoError(t, err)
	img := s.l.Materialize(cs)
	assert.Equal(t, fill(0xA1, 2*bs), img[:2*bs])
	// Enumerate reverses pairs that way: some state has a over m.
	found := false
	for _, st := range allAt(s.l, end, EnumerateOptions{Seed: 1}) {
		if len(st.Reorder) > 0 && bytes.Equal(s.l.Materialize(st)[:2*bs], fill(0xA1, 2*bs)) {
			found = true
		}
	}
	assert.True(t, found)
}
