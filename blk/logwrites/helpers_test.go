package logwrites

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"yolk/blk"
)

// gate is a device whose requests wait for the test to complete them, so a
// test scripts the exact interleaving of submissions and completions.
type gate struct {
	*blk.RAM
	arrive chan *gateReq
}

type gateReq struct {
	op      blk.Op
	release chan error
}

func (g *gate) Features() blk.Features {
	return blk.FlushFeature | blk.FUAFeature | blk.TrimFeature | blk.WriteZeroesFeature
}

func (g *gate) wait(op blk.Op) error {
	r := &gateReq{op: op, release: make(chan error)}
	g.arrive <- r
	return <-r.release
}

func (g *gate) WriteAt(p []byte, off int64, f blk.WriteFlags) error {
	if err := g.wait(blk.OpWrite); err != nil {
		return err
	}
	return g.RAM.WriteAt(p, off, f)
}

func (g *gate) Flush() error {
	if err := g.wait(blk.OpFlush); err != nil {
		return err
	}
	return g.RAM.Flush()
}

func (g *gate) Trim(off, n int64) error {
	if err := g.wait(blk.OpTrim); err != nil {
		return err
	}
	return g.RAM.Trim(off, n)
}

func (g *gate) WriteZeroes(off, n int64, f blk.WriteFlags) error {
	if err := g.wait(blk.OpWriteZeroes); err != nil {
		return err
	}
	return g.RAM.WriteZeroes(off, n, f)
}

// script drives a Log over a gate.
type script struct {
	t    testing.TB
	g    *gate
	l    *Log
	bs   int
	open []*pending
}

type pending struct {
	s    *script
	r    *gateReq
	done chan error
	err  error // the request's result, once complete
	seq  int
}

// newScript makes a Log over a gated RAM device of blocks blocks of bs
// bytes, whose base image is filled with base (0: zeroes).
func newScript(t testing.TB, bs, blocks int, base byte) *script {
	return newScriptImage(t, bs, fill(base, bs*blocks))
}

// newScriptImage makes a Log over a gated RAM device holding img.
func newScriptImage(t testing.TB, bs int, img []byte) *script {
	ram, err := blk.NewRAM(blk.RAMConfig{Size: int64(len(img)), BlockSize: bs})
	require.NoError(t, err)
	require.NoError(t, ram.WriteAt(img, 0, 0))
	g := &gate{RAM: ram, arrive: make(chan *gateReq)}
	l, err := New(g)
	require.NoError(t, err)
	s := &script{t: t, g: g, l: l, bs: bs}
	t.Cleanup(func() {
		for _, p := range s.open {
			if p.r != nil {
				p.complete(nil)
			}
		}
	})
	return s
}

func (s *script) start(do func() error) *pending {
	s.l.mu.Lock()
	seq := s.l.clock
	s.l.mu.Unlock()
	p := &pending{s: s, done: make(chan error, 1), seq: seq}
	go func() { p.done <- do() }()
	// The Log records the submission before it calls the device, so
	// once the request arrives here, its position is taken.
	p.r = <-s.g.arrive
	s.open = append(s.open, p)
	return p
}

func (s *script) write(block int, data []byte, fua bool) *pending {
	var f blk.WriteFlags
	if fua {
		f = blk.FUA
	}
	return s.start(func() error { return s.l.WriteAt(data, int64(block*s.bs), f) })
}

func (s *script) flush() *pending { return s.start(s.l.Flush) }

func (s *script) trim(block, n int) *pending {
	return s.start(func() error { return s.l.Trim(int64(block*s.bs), int64(n*s.bs)) })
}

func (s *script) zero(block, n int) *pending {
	return s.start(func() error { return s.l.WriteZeroes(int64(block*s.bs), int64(n*s.bs), 0) })
}

// complete completes the request with err (nil: success) and waits until
// the Log has recorded it.
func (p *pending) complete(err error) *pending {
	p.r.release <- err
	p.r = nil
	p.err = <-p.done
	p.s.open = slices.DeleteFunc(p.s.open, func(q *pending) bool { return q == p })
	return p
}

// do submits and completes a request.
func (s *script) do(p *pending) *pending { return p.complete(nil) }

func (s *script) clock() int {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	return s.l.clock
}

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// blockOf returns block i of img.
func (s *script) blockOf(img []byte, i int) []byte { return img[i*s.bs : (i+1)*s.bs] }

// images materializes every state.
func images(t testing.TB, l *Log, states []CrashState) [][]byte {
	out := make([][]byte, len(states))
	for i, cs := range states {
		out[i] = l.Materialize(cs)
		ref := reference(t, l.Entries(), l.base, l.bs, l.sector, cs)
		require.True(t, bytes.Equal(ref, out[i]), "state %s: materialized image differs from the reference", cs.Name)
	}
	return out
}

func allAt(l *Log, k int, opts EnumerateOptions) []CrashState {
	opts.Points = []int{k}
	states, _ := l.Enumerate(opts)
	return states
}

// reference builds a state's image from the log entries alone, the slow
// obvious way: every write submitted before the crash that is durable or
// chosen, in an order that respects every overlapping pair (reversed for the
// state's reorders), each laying down its landed sectors.
func reference(t testing.TB, entries []Entry, base []byte, bs, sector int, cs CrashState) []byte {
	k := cs.At
	img := bytes.Clone(base)
	var flushes []Entry
	for _, e := range entries {
		if e.Kind == Flush && e.Done >= 0 && e.Done < k && e.Err == nil {
			flushes = append(flushes, e)
		}
	}
	durable := func(e Entry) bool {
		if e.Done < 0 || e.Done >= k || e.Err != nil {
			return false
		}
		if e.FUA {
			return true
		}
		for _, f := range flushes {
			if e.Done < f.Submit {
				return true
			}
		}
		return false
	}
	var ws []Entry
	for _, e := range entries {
		if e.Submit >= k || (e.Kind != Write && e.Kind != Trim && e.Kind != WriteZeroes) ||
			e.Len == 0 || blk.CheckRequest(bs, int64(len(base)), e.Off, e.Len) != nil {
			continue
		}
		if durable(e) || slices.Contains(cs.Maybe, e.Seq) {
			ws = append(ws, e)
		}
	}
	overlap := func(x, y Entry) bool { return x.Off < y.Off+y.Len && y.Off < x.Off+x.Len }
	swapped := func(x, y Entry) bool { return slices.Contains(cs.Reorder, Swap{x.Seq, y.Seq}) }
	for _, r := range cs.Reorder {
		var x, y Entry
		for _, e := range ws {
			if e.Seq == r.Earlier {
				x = e
			}
			if e.Seq == r.Later {
				y = e
			}
		}
		if !overlap(x, y) || !(x.Done < 0 || x.Err != nil || x.Done > y.Submit) {
			t.Fatalf("%s: reorder of writes that do not overlap or were not in flight together", cs.Name)
		}
	}
	// Kahn's algorithm, lowest Seq first among the ready.
	placed := make([]bool, len(ws))
	for range ws {
		next := -1
		for j := range ws {
			if placed[j] {
				continue
			}
			ready := true
			for q := range ws {
				if q == j || placed[q] || !overlap(ws[q], ws[j]) {
					continue
				}
				x, y := q, j // must x land before j?
				if ws[x].Seq < ws[y].Seq && !swapped(ws[x], ws[y]) || ws[x].Seq > ws[y].Seq && swapped(ws[y], ws[x]) {
					ready = false
					break
				}
			}
			if ready {
				next = j
				break
			}
		}
		if next < 0 {
			t.Fatalf("%s: the reorders make a cycle", cs.Name)
		}
		placed[next] = true
		e := ws[next]
		landed := []Sectors{{0, int(e.Len) / sector}}
		for _, tr := range cs.Torn {
			if tr.Seq == e.Seq {
				landed = tr.Landed
			}
		}
		for _, r := range landed {
			dst := img[int(e.Off)+r.Start*sector : int(e.Off)+r.End*sector]
			if e.Kind == Write {
				copy(dst, e.Data[r.Start*sector:])
			} else {
				clear(dst)
			}
		}
	}
	return img
}

func names(states []CrashState) []string {
	out := make([]string, len(states))
	for i, cs := range states {
		out[i] = cs.Name
	}
	return out
}

func describe(states []CrashState) string {
	return fmt.Sprint(names(states))
}
