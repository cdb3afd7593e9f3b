package scenarios

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/runtime/scenario"
)

func TestTHPScenario(t *testing.T) {
	code, out := runOnPool(t, "thp", "")
	require.Equal(t, scenario.ExitPass, code, out)
	for _, want := range []string{
		"yolk: thp-faults area=0x7fa00000 anon_huge_kb=5120",
		"yolk: check name=thp-cow-child ok=true sees=child",
		// Sections 0, 1, 3 and 4 whole, 2 split; 3 and 16 pages of 2 lazily free.
		"yolk: thp-area anon_huge_kb=4096 lazyfree_kb=1088 rss_kb=5120 thp_eligible=true",
		"yolk: check name=thp-discard-redirtied ok=true result=redirtied",
		"yolk: check name=thp-discard-section ok=true result=discarded",
		"yolk: check name=thp-deferred-split ok=true split=1 freed_frames=16",
		"yolk: thp-vmstat ",
		" thp_fault_alloc=5 ",
		" thp_split_pmd=3 ",
		"yolk: check name=thp-counts ok=true",
		"\nAnonHugePages:      2048 kB\n",
		"\nTHPeligible:    1\n",
		"yolk: check name=thp-no-leak ok=true",
		"yolk: result scenario=thp status=pass code=0",
	} {
		assert.Contains(t, out, want)
	}
	assert.NotContains(t, out, "ok=false")
}
