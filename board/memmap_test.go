package board_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/board"
	"yolk/board/mx6ullevk"
	"yolk/board/usbarmory"
)

const mib = 1 << 20

func TestBoardLayoutsAreValid(t *testing.T) {
	for _, info := range []board.Info{mx6ullevk.Layout, usbarmory.Layout} {
		t.Run(info.Name, func(t *testing.T) {
			m := info.Memory
			require.NoError(t, m.Validate())
			// Acceptance: the pool is at least 256 MiB on 512 MiB boards.
			assert.GreaterOrEqual(t, m.Pool.Size, uint64(256*mib))
			assert.Equal(t, uint64(512*mib), m.RAM.Size)
			// Nothing of RAM is lost between the carve-outs.
			assert.Equal(t, m.RAM.Size, m.Runtime.Size+m.DMA.Size+m.Pool.Size)
			// TamaGo needs its image inside the runtime region at +64 KiB.
			assert.True(t, m.Runtime.Contains(board.Region{Start: m.RAM.Start + 0x10000, Size: board.PageSize}))
		})
	}
}

func good() board.MemoryMap {
	return board.MemoryMap{
		RAM:     board.Region{Name: "ram", Start: 0x80000000, Size: 512 * mib},
		Runtime: board.Region{Name: "runtime", Start: 0x80000000, Size: 128 * mib},
		Pool:    board.Region{Name: "pool", Start: 0x88000000, Size: 380 * mib},
		DMA:     board.Region{Name: "dma", Start: 0x9fc00000, Size: 4 * mib},
	}
}

func TestValidateRejectsBadMaps(t *testing.T) {
	require.NoError(t, good().Validate())
	cases := map[string]struct {
		mutate func(*board.MemoryMap)
		want   string
	}{
		"RAM shorter than map":   {func(m *board.MemoryMap) { m.RAM.Size -= 4 * mib }, "dma [0x9fc00000-0x9fffffff] 4MiB lies outside RAM"},
		"dma below RAM":          {func(m *board.MemoryMap) { m.DMA.Start = 0x7ff00000 }, "outside RAM"},
		"runtime overlaps pool":  {func(m *board.MemoryMap) { m.Runtime.Size += board.PageSize }, "overlap"},
		"dma overlaps pool":      {func(m *board.MemoryMap) { m.DMA.Start -= board.PageSize }, "overlap"},
		"unaligned dma":          {func(m *board.MemoryMap) { m.DMA.Start += 8 }, "not page aligned"},
		"unaligned pool section": {func(m *board.MemoryMap) { m.Pool.Start += board.PageSize; m.Pool.Size -= board.PageSize }, "not aligned to 1MiB"},
		"empty pool":             {func(m *board.MemoryMap) { m.Pool.Size = 0 }, "empty"},
		"beyond 4 GiB":           {func(m *board.MemoryMap) { m.RAM.Size = 4 << 30 }, "32-bit"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			m := good()
			c.mutate(&m)
			err := m.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func TestOverlapAndContain(t *testing.T) {
	a := board.Region{Start: 0x1000, Size: 0x1000}
	assert.True(t, a.Overlaps(board.Region{Start: 0x1fff, Size: 1}))
	assert.False(t, a.Overlaps(board.Region{Start: 0x2000, Size: 0x1000}), "adjacent regions do not overlap")
	assert.False(t, a.Overlaps(board.Region{Start: 0, Size: 0x1000}))
	assert.True(t, a.Contains(board.Region{Start: 0x1000, Size: 0x1000}))
	assert.False(t, a.Contains(board.Region{Start: 0x1000, Size: 0x1001}))
}

func TestSizeRoundTrip(t *testing.T) {
	for _, n := range []uint64{0, 1, 4095, 4096, 380 * mib, 512 * mib, 1 << 30, 3 * 1 << 30, mib + 4096} {
		s := board.FormatSize(n)
		got, err := board.ParseSize(s)
		require.NoError(t, err, s)
		assert.Equal(t, n, got, s)
	}
	for in, want := range map[string]uint64{"64M": 64 * mib, "4K": 4096, "2G": 2 << 30, "17": 17} {
		got, err := board.ParseSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "M", "1.5M", "-1", "99999999999999999999", fmt.Sprint(^uint64(0)) + "K"} {
		_, err := board.ParseSize(bad)
		assert.Error(t, err, bad)
	}
}
