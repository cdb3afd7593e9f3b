package mm_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/mm"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// smaps with swap: Swap counts every swap PTE of the VMA in full, SwapPss
// divides each slot among the PTEs that refer to it (smaps_pte_entry with
// swp_swapcount), as Pss divides a page among its mappers.
func TestSmapsSwapPssDividesAmongSharers(t *testing.T) {
	m, pool := newSwapManager(t, 8<<20)
	parent, err := m.NewAddressSpace()
	require.NoError(t, err)
	a, err := parent.Mmap(0x60000000, 3*pgtable.PageSize, mm.ProtRead|mm.ProtWrite, mm.MapFixed)
	require.NoError(t, err)
	for i := uint32(0); i < 3; i++ {
		require.NoError(t, parent.Write(a+i*pgtable.PageSize, []byte{byte(1 + i)}))
	}
	child, err := parent.Fork()
	require.NoError(t, err)
	// Page 0 stays shared; page 1 becomes the child's own copy and the
	// parent's own original; page 2 stays shared and resident.
	require.NoError(t, child.Write(a+pgtable.PageSize, []byte{20}))
	swapOut(t, m, parent, a)
	swapOut(t, m, parent, a+pgtable.PageSize)
	require.NoError(t, m.Check())

	const kB = 1024
	ps, cs := only(t, parent), only(t, child)
	assert.Equal(t, uint64(8*kB), ps.Swap, "parent Swap: pages 0 and 1")
	assert.Equal(t, uint64(2*kB+4*kB), ps.SwapPss, "parent SwapPss: half of page 0's slot, all of page 1's")
	assert.Equal(t, uint64(4*kB), ps.Rss)
	assert.Equal(t, uint64(2*kB), ps.Pss, "parent Pss: half of page 2")
	assert.Equal(t, uint64(4*kB), cs.Swap, "child Swap: page 0")
	assert.Equal(t, uint64(2*kB), cs.SwapPss, "child SwapPss: half of page 0's slot")
	assert.Equal(t, uint64(8*kB), cs.Rss)
	assert.Equal(t, uint64(6*kB), cs.Pss, "child Pss: its page 1, half of page 2")
	assertSmapsLines(t, parent, "Swap:                  8 kB", "SwapPss:               6 kB")

	// The parent brings page 0 back: the slot is the child's alone now.
	var b [1]byte
	require.NoError(t, parent.Read(a, b[:]))
	require.Equal(t, byte(1), b[0])
	assert.Equal(t, uint64(4*kB), only(t, child).SwapPss, "child SwapPss once the parent swapped page 0 in")
	assert.Equal(t, uint64(4*kB), only(t, parent).SwapPss)

	require.NoError(t, child.Exit())
	require.NoError(t, parent.Exit())
	require.NoError(t, m.Check())
	ref, cached := m.SwapSlots()
	assert.Zero(t, ref, "swap slots leaked")
	assert.Zero(t, cached, "swap cache pages left")
	require.NoError(t, m.Close())
	assert.Equal(t, uint64(pool.Frames()), pool.FreeFrames(), "frames leaked")
}

// swapOut reclaims the page mapped at addr, whoever else maps it, and
// waits for its write: afterwards every PTE that mapped it holds its
// swap entry.
func swapOut(t *testing.T, m *mm.Manager, as *mm.AddressSpace, addr uint32) {
	t.Helper()
	pfn, ok := as.FollowPage(addr)
	require.True(t, ok, "no page at %#x", addr)
	require.NoError(t, m.Pool().Put(pfn))
	require.True(t, m.PageoutForTest(pfn), "page at %#x not reclaimed", addr)
}

// newSwapManager makes a manager over a pool of size bytes, with no
// kswapd (each test reclaims what it means to), and swap on a 16 MiB RAM
// device.
func newSwapManager(t *testing.T, size int) (*mm.Manager, *phys.Pool) {
	t.Helper()
	pool, err := phys.New(phys.Config{Mem: make([]byte, size), Base: 0x80000000})
	require.NoError(t, err)
	m, err := mm.New(mm.Config{Pool: pool, VerifyZeroed: true, NoKswapd: true})
	require.NoError(t, err)
	dev, err := blk.NewRAM(blk.RAMConfig{Name: "ram0", Size: 16 << 20})
	require.NoError(t, err)
	require.NoError(t, m.Swapon(dev, mm.SwapOptions{}))
	t.Cleanup(func() { dev.Close() })
	return m, pool
}

func only(t *testing.T, as *mm.AddressSpace) mm.Smaps {
	t.Helper()
	s := as.Smaps()
	require.Len(t, s, 1)
	return s[0]
}

func assertSmapsLines(t *testing.T, as *mm.AddressSpace, lines ...string) {
	t.Helper()
	var b strings.Builder
	require.NoError(t, as.WriteSmaps(&b))
	for _, l := range lines {
		assert.Contains(t, strings.Split(b.String(), "\n"), l)
	}
}
