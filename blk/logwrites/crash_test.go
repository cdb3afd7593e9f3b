package logwrites

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
)

const (
	bs   = 4096
	base = 0x11
)

var (
	dataA = fill(0xA1, bs)
	dataB = fill(0xB2, bs)
)

// count returns how many images have block i equal to data.
func count(s *script, imgs [][]byte, i int, data []byte) int {
	n := 0
	for _, img := range imgs {
		if bytes.Equal(s.blockOf(img, i), data) {
			n++
		}
	}
	return n
}

func TestFlushedWriteIsInEveryState(t *testing.T) {
	s := newScript(t, bs, 4, base)
	s.do(s.write(0, dataA, false))
	f := s.do(s.flush())
	end := s.clock()

	imgs := images(t, s.l, allAt(s.l, end, EnumerateOptions{Seed: 1}))
	require.NotEmpty(t, imgs)
	assert.Equal(t, len(imgs), count(s, imgs, 0, dataA), "a flushed write is durable")

	// Just before the flush completed, it was not.
	imgs = images(t, s.l, allAt(s.l, f.seq+1, EnumerateOptions{Seed: 1}))
	assert.Positive(t, count(s, imgs, 0, dataA))
	assert.Positive(t, count(s, imgs, 0, fill(base, bs)))
	assert.Equal(t, []int{2, 3, 4}, s.l.CrashPoints())
}

func TestUnflushedWriteMayOrMayNotLand(t *testing.T) {
	s := newScript(t, bs, 4, base)
	s.do(s.write(1, dataA, false))
	end := s.clock()
	states := allAt(s.l, end, EnumerateOptions{Seed: 1})
	imgs := images(t, s.l, states)
	assert.Positive(t, count(s, imgs, 1, dataA), "landed")
	assert.Positive(t, count(s, imgs, 1, fill(base, bs)), "not landed")
	for _, img := range imgs {
		for _, b := range []int{0, 2, 3} {
			assert.Equal(t, fill(base, bs), s.blockOf(img, b), "a block nothing wrote")
		}
	}
}

func TestFUAIsDurableOnCompletion(t *testing.T) {
	s := newScript(t, bs, 4, base)
	w := s.do(s.write(2, dataA, true))
	end := s.clock()
	assert.Equal(t, []int{1, 2}, s.l.CrashPoints(), "just before and after the FUA write's completion")

	imgs := images(t, s.l, allAt(s.l, end, EnumerateOptions{Seed: 1}))
	assert.Equal(t, len(imgs), count(s, imgs, 2, dataA))

	// While it was in flight it may not have landed.
	imgs = images(t, s.l, allAt(s.l, w.seq+1, EnumerateOptions{Seed: 1}))
	assert.Positive(t, count(s, imgs, 2, dataA))
	assert.Positive(t, count(s, imgs, 2, fill(base, bs)))
}

// A flush covers the writes that completed before it was submitted, not the
// ones submitted before it.
func TestFlushDoesNotCoverWriteCompletingAfterItsSubmission(t *testing.T) {
	s := newScript(t, bs, 4, base)
	w := s.write(0, dataA, false)
	f := s.flush()
	w.complete(nil)
	f.complete(nil)
	end := s.clock()
	imgs := images(t, s.l, allAt(s.l, end, EnumerateOptions{Seed: 1}))
	assert.Positive(t, count(s, imgs, 0, fill(base, bs)), "the flush did not cover the write")

	// The next flush does.
	s.do(s.flush())
	imgs = images(t, s.l, allAt(s.l, s.clock(), EnumerateOptions{Seed: 1}))
	assert.Equal(t, len(imgs), count(s, imgs, 0, dataA))
}

func TestTornWriteMixesSectors(t *testing.T) {
	s := newScript(t, bs, 4, base)
	w := s.do(s.write(1, dataA, false))
	states := allAt(s.l, s.clock(), EnumerateOptions{Seed: 3})
	var torn, prefix int
	for _, cs := range states {
		if len(cs.Torn) == 0 {
			continue
		}
		torn++
		require.Len(t, cs.Torn, 1)
		require.Equal(t, w.seq, cs.Torn[0].Seq)
		img := s.l.Materialize(cs)
		landed := make([]bool, bs/SectorSize)
		for _, r := range cs.Torn[0].Landed {
			for q := r.Start; q < r.End; q++ {
				landed[q] = true
			}
		}
		require.Contains(t, landed, true)
		require.Contains(t, landed, false)
		for q, in := range landed {
			want := byte(base)
			if in {
				want = 0xA1
			}
			off := bs + q*SectorSize
			assert.Equal(t, fill(want, SectorSize), img[off:off+SectorSize], "%s: sector %d", cs.Name, q)
		}
		if len(cs.Torn[0].Landed) == 1 && cs.Torn[0].Landed[0].Start == 0 {
			prefix++
		}
	}
	assert.Positive(t, torn)
	assert.Positive(t, prefix, "a prefix tear")

	// With 4 KiB tear units a one-block write does not tear.
	for _, cs := range allAt(s.l, s.clock(), EnumerateOptions{Seed: 3, TearUnit: 4096}) {
		assert.Empty(t, cs.Torn, cs.Name)
	}
	for _, cs := range allAt(s.l, s.clock(), EnumerateOptions{Seed: 3, NoTears: true}) {
		assert.Empty(t, cs.Torn, cs.Name)
	}
}

func TestConcurrentOverlappingWritesReorder(t *testing.T) {
	s := newScript(t, bs, 4, base)
	// a covers blocks 0-1, b blocks 1-2: they overlap in block 1, so only
	// a reorder leaves a over b there with both landed (a reorder of
	// writes overlapping entirely looks like the earlier alone, and is
	// kept once).
	a := s.write(0, fill(0xA1, 2*bs), false)
	b := s.write(1, fill(0xB2, 2*bs), false)
	a.complete(nil)
	b.complete(nil)
	assert.Equal(t, []Swap{{a.seq, b.seq}}, s.l.Races())
	states := allAt(s.l, s.clock(), EnumerateOptions{Seed: 1})
	var reordered int
	for _, cs := range states {
		img := s.l.Materialize(cs)
		if len(cs.Torn) > 0 || len(cs.Maybe) < 2 {
			continue
		}
		assert.Equal(t, dataA, s.blockOf(img, 0), cs.Name)
		assert.Equal(t, dataB, s.blockOf(img, 2), cs.Name)
		if len(cs.Reorder) > 0 {
			reordered++
			assert.Equal(t, []Swap{{a.seq, b.seq}}, cs.Reorder)
			assert.Equal(t, dataA, s.blockOf(img, 1), "%s: b landed first, a last", cs.Name)
		} else {
			assert.Equal(t, dataB, s.blockOf(img, 1), "%s: submission order", cs.Name)
		}
	}
	assert.Positive(t, reordered)
	images(t, s.l, states)

	for _, cs := range allAt(s.l, s.clock(), EnumerateOptions{Seed: 1, NoReorders: true}) {
		assert.Empty(t, cs.Reorder)
	}

	// Once both are flushed the pair is settled: submission order.
	s.do(s.flush())
	for _, cs := range allAt(s.l, s.clock(), EnumerateOptions{Seed: 1}) {
		assert.Empty(t, cs.Reorder)
		assert.Equal(t, dataB, s.blockOf(s.l.Materialize(cs), 1))
	}
}

func TestOrderedOverlappingWritesDoNotReorder(t *testing.T) {
	s := newScript(t, bs, 4, base)
	s.do(s.write(0, dataA, false))
	b := s.do(s.write(0, dataB, true))
	assert.Empty(t, s.l.Races())
	// b completed after a did, and is durable: a can no longer show.
	imgs := images(t, s.l, allAt(s.l, s.clock(), EnumerateOptions{Seed: 1}))
	assert.Equal(t, len(imgs), count(s, imgs, 0, dataB))
	// Before b completed, a may show, or b, or neither, never a over b.
	states := allAt(s.l, b.seq+1, EnumerateOptions{Seed: 1})
	for _, cs := range states {
		assert.Empty(t, cs.Reorder)
	}
	imgs = images(t, s.l, states)
	assert.Positive(t, count(s, imgs, 0, dataA))
	assert.Positive(t, count(s, imgs, 0, dataB))
	assert.Positive(t, count(s, imgs, 0, fill(base, bs)))
}

func TestFailedRequests(t *testing.T) {
	s := newScript(t, bs, 4, base)
	w := s.write(0, dataA, false).complete(blk.ErrIO)
	require.ErrorIs(t, w.err, blk.ErrIO, "the caller gets the error")
	s.do(s.flush())
	// A failed write is never durable, even after a flush.
	imgs := images(t, s.l, allAt(s.l, s.clock(), EnumerateOptions{Seed: 1}))
	assert.Positive(t, count(s, imgs, 0, dataA))
	assert.Positive(t, count(s, imgs, 0, fill(base, bs)))
	e := s.l.Entries()[0]
	assert.Equal(t, w.seq, e.Seq)
	assert.ErrorIs(t, e.Err, blk.ErrIO)

	// A failed flush makes nothing durable.
	s.do(s.write(1, dataB, false))
	s.flush().complete(blk.ErrIO)
	imgs = images(t, s.l, allAt(s.l, s.clock(), EnumerateOptions{Seed: 1}))
	assert.Positive(t, count(s, imgs, 1, fill(base, bs)))
}

func TestTrimAndZeroesAreWritesOfZeroes(t *testing.T) {
	s := newScript(t, bs, 4, base)
	s.do(s.trim(0, 2))
	s.do(s.zero(3, 1))
	s.do(s.flush())
	imgs := images(t, s.l, allAt(s.l, s.clock(), EnumerateOptions{Seed: 1}))
	zero := make([]byte, bs)
	for _, img := range imgs {
		assert.Equal(t, zero, s.blockOf(img, 0))
		assert.Equal(t, zero, s.blockOf(img, 1))
		assert.Equal(t, fill(base, bs), s.blockOf(img, 2))
		assert.Equal(t, zero, s.blockOf(img, 3))
	}
}

func TestMarks(t *testing.T) {
	s := newScript(t, bs, 4, base)
	s.do(s.write(0, dataA, true))
	s.l.Mark("acked 1")
	s.do(s.write(1, dataB, true))
	s.l.Mark("acked 2")
	states, _ := s.l.Enumerate(EnumerateOptions{Seed: 1})
	seen := map[int]bool{}
	for _, cs := range states {
		var want []string
		if cs.At > 2 {
			want = append(want, "acked 1")
		}
		if cs.At > 5 {
			want = append(want, "acked 2")
		}
		assert.Equal(t, want, nilIfEmpty(cs.Marks), cs.Name)
		seen[len(cs.Marks)] = true
		// What the marks say was acknowledged is there.
		img := s.l.Materialize(cs)
		if len(cs.Marks) >= 1 {
			assert.Equal(t, dataA, s.blockOf(img, 0))
		}
		if len(cs.Marks) >= 2 {
			assert.Equal(t, dataB, s.blockOf(img, 1))
		}
	}
	assert.Equal(t, map[int]bool{0: true, 1: true, 2: true}, seen)
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func TestInFlightAtTheEnd(t *testing.T) {
	s := newScript(t, bs, 4, base)
	s.do(s.write(0, dataA, true))
	w := s.write(1, dataB, true) // never completes before the enumeration
	states, _ := s.l.Enumerate(EnumerateOptions{Seed: 1})
	imgs := images(t, s.l, states)
	assert.Positive(t, count(s, imgs, 1, dataB))
	assert.Positive(t, count(s, imgs, 1, fill(base, bs)))
	// The states stay valid once the log moves on.
	w.complete(nil)
	s.do(s.flush())
	images(t, s.l, states)
}
