package phys

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// The model test drives a pool with a stream of operations and checks
// every result against an independent reference model: a bitmap of which
// frames are in use, plus the bytes each live allocation wrote. The same
// harness runs random streams (TestModel) and fuzzer-chosen ones
// (FuzzModel).

const testBase = 0x88000000 // the image's pool base, 4 MiB aligned

var zeros = make([]byte, PageSize<<MaxOrder)

type allocation struct {
	pfn   PFN
	order int
	refs  int
	fill  byte
}

type harness struct {
	t     testing.TB
	p     *Pool
	used  []bool
	nused int
	held  []allocation
	ops   int
	wakes int
	// checkEvery runs Check after that many operations.
	checkEvery int
}

// contexts are the allocation contexts the streams draw from.
var contexts = []Context{
	Kernel, User, NoIO, Nowait, Atomic, Memalloc, Memalloc | NoMemalloc,
	Kernel | ReclaimableAlloc, Atomic | Memalloc, Kernel | Compound,
	HugeUser, Atomic | Zeroed | MovableAlloc,
}

func newHarness(t testing.TB, frames int, cfg Config) *harness {
	cfg.Mem = make([]byte, frames*PageSize)
	cfg.Base = testBase
	// Nothing runs kswapd here, so a throttled reclaimer always waits out
	// its bound: keep the bound and the retries short (their semantics are
	// tested in reserve_test.go), or a stream that fills memory with
	// shared frames spends its time asleep.
	if cfg.ThrottleTimeout == 0 {
		cfg.ThrottleTimeout = time.Microsecond
	}
	if cfg.MaxReclaimRetries == 0 {
		cfg.MaxReclaimRetries = 2
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, p: p, used: make([]bool, frames), checkEvery: 64}
	p.SetReclaimer(h)
	p.SetKswapd(func(int) { h.wakes++ })
	return h
}

// Reclaim is the test's direct reclaim: it frees the oldest live
// allocations holding one reference, up to 2^order+1 frames.
func (h *harness) Reclaim(order int, ctx Context) int {
	freed := 0
	for k := 0; k < len(h.held) && freed < 1<<order+1; {
		if h.held[k].refs != 1 {
			k++
			continue
		}
		freed += 1 << h.held[k].order
		h.release(k)
	}
	return freed
}

func (h *harness) fatalf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("op %d: "+format, append([]any{h.ops}, args...)...)
}

func (h *harness) modelFree() uint64 { return uint64(len(h.used) - h.nused) }

// hasFreeBlock reports whether the model has an aligned free run of
// 2^order frames.
func (h *harness) hasFreeBlock(order int) bool {
	size := 1 << order
	for i := 0; i+size <= len(h.used); i += size {
		free := true
		for k := i; k < i+size; k++ {
			if h.used[k] {
				free = false
				break
			}
		}
		if free {
			return true
		}
	}
	return false
}

// markFor is the least free memory an allocation in ctx may leave.
func (h *harness) markFor(ctx Context) uint64 {
	wm := h.p.Watermarks()
	switch {
	case ctx.mayUseReserve():
		return 0
	case ctx&Atomic != 0:
		m := wm.Min - wm.Min/2
		return m - m/4
	}
	return wm.Min
}

func (h *harness) alloc(order int, ctx Context) {
	h.t.Helper()
	f, err := h.p.Alloc(order, ctx)
	if err != nil {
		if !errors.Is(err, ErrNoMemory) {
			h.fatalf("alloc order %d %v: %v", order, ctx, err)
		}
		// A failure must be justified by the watermark or by
		// fragmentation, judged on the model.
		free := h.modelFree()
		if free >= 1<<order+h.markFor(ctx) && h.hasFreeBlock(order) {
			h.fatalf("alloc order %d %v failed with %d frames free and a free block: %v", order, ctx, free, err)
		}
		return
	}
	i := int(f - h.p.Start())
	if f&PFN(1<<order-1) != 0 || i < 0 || i+1<<order > len(h.used) {
		h.fatalf("alloc order %d returned misaligned or out-of-pool %v", order, f)
	}
	for k := i; k < i+1<<order; k++ {
		if h.used[k] {
			h.fatalf("alloc order %d returned %v, which overlaps a live allocation at %v", order, f, h.p.pfn(uint32(k)))
		}
		h.used[k] = true
	}
	h.nused += 1 << order
	pg := h.p.Page(f)
	free := h.modelFree()
	wm := h.p.Watermarks()
	switch {
	case pg.Pfmemalloc() && (!ctx.mayUseReserve() || free >= wm.Min):
		h.fatalf("%v (%v) marked pfmemalloc with %d free, min %d", f, ctx, free, wm.Min)
	case !pg.Pfmemalloc() && free < h.markFor(ctx&^Memalloc):
		h.fatalf("%v (%v) left %d free, below its mark %d, unmarked", f, ctx, free, h.markFor(ctx&^Memalloc))
	case pg.RefCount() != 1 || pg.Order() != order:
		h.fatalf("%v: refcount %d order %d after alloc of order %d", f, pg.RefCount(), pg.Order(), order)
	case (ctx&Compound != 0 && order > 0) != pg.Test(PGHead):
		h.fatalf("%v (%v, order %d): head flag %v", f, ctx, order, pg.Test(PGHead))
	}
	mem, err := h.p.Block(f, order)
	if err != nil {
		h.fatalf("%v", err)
	}
	if ctx&Zeroed != 0 {
		if !bytes.Equal(mem, zeros[:len(mem)]) {
			k := bytes.LastIndexFunc(mem, func(r rune) bool { return r != 0 })
			h.fatalf("zeroed alloc %v: byte %d is %#x", f, k, mem[k])
		}
	}
	fill := byte(h.ops) | 1
	fillBlock(mem, fill)
	h.held = append(h.held, allocation{pfn: f, order: order, refs: 1, fill: fill})
}

// fillBlock writes a frame's first and last bytes and one in the middle:
// enough to catch two allocations sharing a frame, cheap enough for 4 MiB.
func fillBlock(mem []byte, fill byte) {
	for off := 0; off < len(mem); off += PageSize {
		mem[off], mem[off+PageSize/2], mem[off+PageSize-1] = fill, fill, fill
	}
}

func (h *harness) verifyFill(a allocation) {
	h.t.Helper()
	mem, _ := h.p.Block(a.pfn, a.order)
	for off := 0; off < len(mem); off += PageSize {
		for _, k := range []int{off, off + PageSize/2, off + PageSize - 1} {
			if mem[k] != a.fill {
				h.fatalf("%v: byte %d is %#x, the allocation wrote %#x", a.pfn, k, mem[k], a.fill)
			}
		}
	}
}

// release drops one reference to held[k], freeing it on the last.
func (h *harness) release(k int) {
	h.t.Helper()
	a := &h.held[k]
	h.verifyFill(*a)
	var err error
	if a.refs > 1 || h.p.Page(a.pfn).Test(PGHead) {
		err = h.p.Put(a.pfn)
	} else {
		err = h.p.Free(a.pfn, a.order)
	}
	if err != nil {
		h.fatalf("release %v order %d: %v", a.pfn, a.order, err)
	}
	if a.refs--; a.refs > 0 {
		return
	}
	i := int(a.pfn - h.p.Start())
	for j := i; j < i+1<<a.order; j++ {
		h.used[j] = false
	}
	h.nused -= 1 << a.order
	h.held[k] = h.held[len(h.held)-1]
	h.held = h.held[:len(h.held)-1]
}

// split splits a compound allocation, all its references held through
// its head: the head keeps them, every other frame is freed.
func (h *harness) split(k int) {
	a := h.held[k]
	if err := h.p.SplitCompound(a.pfn, int32(a.refs)); err != nil {
		h.fatalf("split %v: %v", a.pfn, err)
	}
	if pg := h.p.Page(a.pfn); pg.RefCount() != int32(a.refs) || pg.Order() != 0 || pg.Compound() {
		h.fatalf("after split, %v has refcount %d order %d flags %v", a.pfn, pg.RefCount(), pg.Order(), pg.Flags())
	}
	i := int(a.pfn - h.p.Start())
	for j := i + 1; j < i+1<<a.order; j++ {
		h.used[j] = false
	}
	h.nused -= 1<<a.order - 1
	h.held[k].order = 0
}

// badFree tries frees that must be refused, and checks they changed
// nothing.
func (h *harness) badFree(k int, how byte) {
	a := h.held[k]
	free := h.p.FreeFrames()
	var err error
	switch how % 3 {
	case 0: // wrong order
		err = h.p.Free(a.pfn, a.order+1)
	case 1: // a frame outside the pool
		err = h.p.Free(h.p.End()+PFN(how), 0)
	case 2: // a free frame, if there is one
		for i, u := range h.used {
			if !u {
				err = h.p.Free(h.p.pfn(uint32(i)), 0)
				break
			}
		}
		if err == nil && free == 0 {
			return
		}
	}
	if err == nil {
		h.fatalf("bad free %d of %v was accepted", how%3, a.pfn)
	}
	if got := h.p.FreeFrames(); got != free {
		h.fatalf("bad free %d changed free frames %d -> %d", how%3, free, got)
	}
}

// step performs one operation chosen by op, with a and b as arguments.
func (h *harness) step(op, a, b byte) {
	h.ops++
	switch op % 16 {
	case 0, 1, 2, 3, 4, 5:
		// Mostly single frames, some small blocks, now and then a huge
		// page or a 4 MiB block.
		order := []int{0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 4, 8, 0, 2, 9, 10}[a%16]
		h.alloc(order, contexts[int(b)%len(contexts)])
	case 6, 7, 8, 9, 10:
		if len(h.held) > 0 {
			h.release(int(a) * len(h.held) / 256)
		}
	case 11:
		if len(h.held) > 0 {
			k := int(a) * len(h.held) / 256
			if err := h.p.Get(h.held[k].pfn); err != nil {
				h.fatalf("get %v: %v", h.held[k].pfn, err)
			}
			h.held[k].refs++
		}
	case 12:
		for k, al := range h.held {
			if al.order > 0 && h.p.Page(al.pfn).Test(PGHead) {
				h.split(k)
				break
			}
		}
	case 13:
		// min_free_kbytes from 0 (default) up to a fifth of the pool.
		kb := int(a) * len(h.used) * (PageSize >> 10) / 5 / 256
		if err := h.p.SetMinFreeKbytes(kb); err != nil {
			h.fatalf("min_free_kbytes %d: %v", kb, err)
		}
	case 14:
		if len(h.held) > 0 {
			h.badFree(int(a)*len(h.held)/256, b)
		}
	case 15:
		h.check()
	}
	if h.ops%h.checkEvery == 0 {
		h.check()
	}
}

func (h *harness) check() {
	h.t.Helper()
	if err := h.p.Check(); err != nil {
		h.fatalf("invariants: %v", err)
	}
	if got, want := h.p.FreeFrames(), h.modelFree(); got != want {
		h.fatalf("pool says %d frames free, model %d", got, want)
	}
}

// drain frees everything and checks that the pool is whole again.
func (h *harness) drain() {
	h.t.Helper()
	for len(h.held) > 0 {
		h.release(len(h.held) - 1)
	}
	h.check()
	if free := h.p.FreeFrames(); free != uint64(len(h.used)) {
		h.fatalf("after freeing everything, %d of %d frames are free", free, len(h.used))
	}
}

// TestModel runs random operation streams against the model: over a
// million operations in all.
func TestModel(t *testing.T) {
	const streams, opsPerStream = 64, 16 << 10
	var total atomic.Int64
	t.Cleanup(func() {
		t.Logf("%d operations in %d streams", total.Load(), streams)
		if !t.Failed() && total.Load() < 1<<20 {
			t.Errorf("ran %d operations, want at least 1M", total.Load())
		}
	})
	for seed := range streams {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			// Pools of 2 to 9 MiB, some not a multiple of 4 MiB, with
			// and without grouping.
			frames := 512 + seed%8*256 + seed%3*16
			h := newHarness(t, frames, Config{NoGrouping: seed%4 == 3})
			h.checkEvery = 97
			rng := rand.New(rand.NewPCG(uint64(seed), 0x796f6c6b))
			for range opsPerStream {
				h.step(byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()))
			}
			h.drain()
			total.Add(int64(h.ops))
		})
	}
}

// FuzzModel lets the fuzzer choose the operation stream: each three
// bytes are an operation and its two arguments.
func FuzzModel(f *testing.F) {
	f.Add([]byte{0, 0, 0, 6, 0, 0})
	f.Add([]byte{0, 11, 1, 0, 4, 10, 12, 0, 0, 6, 0, 0, 6, 0, 0})
	f.Add([]byte{13, 255, 0, 0, 0, 5, 0, 0, 5, 0, 0, 4, 14, 0, 1, 15, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 3*4096 {
			ops = ops[:3*4096]
		}
		h := newHarness(t, 768, Config{NoGrouping: len(ops)%5 == 4})
		h.checkEvery = 16
		for k := 0; k+2 < len(ops); k += 3 {
			h.step(ops[k], ops[k+1], ops[k+2])
		}
		h.drain()
	})
}
