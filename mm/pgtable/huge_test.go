package pgtable

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A deposit keeps the pair's table page for the section's split, whatever
// the other half does; the split consumes it and allocates nothing.
func TestDepositAndSplitSection(t *testing.T) {
	tb, pool := newTable(t)
	free := pool.FreeFrames()
	const va = uint32(0x40300000)
	huge := MkPTE(0x90300000, Young|User|Write)

	assert.Error(t, tb.SplitSection(va, nil), "nothing to split")
	require.NoError(t, tb.Deposit(va, lockedMutex()))
	assert.True(t, tb.Deposited(va))
	assert.False(t, tb.Deposited(va-SectionSize), "the other half has no deposit")
	require.NoError(t, tb.SetSection(va, huge))
	assert.Equal(t, free-1, pool.FreeFrames(), "the deposit is one table page")
	require.NoError(t, tb.Check())

	// The even half maps a page and unmaps it: the page stays, deposited.
	mapPage(t, tb, 0x40200000, MkPTE(0x90000000, Young|User))
	tb.Set(0x40200000, 0)
	assert.True(t, tb.Populated(0x40200000))
	assert.Equal(t, free-1, pool.FreeFrames())
	require.NoError(t, tb.Check())

	// The split writes 256 entries and the hardware ones beside them, and
	// takes no frame.
	require.NoError(t, tb.SplitSection(va, func(i uint32) PTE {
		return MkPTE(huge.PA()+i<<PageShift, Young|User|Write)
	}))
	assert.Equal(t, free-1, pool.FreeFrames())
	assert.False(t, tb.Deposited(va))
	assert.Equal(t, PTE(0), tb.Section(va))
	for _, i := range []uint32{0, 1, 77, 255} {
		p := tb.PTE(va + i<<PageShift)
		assert.Equal(t, MkPTE(0x90300000+i<<PageShift, Young|User|Write), p)
		pa, fs := tb.Translate(va+i<<PageShift+5, AccessRead, true)
		assert.Zero(t, fs)
		assert.Equal(t, 0x90300005+i<<PageShift, pa)
		_, fs = tb.Translate(va+i<<PageShift, AccessWrite, true)
		assert.Equal(t, FSPermissionPage, fs, "written but not dirty: read-only, as before the split")
	}
	require.NoError(t, tb.Check())
	assert.Error(t, tb.SplitSection(va, nil), "split twice")

	// Unmapping every page frees the table page: no deposit is left.
	for i := uint32(0); i < PTEsPerTable; i++ {
		tb.Set(va+i<<PageShift, 0)
	}
	assert.False(t, tb.Populated(va))
	assert.Equal(t, free, pool.FreeFrames())
	require.NoError(t, tb.Check())
}

func TestWithdrawFreesTheDeposit(t *testing.T) {
	tb, pool := newTable(t)
	free := pool.FreeFrames()
	const va = uint32(0x40500000)
	require.NoError(t, tb.Deposit(va, lockedMutex()))
	require.NoError(t, tb.SetSection(va, MkPTE(0x90500000, Young|User)))
	require.NoError(t, tb.SetSection(va, 0))
	tb.Withdraw(va)
	assert.False(t, tb.Populated(va))
	assert.Equal(t, free, pool.FreeFrames())
	require.NoError(t, tb.Check())

	// Two deposits in one pair share the page; it goes with the last.
	require.NoError(t, tb.Deposit(0x40400000, lockedMutex()))
	require.NoError(t, tb.Deposit(0x40500000, lockedMutex()))
	assert.Equal(t, free-1, pool.FreeFrames())
	tb.Withdraw(0x40400000)
	assert.True(t, tb.Populated(0x40500000))
	tb.Withdraw(0x40500000)
	assert.Equal(t, free, pool.FreeFrames())

	// A section already there refuses a deposit.
	require.NoError(t, tb.SetSection(va, MkPTE(0x90500000, Young|User)))
	assert.Error(t, tb.Deposit(va, lockedMutex()))
	require.NoError(t, tb.SetSection(va, 0))
	assert.Equal(t, free, pool.FreeFrames())
}

func TestSplitSectionRefusesAbsentEntries(t *testing.T) {
	tb, _ := newTable(t)
	const va = uint32(0x40500000)
	require.NoError(t, tb.Deposit(va, lockedMutex()))
	huge := MkPTE(0x90500000, Young|User)
	require.NoError(t, tb.SetSection(va, huge))
	assert.Error(t, tb.SplitSection(va, func(i uint32) PTE {
		if i == 100 {
			return 0
		}
		return MkPTE(huge.PA()+i<<PageShift, Young|User)
	}))
	assert.Equal(t, PTE(0), tb.PTE(va), "nothing written")
	require.NoError(t, tb.Check())
	assert.Equal(t, huge, tb.Section(va), "a refused split changes nothing")
	require.NoError(t, tb.SetSection(va, 0))
	tb.Withdraw(va)
	require.NoError(t, tb.Check())
}
