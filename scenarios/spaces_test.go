package scenarios

import (
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
	"yolk/runtime/scenario"
)

// Mel Gorman's swap-over-NBD test, on the host's network: a working set
// four times the pool, in eight spaces, five of them writers that each
// write an area of their own in every round. Every byte reads back right,
// and the writers' areas are the share of the working set they were
// promised.
func TestPressureSpaces(t *testing.T) {
	srv := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: pressureSwapBytes(4, 400)})
	code, out := runPressure(t, &net.Dialer{}, "nbd="+srv.Addr+" pool=4 ws=400 spaces=8")
	require.Equal(t, scenario.ExitPass, code, out)
	assert.NotContains(t, out, "ok=false")
	ls := results(out)
	for _, c := range []string{"pressure-data", "pressure-swapped", "pressure-no-leak", "pressure-board-pool"} {
		l, ok := find(ls, "check", "name", c)
		if assert.True(t, ok, "no check %s in\n%s", c, out) {
			assert.Equal(t, "true", l.Value("ok"), "%s", l)
		}
	}
	setup, ok := find(ls, "pressure-setup")
	require.True(t, ok, out)
	assert.Equal(t, "8", setup.Value("spaces"))
	ws := uintField(t, setup, "working_set_kb")
	assert.GreaterOrEqual(t, ws, uint64(4*4096), "%s", setup)
	assert.Equal(t, ws/8, uintField(t, setup, "z_kb"), "each writer has an eighth of the working set: %s", setup)

	// Every page of every space is checked in every round: five writers'
	// areas twice over, besides P's, C's and Q's.
	p, ok := find(ls, "pressure")
	require.True(t, ok, out)
	assert.Greater(t, uintField(t, p, "pages_checked"), 2*5*uintField(t, setup, "z_kb")/4, "%s", p)
	assert.Zero(t, uintField(t, p, "mismatches"), "%s", p)
	t.Logf("%s\n%s", setup, p)
}

// spaces= is three at least (P, C and Q) and sixteen at most; three, the
// default, lays the working set out as before there were writers.
func TestPressureSpacesParameter(t *testing.T) {
	for _, args := range []string{"spaces=2", "spaces=17", "spaces=x"} {
		code, out := runPressure(t, &net.Dialer{}, "nbd=10.0.2.2:1 "+args)
		assert.Equal(t, scenario.ExitUsage, code, "%s: %s", args, out)
		assert.Contains(t, out, "bad boot parameter "+args+" is ", args)
		assert.Equal(t, 1, strings.Count(out, "\n"), "%s: %s", args, out)
	}
	// ws=125: at 100 % a run sometimes swapped out and never needed a
	// page back, and the scenario rightly calls that no pressure.
	srv := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: pressureSwapBytes(4, 125)})
	code, out := runPressure(t, &net.Dialer{}, "nbd="+srv.Addr+" pool=4 ws=125 spaces=16")
	require.Equal(t, scenario.ExitPass, code, out)
	setup, ok := find(results(out), "pressure-setup")
	require.True(t, ok, out)
	// Sixteen spaces of a 4 MiB working set would leave P, C and Q less
	// than Y's section and some of X: the writers take less.
	assert.Less(t, uintField(t, setup, "z_kb"), uint64(4096/16), "%s", setup)
	assert.GreaterOrEqual(t, uintField(t, setup, "working_set_kb"), uint64(4096), "%s", setup)
}
