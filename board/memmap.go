// Package board describes what every yolk board provides: a name, the
// physical memory map that splits DDR between the Go runtime, DMA and the
// managed pool, and the hardware hooks the image needs (console, Ethernet,
// exit). The board packages below it (board/mx6ullevk, board/usbarmory)
// fill this in for one machine each; importing one of them selects it.
//
// The memory map is plain data and portable, so the same layout that the
// image boots with is validated by host tests before it ever reaches QEMU.
package board

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// PageSize is the base page size of the i.MX6UL MMU (ARMv7-A short
// descriptors, 4 KiB small pages).
const PageSize = 4096

// SectionSize is the size of an ARMv7-A short-descriptor section, the unit
// of a yolk huge page (1 MiB, B3.5.1 ARM DDI 0406C).
const SectionSize = 1 << 20

// Region is a named, contiguous range of physical memory [Start, Start+Size).
type Region struct {
	Name  string
	Start uint64
	Size  uint64
}

// End returns the first address past the region.
func (r Region) End() uint64 { return r.Start + r.Size }

// Contains reports whether r lies wholly inside outer.
func (r Region) Contains(inner Region) bool {
	return inner.Start >= r.Start && inner.End() <= r.End()
}

// Overlaps reports whether r and o share at least one byte.
func (r Region) Overlaps(o Region) bool {
	return r.Start < o.End() && o.Start < r.End()
}

func (r Region) String() string {
	return fmt.Sprintf("%s [0x%08x-0x%08x] %s", r.Name, r.Start, r.End()-1, FormatSize(r.Size))
}

// MemoryMap is how a board splits its DDR. All three carve-outs lie inside
// RAM and are disjoint:
//
//   - Runtime is the Go heap, text and stacks: TamaGo's ramStart/ramSize,
//     sized with the linkramsize build tag. TamaGo maps it normal cacheable.
//   - DMA holds ENET descriptor rings and frame buffers. It is outside the
//     runtime region so that TamaGo maps it as device (uncached) memory and
//     the MAC and the CPU never disagree about its contents.
//   - Pool is the managed memory that mm/phys owns: page frames for address
//     spaces, page tables, page cache and network buffers.
type MemoryMap struct {
	RAM     Region
	Runtime Region
	DMA     Region
	Pool    Region
}

// Regions returns the carve-outs in address order.
func (m MemoryMap) Regions() []Region {
	rs := []Region{m.Runtime, m.DMA, m.Pool}
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Start < rs[j].Start })
	return rs
}

// PoolAlign is the alignment required of the pool's start and end: 1 MiB,
// so that every huge page (an order-8 buddy block) can be mapped by one
// ARMv7 section entry.
const PoolAlign = SectionSize

// Validate checks the invariants above plus page alignment of every region
// and section alignment of the pool. It returns every violation it finds,
// joined, or nil.
func (m MemoryMap) Validate() error {
	var errs []error
	if m.RAM.Size == 0 {
		errs = append(errs, errors.New("memmap: RAM is empty"))
	}
	all := append([]Region{m.RAM}, m.Regions()...)
	for _, r := range all {
		if r.Size == 0 {
			errs = append(errs, fmt.Errorf("memmap: region %q is empty", r.Name))
		}
		if r.Start%PageSize != 0 || r.Size%PageSize != 0 {
			errs = append(errs, fmt.Errorf("memmap: region %s is not page aligned", r))
		}
		if r.End() > 1<<32 {
			errs = append(errs, fmt.Errorf("memmap: region %s is beyond the 32-bit physical address space", r))
		}
	}
	if m.Pool.Start%PoolAlign != 0 || m.Pool.Size%PoolAlign != 0 {
		errs = append(errs, fmt.Errorf("memmap: pool %s is not aligned to %s (huge pages would straddle sections)", m.Pool, FormatSize(PoolAlign)))
	}
	carve := m.Regions()
	for i, r := range carve {
		if !m.RAM.Contains(r) {
			errs = append(errs, fmt.Errorf("memmap: region %s lies outside RAM %s", r, m.RAM))
		}
		for _, o := range carve[i+1:] {
			if r.Overlaps(o) {
				errs = append(errs, fmt.Errorf("memmap: regions %s and %s overlap", r, o))
			}
		}
	}
	return errors.Join(errs...)
}

// FormatSize renders a byte count the way the banner and /proc files do:
// the largest binary unit that divides it exactly, else bytes.
func FormatSize(n uint64) string {
	units := []string{"GiB", "MiB", "KiB"}
	shifts := []uint{30, 20, 10}
	for i, s := range shifts {
		if n >= 1<<s && n%(1<<s) == 0 {
			return fmt.Sprintf("%d%s", n>>s, units[i])
		}
	}
	return fmt.Sprintf("%dB", n)
}

// ParseSize is the inverse of FormatSize; it also accepts a bare byte
// count and the one-letter suffixes K, M and G used on kernel command lines.
func ParseSize(s string) (uint64, error) {
	suffixes := []struct {
		s     string
		shift uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"G", 30}, {"M", 20}, {"K", 10}, {"B", 0}}
	num, shift := s, uint(0)
	for _, suf := range suffixes {
		if strings.HasSuffix(s, suf.s) {
			num, shift = strings.TrimSuffix(s, suf.s), suf.shift
			break
		}
	}
	var v uint64
	if num == "" {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("size %q: not a decimal number", s)
		}
		d := uint64(c - '0')
		if v > (^uint64(0)-d)/10 {
			return 0, fmt.Errorf("size %q: overflows", s)
		}
		v = v*10 + d
	}
	if v > (^uint64(0))>>shift {
		return 0, fmt.Errorf("size %q: overflows", s)
	}
	return v << shift, nil
}

// Split lays out RAM the way every yolk board does: the Go runtime at the
// bottom (TamaGo links the image at its start), DMA at the top, and the
// pool, the largest part, between them.
func Split(ram Region, runtimeSize, dmaSize uint64) MemoryMap {
	return MemoryMap{
		RAM:     Region{Name: "ram", Start: ram.Start, Size: ram.Size},
		Runtime: Region{Name: "runtime", Start: ram.Start, Size: runtimeSize},
		Pool:    Region{Name: "pool", Start: ram.Start + runtimeSize, Size: ram.Size - runtimeSize - dmaSize},
		DMA:     Region{Name: "dma", Start: ram.End() - dmaSize, Size: dmaSize},
	}
}
