package scenarios

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
	"yolk/runtime/cmdline"
	"yolk/runtime/result"
	"yolk/runtime/scenario"
)

// runPressure runs the pressure scenario on the small board's 8 MiB pool
// with the host's TCP stack for the network (nil: no network).
func runPressure(t *testing.T, dialer scenario.Dialer, args string) (int, string) {
	t.Helper()
	return runLine(t, "scenario=pressure "+args, func(env *scenario.Env) {
		withPool(t)(env)
		if dialer != nil {
			env.Net = dialer
		} else {
			env.NetErr = assert.AnError
		}
	})
}

// results parses the result lines of a run's output.
func results(out string) []result.Line {
	var ls []result.Line
	for _, l := range strings.Split(out, "\n") {
		if r, err := result.Parse(l); err == nil {
			ls = append(ls, r)
		}
	}
	return ls
}

func find(ls []result.Line, event string, kv ...string) (result.Line, bool) {
	return result.Find(ls, event, kv...)
}

func uintField(t *testing.T, l result.Line, key string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(l.Value(key), 10, 64)
	require.NoError(t, err, "%s in %s", key, l)
	return v
}

// A working set twice a 4 MiB pool carved out of the 8 MiB board pool,
// swapped to nbdkit over loopback: every byte read back right, pages out
// and in, no OOM kill, the /proc files, and every frame back in both
// pools.
func TestPressureOnNbdkit(t *testing.T) {
	srv := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: pressureSwapBytes(4, 200)})
	code, out := runPressure(t, &net.Dialer{}, "nbd="+srv.Addr+" pool=4 rounds=3")
	require.Equal(t, scenario.ExitPass, code, out)
	assert.NotContains(t, out, "ok=false")
	ls := results(out)
	for _, c := range []string{"pressure-pool", "nbd-dial", "swapon", "pressure-invariants", "pressure-data",
		"pressure-no-oom", "pressure-swapped", "pressure-no-leak", "pressure-board-pool"} {
		l, ok := find(ls, "check", "name", c)
		if assert.True(t, ok, "no check %s in\n%s", c, out) {
			assert.Equal(t, "true", l.Value("ok"), "%s", l)
		}
	}
	setup, ok := find(ls, "pressure-setup")
	require.True(t, ok, out)
	assert.Equal(t, "4096", setup.Value("pool_kb"))
	assert.GreaterOrEqual(t, uintField(t, setup, "working_set_kb"), uint64(2*4096), "%s", setup)

	p, ok := find(ls, "pressure")
	require.True(t, ok, out)
	assert.NotZero(t, uintField(t, p, "pswpout"), "%s", p)
	assert.NotZero(t, uintField(t, p, "pswpin"), "%s", p)
	assert.NotZero(t, uintField(t, p, "pgmajfault"), "%s", p)
	assert.Zero(t, uintField(t, p, "oom_kill"), "%s", p)
	assert.Zero(t, uintField(t, p, "mismatches"), "%s", p)
	assert.NotZero(t, uintField(t, p, "pages_checked"), "%s", p)
	// Three rounds: round 0 and two more, each with every page checked.
	rounds := 0
	for _, l := range ls {
		if l.Event == "pressure-round" {
			rounds++
		}
	}
	assert.Equal(t, 3, rounds)

	stat, ok := find(ls, "stat")
	require.True(t, ok, out)
	var keys []string
	for _, f := range stat.Fields {
		keys = append(keys, f.Key)
	}
	assert.Equal(t, []string{"free_kb", "min_kb", "low_kb", "high_kb", "active_kb", "inactive_kb", "lazyfree_kb",
		"swap_used_kb", "pswpin", "pswpout"}, keys[:10])
	minKB, lowKB, highKB := uintField(t, stat, "min_kb"), uintField(t, stat, "low_kb"), uintField(t, stat, "high_kb")
	assert.True(t, 0 < minKB && minKB < lowKB && lowKB < highKB && highKB < 4096, "the 4 MiB pool's watermarks: %s", stat)
	for _, want := range []string{
		"yolk: proc file=/proc/meminfo ",
		"\nMemTotal:           4096 kB\n",
		"\nSwapTotal:",
		"yolk: proc file=/proc/vmstat ",
		"\npswpout ",
		"yolk: proc file=/proc/swaps lines=2\n",
		"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/nbd0 ",
		"yolk: kmsg msg=\"Adding ",
		"yolk: result scenario=pressure status=pass code=0",
	} {
		assert.Contains(t, out, want)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "yolk: pressure") || strings.HasPrefix(l, "yolk: stat ") {
			t.Log(l)
		}
	}
}

// Too small an export is a failed check that says what is wanted, and
// everything goes back all the same.
func TestPressureRefusesASmallExport(t *testing.T) {
	srv := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: 4 << 20})
	code, out := runPressure(t, &net.Dialer{}, "nbd="+srv.Addr+" pool=4")
	assert.Equal(t, scenario.ExitFail, code, out)
	assert.Contains(t, out, `yolk: check name=nbd-size ok=false err="the export has 4194304 bytes: want at least 10485760 (10 MiB) to swap a working set of 200% of 4 MiB"`)
	assert.Contains(t, out, "yolk: check name=pressure-no-leak ok=true")
	assert.Contains(t, out, "yolk: check name=pressure-board-pool ok=true")
}

func TestPressureParameters(t *testing.T) {
	code, out := runPressure(t, &net.Dialer{}, "")
	assert.Equal(t, scenario.ExitUsage, code)
	assert.Contains(t, out, `err="bad boot parameter nbd= is required: want HOST:PORT`)

	code, out = runPressure(t, nil, "nbd=10.0.2.2:10809")
	assert.Equal(t, scenario.ExitFail, code)
	assert.Contains(t, out, "no network, which the pressure scenario needs to reach nbd=10.0.2.2:10809")

	for _, args := range []string{"pool=3", "pool=257", "pool=x", "pool=-4", "ws=99", "ws=401", "rounds=1", "rounds=0",
		"rounds=1001", "nbd=auto", "nbd=x:1", "ws=2x"} {
		code, out := runPressure(t, &net.Dialer{}, "nbd=10.0.2.2:1 "+args)
		assert.Equal(t, scenario.ExitUsage, code, "%s: %s", args, out)
		assert.NotContains(t, out, "check name=", "%s ran: %s", args, out)
		assert.Equal(t, 1, strings.Count(out, "\n"), "%s: %s", args, out)
	}

	// More than the 8 MiB board pool can give in one piece (its blocks
	// come from both ends of it, and the min watermark keeps the last):
	// only the machine can tell, and it says so as it does for any bad
	// value, with the board's pool as it was.
	for _, args := range []string{"pool=8", "pool=5"} {
		code, out = runLine(t, "scenario=pressure nbd=10.0.2.2:1 "+args, func(env *scenario.Env) {
			withPool(t)(env)
			env.Net = &net.Dialer{}
			t.Cleanup(func() {
				assert.Equal(t, uint64(env.Phys.Frames()), env.Phys.FreeFrames(), "%s: the board's pool lost frames", args)
				assert.NoError(t, env.Phys.Check())
			})
		})
		assert.Equal(t, scenario.ExitUsage, code, out)
		assert.Contains(t, out, `err="bad boot parameter `+args+` is out of range: want an integer from 4 to 4, the most the board's pool can give in one piece above its min watermark"`)
		assert.NotContains(t, out, "check name=")
	}
}

// The harness sizes its NBD server from the command line as the scenario
// would read it: the swap the working set wants, whatever nbd= says.
func TestPressureNBDSize(t *testing.T) {
	for _, c := range []struct {
		line string
		want int64
	}{
		{"scenario=pressure", 10 << 20}, // 8 MiB, an eighth more, the header: 10 MiB
		{"scenario=pressure nbd=auto", 10 << 20},
		{"scenario=pressure pool=16", 37 << 20},
		{"scenario=pressure pool=64 ws=300 nbd=10.0.2.2:1 export=x", 217 << 20},
		{"scenario=pressure pool=1", 0}, // refused by the image anyway
		{"scenario=journal", 0},
		{"scenario=selftest", 0},
		{"", 10 << 20}, // the tour: its nbdswap phase's swap
	} {
		p, err := cmdline.Parse(c.line, false)
		require.NoError(t, err)
		assert.Equal(t, c.want, scenario.NBDSize(p), c.line)
	}
}
