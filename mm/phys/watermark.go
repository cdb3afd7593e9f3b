package phys

import (
	"fmt"
	"math"
)

// Watermarks are the pool's free-memory thresholds, in frames.
//
//	high  kswapd reclaims until free memory is back here
//	low   below this, allocations wake kswapd
//	min   below this only atomic (down to 3/8 min) and memalloc (down to
//	      0) allocations succeed: the frames under min are the reserve
type Watermarks struct {
	Min, Low, High uint64
}

// level is the watermark an allocation attempt must leave free memory at.
type level int

const (
	levelLow    level = iota // the fast path
	levelMin                 // the slow path
	levelAtomic              // the slow path, for Atomic callers
	levelNone                // the reserve, for Memalloc callers
)

// mark returns the frames that must remain free after an allocation at l
// (Linux's __zone_watermark_ok: min - min/2 for ALLOC_MIN_RESERVE, then
// less a quarter of that for ALLOC_NON_BLOCK).
func (p *Pool) mark(l level) uint64 {
	switch l {
	case levelLow:
		return p.wm.Low
	case levelMin:
		return p.wm.Min
	case levelAtomic:
		m := p.wm.Min - p.wm.Min/2
		return m - m/4
	}
	return 0
}

// DefaultMinFreeKbytes is Linux's init_per_zone_wmark_min: four times the
// square root of the memory in KiB, clamped to [128, 262144] KiB. For the
// 380 MiB pool on the 512 MiB boards that is 2495 KiB.
func DefaultMinFreeKbytes(frames uint64) int {
	kb := frames * (PageSize >> 10)
	v := int(math.Sqrt(float64(kb * 16)))
	return min(max(v, 128), 262144)
}

// setWatermarks computes min, low and high as Linux's
// __setup_per_zone_wmarks does for a single zone: min from
// min_free_kbytes, then low and high each a step above the last, the step
// being a quarter of min or scale/10000 of the pool, whichever is larger.
// A minFreeKbytes of 0 derives it from the pool size.
func (p *Pool) setWatermarks(minFreeKbytes, scale int) error {
	if minFreeKbytes == 0 {
		minFreeKbytes = DefaultMinFreeKbytes(uint64(p.n))
	}
	if scale < 1 || scale > 3000 {
		return fmt.Errorf("%w: watermark_scale_factor %d out of range [1, 3000]", ErrConfig, scale)
	}
	minPages := uint64(minFreeKbytes) / (PageSize >> 10)
	step := max(minPages/4, uint64(p.n)*uint64(scale)/10000)
	wm := Watermarks{Min: minPages, Low: minPages + step, High: minPages + 2*step}
	if wm.High >= uint64(p.n) {
		return fmt.Errorf("%w: min_free_kbytes %d puts the high watermark (%d frames) at or above the pool size (%d)",
			ErrConfig, minFreeKbytes, wm.High, p.n)
	}
	p.wm = wm
	p.minFreeKbytes = minFreeKbytes
	p.scaleFactor = scale
	return nil
}

// Watermarks returns the current watermarks.
func (p *Pool) Watermarks() Watermarks {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.wm
}

// MinFreeKbytes returns the current vm.min_free_kbytes.
func (p *Pool) MinFreeKbytes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.minFreeKbytes
}

// SetMinFreeKbytes changes vm.min_free_kbytes and recomputes the
// watermarks; 0 restores the default for the pool size.
func (p *Pool) SetMinFreeKbytes(kb int) error {
	if kb < 0 {
		return fmt.Errorf("%w: min_free_kbytes %d is negative", ErrConfig, kb)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.setWatermarks(kb, p.scaleFactor); err != nil {
		return err
	}
	p.wakeThrottled()
	return nil
}

// MaxMinFreeKbytes returns the largest vm.min_free_kbytes the pool takes
// at its current watermark_scale_factor: the one that puts the high
// watermark just under the pool's size. (Linux accepts any value and lets
// the machine fall over; a pool whose high watermark is out of reach
// would have kswapd reclaim forever.)
func (p *Pool) MaxMinFreeKbytes() int {
	p.mu.Lock()
	scale := p.scaleFactor
	p.mu.Unlock()
	n := uint64(p.n)
	high := func(minPages uint64) uint64 { return minPages + 2*max(minPages/4, n*uint64(scale)/10000) }
	// high is monotonic in min: find the largest min with high < n.
	lo, hi := uint64(0), n
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if high(mid) < n {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return int(lo*(PageSize>>10) + PageSize>>10 - 1)
}

// WatermarkScaleFactor returns the current vm.watermark_scale_factor.
func (p *Pool) WatermarkScaleFactor() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.scaleFactor
}

// SetWatermarkScaleFactor changes vm.watermark_scale_factor (1 to 3000)
// and recomputes the watermarks.
func (p *Pool) SetWatermarkScaleFactor(scale int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.setWatermarks(p.minFreeKbytes, scale); err != nil {
		return err
	}
	p.wakeThrottled()
	return nil
}

// WatermarkOK reports whether an order-sized allocation would leave free
// memory at or above mark: kswapd's test for when to stop.
func (p *Pool) WatermarkOK(order int, mark uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nrFree >= mark+1<<order
}

// FreeFrames returns the number of free frames (MemFree in frames).
func (p *Pool) FreeFrames() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nrFree
}
