package scenarios

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/phys"
	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
)

// runOnPool runs a scenario on the small board with its pool managed by
// phys, as the image runs it, and returns the exit status and output.
func runOnPool(t *testing.T, name, args string) (int, string) {
	t.Helper()
	params, err := cmdline.Parse("img scenario="+name+" "+args, true)
	require.NoError(t, err)
	pool := make([]byte, smallBoard.Memory.Pool.Size)
	var out bytes.Buffer
	env := scenario.NewEnv(scenario.NewReporter(&out), params, smallBoard)
	env.Pool = pool
	env.Phys, err = phys.New(phys.Config{Mem: pool, Base: smallBoard.Memory.Pool.Start})
	require.NoError(t, err)
	return scenario.Run(env), out.String()
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
	for _, args := range []string{"fill=150", "fill=lots", "min_free_kbytes=-1", "min_free_kbytes=100000"} {
		code, out := runOnPool(t, "meminfo", args)
		assert.Equal(t, scenario.ExitFail, code, "%s: %s", args, out)
	}
}
