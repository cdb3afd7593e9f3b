package scenarios

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/runtime/scenario"
)

func TestVMRunsTheModelAndLeaksNothing(t *testing.T) {
	code, out := runOnPool(t, "vm", "steps=3000")
	require.Equal(t, scenario.ExitPass, code, out)
	for _, want := range []string{
		"yolk: check name=vm-invariants ok=true",
		"yolk: vm steps=3000 checks=3000 ",
		"yolk: vm-ops ",
		" mmap=",
		" fork=",
		"yolk: proc file=/proc/meminfo lines=",
		"\nMemTotal:           8192 kB\n",
		// The swap device's 4096 pages, less the header.
		"\nSwapTotal:         16380 kB\n",
		"yolk: proc file=/proc/",
		" rw-p 00000000 00:00 0 \n",
		"yolk: check name=vm-no-leak ok=true",
		"yolk: result scenario=vm status=pass code=0",
	} {
		assert.Contains(t, out, want)
	}
	// meminfo's lines in Linux's order, each in its format; the figures
	// depend on when kswapd ran (an 8 MiB pool is under pressure here).
	assert.Regexp(t, `\nMemTotal: +\d+ kB\nMemFree: +\d+ kB\nMemAvailable: +\d+ kB\nBuffers: +0 kB\nCached: +0 kB\nSwapCached: +\d+ kB\nActive: +\d+ kB\nInactive: +\d+ kB\nActive\(anon\): +\d+ kB\nInactive\(anon\): +\d+ kB\nActive\(file\): +\d+ kB\nInactive\(file\): +\d+ kB\nSwapTotal: +\d+ kB\nSwapFree: +\d+ kB\nDirty: +0 kB\nWriteback: +\d+ kB\nAnonPages: +\d+ kB\nMapped: +0 kB\nShmem: +0 kB\nPageTables: +\d+ kB\nAnonHugePages: +\d+ kB\n`, out)
}

func TestVMRejectsBadParameters(t *testing.T) {
	for _, args := range []string{"steps=0", "steps=-1", "steps=10000001", "steps=x", "seed=x", "steps=99999999999"} {
		code, out := runOnPool(t, "vm", args)
		assert.Equal(t, scenario.ExitUsage, code, "%s: %s", args, out)
	}
}
