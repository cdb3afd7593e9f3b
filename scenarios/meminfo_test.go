package scenarios

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/runtime/scenario"
)

// runOnPool runs a scenario on the small board with its pool managed by
// phys, as the image runs it, and returns the exit status and output.
func runOnPool(t *testing.T, name, args string) (int, string) {
	t.Helper()
	return runLine(t, "scenario="+name+" "+args, withPool(t))
}

func TestMeminfoPrintsProcFiles(t *testing.T) {
	code, out := runOnPool(t, "meminfo", "fill=70 min_free_kbytes=256")
	require.Equal(t, scenario.ExitPass, code, out)
	for _, want := range []string{
		"yolk: proc file=/proc/buddyinfo lines=1\nNode 0, zone   Normal ",
		"\nPage block order: 8\nPages per block:  256\n",
		"\nNumber of blocks type     Unmovable      Movable  Reclaimable \n",
		"\n        min      64\n",
		"\nMemTotal:           8192 kB\n",
		"\npgalloc_normal ",
		"yolk: check name=invariants-full ok=true",
		"yolk: check name=invariants-empty ok=true",
	} {
		assert.Contains(t, out, want)
	}
	// 70% of the pool was in use before a third was freed.
	assert.True(t, strings.Contains(out, "yolk: meminfo fill_pct=70 "), out)
}

func TestMeminfoRejectsBadParameters(t *testing.T) {
	for args, want := range map[string]string{
		"fill=150":               "fill=150 is out of range: want an integer from 0 to 100",
		"fill=lots":              "fill=lots is not an integer",
		"min_free_kbytes=-1":     "min_free_kbytes=-1 is out of range",
		"min_free_kbytes=100000": "min_free_kbytes=100000 is out of range: want an integer from 0 to 5463, which puts the high watermark just under this pool's 2048 frames",
	} {
		code, out := runOnPool(t, "meminfo", args)
		assert.Equal(t, scenario.ExitUsage, code, "%s: %s", args, out)
		assert.Contains(t, out, want, args)
	}
	// The largest value the pool takes is taken.
	code, out := runOnPool(t, "meminfo", "fill=10 min_free_kbytes=5463")
	assert.Equal(t, scenario.ExitPass, code, out)
}
