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
		// Halfway, seed 1 has 261 anonymous pages mapped (a huge page's
		// worth of them in one, split, compound page) and 16 table
		// frames; the same seed gives the same figures on the image.
		"\nAnonPages:          1044 kB\nPageTables:           64 kB\nAnonHugePages:         0 kB\n",
		"yolk: proc file=/proc/",
		" rw-p 00000000 00:00 0 \n",
		"yolk: check name=vm-no-leak ok=true",
		"yolk: result scenario=vm status=pass code=0",
	} {
		assert.Contains(t, out, want)
	}
}

func TestVMRejectsBadParameters(t *testing.T) {
	for _, args := range []string{"steps=0", "steps=-1", "steps=10000001", "steps=x", "seed=x", "steps=99999999999"} {
		code, out := runOnPool(t, "vm", args)
		assert.Equal(t, scenario.ExitUsage, code, "%s: %s", args, out)
	}
}
