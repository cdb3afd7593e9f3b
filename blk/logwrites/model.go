package logwrites

import (
	"encoding/binary"
	"math"
	"slices"
	"sort"

	"yolk/blk"
)

// never is a position no event reaches: the completion of a write that has
// not completed, or that failed and so may still land at any time.
const never = math.MaxInt

// model is the analysis of the log as of one clock. Writes here are the
// requests that change data (writes, trims, zeroing) and could have reached
// the media: one outside the device or misaligned was refused before it got
// there, and is left out.
type model struct {
	clock    int
	sector   int
	zeroHash uint64 // the hash of a sector of zeroes
	writes   []mwrite
	// submits[i] is writes[i].submit, for counting the writes submitted
	// before a position.
	submits []int
	// maxDurableAt[i] is the latest durableAt of writes[:i]: the first i
	// writes are all durable at k iff maxDurableAt[i] <= k.
	maxDurableAt []int
	// horizon[h] is the largest h' <= h such that no concurrent
	// overlapping pair of writes straddles h' (see horizonAt).
	horizon []int
	// pairs are the overlapping writes that were in flight together
	// (a < b), ordered by b then a: the pairs that may land in either
	// order.
	pairs     []pair
	markPos   []int
	markLabel []string
}

type mwrite struct {
	seq    int
	submit int
	done   int // completion position; never if it has not completed or failed
	fua    bool
	failed bool
	s0, s1 int    // the sectors it covers, [s0, s1)
	data   []byte // nil: zeroes
	// durableAt is the first k at which the write is durable: the
	// position after the completion of its FUA write or of the first
	// flush submitted after it completed; never if none.
	durableAt int
	hash      []uint64 // per-sector content hashes; nil: zeroes
}

type pair struct{ a, b int } // write indices, a < b

func (m *model) durable(i, k int) bool { return m.writes[i].durableAt <= k }

// submittedBefore is the number of writes submitted before k.
func (m *model) submittedBefore(k int) int {
	n, _ := slices.BinarySearch(m.submits, k)
	return n
}

// horizonAt is the horizon for a crash at k: the largest h such that every
// write before h is durable at k and lands before every write from h on
// that overlaps it. The image at k is then the image of writes[:h] applied
// in order (which does not depend on k, so it can be kept and moved
// forward), plus whatever the state chooses among writes[h:n].
func (m *model) horizonAt(k int) int {
	lim := sort.Search(len(m.maxDurableAt), func(i int) bool { return m.maxDurableAt[i] > k }) - 1
	lim = min(lim, m.submittedBefore(k))
	return m.horizon[lim]
}

// concurrent says whether writes a < b were in flight together.
func (m *model) concurrent(a, b int) bool { return m.writes[b].submit < m.writes[a].done }

func (m *model) overlap(a, b int) bool {
	x, y := &m.writes[a], &m.writes[b]
	return x.s0 < y.s1 && y.s0 < x.s1
}

// index returns the index of the write with the given seq, or -1.
func (m *model) index(seq int) int {
	i, ok := slices.BinarySearch(m.submits, seq)
	if !ok {
		return -1
	}
	return i
}

// marksBefore is the number of marks before k.
func (m *model) marksBefore(k int) int {
	n, _ := slices.BinarySearch(m.markPos, k)
	return n
}

// secHash is the content hash of absolute sector s of write i.
func (m *model) secHash(i, s int) uint64 {
	w := &m.writes[i]
	if w.hash == nil {
		return m.zeroHash
	}
	return w.hash[s-w.s0]
}

// copySectors copies sectors [s0, s1) of write i into img.
func (m *model) copySectors(img []byte, i, s0, s1 int) {
	w := &m.writes[i]
	dst := img[s0*m.sector : s1*m.sector]
	if w.data == nil {
		clear(dst)
		return
	}
	copy(dst, w.data[(s0-w.s0)*m.sector:])
}

// current returns the analysis of the log as it is now.
func (l *Log) current() *model {
	l.modelMu.Lock()
	defer l.modelMu.Unlock()
	l.mu.Lock()
	if l.model != nil && l.model.clock == l.clock {
		l.mu.Unlock()
		return l.model
	}
	entries, clock := slices.Clone(l.entries), l.clock
	l.mu.Unlock()
	if l.baseHash == nil {
		l.baseHash = sectorHashes(l.base, l.sector)
	}
	l.model = buildModel(entries, clock, l.bs, l.size, l.sector, l.model)
	return l.model
}

func buildModel(entries []Entry, clock, bs int, size int64, sector int, prev *model) *model {
	m := &model{clock: clock, sector: sector, zeroHash: sectorHash(make([]byte, sector))}
	type flush struct{ submit, done int }
	var flushes []flush
	for _, e := range entries {
		switch e.Kind {
		case Mark:
			m.markPos = append(m.markPos, e.Seq)
			m.markLabel = append(m.markLabel, e.Label)
		case Flush:
			if e.Done >= 0 && e.Err == nil {
				flushes = append(flushes, flush{e.Submit, e.Done})
			}
		case Write, Trim, WriteZeroes:
			if e.Len == 0 || blk.CheckRequest(bs, size, e.Off, e.Len) != nil {
				continue
			}
			w := mwrite{
				seq:    e.Seq,
				submit: e.Submit,
				done:   e.Done,
				fua:    e.FUA,
				failed: e.Err != nil,
				s0:     int(e.Off / int64(sector)),
				s1:     int((e.Off + e.Len) / int64(sector)),
			}
			if e.Kind == Write {
				w.data = e.Data
			}
			if w.done < 0 || w.failed {
				w.done = never
			}
			m.writes = append(m.writes, w)
		}
	}

	// A write is durable after the first flush submitted after it
	// completed has completed: flushes are in submission order, so that
	// is the earliest completion among the flushes from the first one
	// submitted after it on.
	minDone := make([]int, len(flushes)+1)
	minDone[len(flushes)] = never
	for j := len(flushes) - 1; j >= 0; j-- {
		minDone[j] = min(minDone[j+1], flushes[j].done)
	}
	n := len(m.writes)
	m.submits = make([]int, n)
	m.maxDurableAt = make([]int, n+1)
	for i := range m.writes {
		w := &m.writes[i]
		m.submits[i] = w.submit
		w.durableAt = never
		if w.done != never {
			if w.fua {
				w.durableAt = w.done + 1
			} else {
				j := sort.Search(len(flushes), func(j int) bool { return flushes[j].submit > w.done })
				if minDone[j] != never {
					w.durableAt = minDone[j] + 1
				}
			}
		}
		m.maxDurableAt[i+1] = max(m.maxDurableAt[i], w.durableAt)
		// Data never changes once logged: keep the hashes already made.
		if prev != nil && i < len(prev.writes) {
			w.hash = prev.writes[i].hash
		} else if w.data != nil {
			w.hash = sectorHashes(w.data, sector)
		}
	}

	// Pairs: a write is concurrent with those submitted while it was in
	// flight.
	for a := range m.writes {
		for b := a + 1; b < n && m.concurrent(a, b); b++ {
			if m.overlap(a, b) {
				m.pairs = append(m.pairs, pair{a, b})
			}
		}
	}
	slices.SortFunc(m.pairs, func(x, y pair) int {
		if x.b != y.b {
			return x.b - y.b
		}
		return x.a - y.a
	})

	// A pair a < b straddles every h in (a, b]: mark those blocked.
	blocked := make([]int, n+2)
	for _, p := range m.pairs {
		blocked[p.a+1]++
		blocked[p.b+1]--
	}
	m.horizon = make([]int, n+1)
	depth := 0
	for h := 0; h <= n; h++ {
		depth += blocked[h]
		if depth == 0 {
			m.horizon[h] = h
		} else {
			m.horizon[h] = m.horizon[h-1]
		}
	}
	return m
}

// Content hashes identify states with the same image. A sector's hash runs
// its words through a chain of bijections, so sectors differing in one word
// always differ; an image's digest is the sum over sectors of a mix of the
// sector number and its hash, less the base's, so that a state's digest is
// its snapshot's plus the change its own writes make.

func sectorHash(b []byte) uint64 {
	h := uint64(0x243F6A8885A308D3)
	for i := 0; i+8 <= len(b); i += 8 {
		h ^= binary.LittleEndian.Uint64(b[i:])
		h *= 0x9E3779B97F4A7C15
		h ^= h >> 29
	}
	return fmix(h ^ uint64(len(b)))
}

func sectorHashes(b []byte, sector int) []uint64 {
	hs := make([]uint64, len(b)/sector)
	for i := range hs {
		hs[i] = sectorHash(b[i*sector : (i+1)*sector])
	}
	return hs
}

// fmix is MurmurHash3's 64-bit finalizer.
func fmix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// mix is sector s's term of an image digest.
func mix(s int, h uint64) uint64 {
	return fmix(h ^ (uint64(s)+1)*0xC2B2AE3D27D4EB4F)
}

// Races returns the pairs of overlapping writes that were in flight
// together, by Seq. Their order on the media is undefined even without a
// crash (Linux makes no promise either), so code that needs a result should
// have none. Enumerate reverses each while either write is not settled;
// once both are durable and every later overlapping write ordered after
// them, states keep the submission order, and a test that cares should
// assert there are no races instead.
func (l *Log) Races() []Swap {
	m := l.current()
	out := make([]Swap, len(m.pairs))
	for j, p := range m.pairs {
		out[j] = Swap{Earlier: m.writes[p.a].seq, Later: m.writes[p.b].seq}
	}
	return out
}
