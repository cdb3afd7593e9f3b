package scenarios

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/runtime/cmdline"
	"yolk/runtime/result"
	"yolk/runtime/scenario"
)

func tourLine(t *testing.T, line string) cmdline.Args {
	t.Helper()
	p, err := cmdline.Parse("img "+line, true)
	require.NoError(t, err)
	args, err := scenario.CheckParams(p)
	require.NoError(t, err)
	return args
}

// Every phase binds: its own parameters, and the tour's services passed
// on to the phases that take them, the rest left out.
func TestTourPhasesBind(t *testing.T) {
	args := tourLine(t, "nbd=10.0.2.2:10809 export=e host=10.0.2.2:7 flood=10.0.2.2:9 flood_kbps=64")
	assert.Equal(t, "tour", args.String("scenario"), "the tour is the default")
	got := map[string]cmdline.Args{}
	for _, ph := range tourPhases {
		sub, err := tourArgs(ph, args, false)
		require.NoError(t, err, ph.scenario)
		assert.Equal(t, ph.scenario, sub.String("scenario"))
		got[ph.scenario] = sub
	}
	assert.Equal(t, "10.0.2.2:7", got["selftest"].String("host"))
	for _, name := range []string{"nbdswap", "region"} {
		assert.Equal(t, "10.0.2.2:10809", got[name].String("nbd"), name)
		assert.Equal(t, "e", got[name].String("export"), name)
	}
	assert.Equal(t, "10.0.2.2:9", got["nbdswap"].String("flood"))
	assert.Equal(t, 64, got["nbdswap"].Int("flood_kbps"))
	assert.Equal(t, "classify-first", got["nbdswap"].String("reserve"))
	assert.GreaterOrEqual(t, got["nbdswap"].Int("ws"), 200, "a working set larger than the pool")
	var swap tourPhase
	for _, ph := range tourPhases {
		if ph.scenario == "nbdswap" {
			swap = ph
		}
	}
	sub, err := tourArgs(swap, tourLine(t, "nbd=10.0.2.2:10809 flood=10.0.2.2:9"), false)
	require.NoError(t, err)
	assert.Equal(t, 128, sub.Int("flood_kbps"), "the tour's default rate")

	// Without a flood server the phase runs without a flood.
	sub, err = tourArgs(swap, tourLine(t, "nbd=10.0.2.2:10809"), false)
	require.NoError(t, err)
	assert.Equal(t, "", sub.String("flood"))
	assert.Equal(t, 0, sub.Int("flood_kbps"))
}

// The harness sizes the tour's NBD export for the phase that needs most.
func TestTourNBDSize(t *testing.T) {
	p, err := cmdline.Parse("img", true)
	require.NoError(t, err)
	args := tourLine(t, "nbd=10.0.2.2:10809")
	var want int64
	for _, ph := range tourPhases {
		sub, err := tourArgs(ph, args, false)
		require.NoError(t, err)
		if sc, _ := scenario.Lookup(ph.scenario); sc.NBDSize != nil {
			want = max(want, sc.NBDSize(sub))
		}
	}
	assert.Equal(t, pressureSwapBytes(4, 200), want, "nbdswap's swap is the largest need")
	assert.Equal(t, want, scenario.NBDSize(p))
}

// The collector passes the phases' lines on, gives stat lines the
// tour's clock, keeps /proc text back, and sums the closing lines.
func TestTourCollector(t *testing.T) {
	var out bytes.Buffer
	env := scenario.NewEnv(scenario.NewReporter(&out), cmdline.Args{}, smallBoard)
	col := &tourCollector{env: env, start: time.Now().Add(-90 * time.Second)}
	phase := scenario.NewReporter(col)
	phase.Emit(result.New("check", "name", "x", "ok", true))
	phase.Emit(result.New("stat", "free_kb", 100, "t_ms", 5))
	phase.Emit(result.New("proc", "file", "/proc/meminfo", "lines", 1))
	phase.Text("MemTotal:  4096 kB\n")
	phase.Emit(result.New("thp-vmstat", "thp_fault_alloc", 5, "thp_split_pmd", 3, "thp_split_page", 2, "pglazyfree", 528, "pglazyfreed", 257))
	phase.Emit(result.New("mmu-aborts", "total", 600, "translation_section", 60, "translation_page", 470, "permission_section", 6, "permission_page", 64))
	phase.Emit(result.New("mmu-faults", "fixed_on_g0", 30, "served", 420, "kills", 80, "disagreed", 0))
	phase.Emit(result.New("pressure", "pswpout", 7000, "pswpin", 6000, "pgmajfault", 5900, "pages_checked", 9000, "mismatches", 0))
	phase.Emit(result.New("nbdswap", "frames", 30000, "dropped", 1200, "drop_watermark", 1100, "memalloc_drops", 0,
		"pfmemalloc_admits", 40, "reserve_peak", 5))

	var lines []result.Line
	for _, s := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		l, err := result.Parse(s)
		require.NoError(t, err, "only result lines get through: %q", s)
		lines = append(lines, l)
	}
	require.Len(t, lines, 7, out.String())
	assert.Equal(t, "check", lines[0].Event)
	assert.Equal(t, "stat", lines[1].Event)
	assert.Equal(t, "100", lines[1].Value("free_kb"))
	assert.GreaterOrEqual(t, lines[1].Value("t_ms"), "90000", "the tour's clock, not the phase's")
	assert.Len(t, lines[1].Value("t_ms"), 5)

	sum := col.summary()
	tl := result.New("tour", sum.kv()...)
	assert.Equal(t, "5", tl.Value("thp_fault_alloc"))
	assert.Equal(t, "257", tl.Value("pglazyfreed"))
	assert.Equal(t, "7000", tl.Value("pswpout"))
	assert.Equal(t, "9000", tl.Value("swap_pages_checked"))
	assert.Equal(t, "1100", tl.Value("rx_drop_watermark"))
	assert.Equal(t, "5", tl.Value("rx_reserve_peak"))
	assert.Equal(t, "600", tl.Value("mmu_aborts"))
	assert.Equal(t, "470", tl.Value("mmu_translation"))
	assert.Equal(t, "420", tl.Value("mmu_served"))
	assert.Equal(t, "0", tl.Value("mmu_disagreed"))
	// The region phase said nothing: its figures are missing, not zero.
	_, has := tl.Get("commits")
	assert.False(t, has)
	assert.Equal(t, "commits,msyncs,reclaim_writes,region_pages_checked,region_mismatches", tl.Value("missing"))

	table := sum.table(31 * time.Second)
	assert.Contains(t, table, "what happened, in 31.0 s")
	assert.Regexp(t, `\n  a working set twice its pool, swapped to NBD \(nbdswap\)\n    pages swapped out +7000\n`, table)
	assert.Regexp(t, `\n  a journaled mapping \(region\)\n    journal commits +-\n`, table)

	// verbose shows the /proc text too.
	out.Reset()
	col.verbose = true
	phase.Emit(result.New("proc", "file", "/proc/meminfo", "lines", 1))
	phase.Text("MemTotal:  4096 kB\n")
	assert.Contains(t, out.String(), "yolk: proc file=/proc/meminfo")
	assert.Contains(t, out.String(), "\nMemTotal:  4096 kB\n")
}

// A tour whose phases cannot run fails, says which, and reports their
// figures missing rather than zero.
func TestTourFailsWhenAPhaseFails(t *testing.T) {
	code, out := runLine(t, "nbd=127.0.0.1:1", withPool(t)) // no network: selftest's echo, nbdswap and region fail
	assert.Equal(t, scenario.ExitFail, code, out)
	var done []result.Line
	var tour, verdict result.Line
	for _, s := range strings.Split(out, "\n") {
		l, err := result.Parse(s)
		switch {
		case err != nil:
		case l.Event == "tour-phase-done":
			done = append(done, l)
		case l.Event == "tour":
			tour = l
		case l.Event == "result":
			verdict = l
		}
	}
	require.Len(t, done, len(tourPhases), out)
	ok := map[string]string{}
	for _, l := range done {
		ok[l.Value("scenario")] = l.Value("ok")
	}
	// (The host has no live MMU: the mmu phase fails saying so.)
	assert.Equal(t, map[string]string{"selftest": "false", "thp": "true", "mmu": "false", "nbdswap": "false", "region": "false"}, ok)
	assert.Equal(t, "5", tour.Value("thp_fault_alloc"), "the phase that ran is summed")
	assert.Contains(t, tour.Value("missing"), "pswpout")
	assert.Equal(t, "fail", verdict.Value("status"))
	assert.Contains(t, verdict.Value("err"), "the selftest, mmu, nbdswap, region phases failed")
}
