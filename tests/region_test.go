package tests

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu"
	"yolk/runtime/result"
)

// The region scenario, as `make qemu APPEND='scenario=region'` runs it:
// a journal and a region of 5 MiB on an nbdkit memory server the harness
// starts, mapped shared by a parent and its child in a 4 MiB pool, every
// page written through them while reclaim writes dirty pages back
// through the journal, the region msync'd, every byte checked; then the
// journal is closed, reopened (recovery) and every msync'd byte read back
// through a fresh mapping. About 17 s under QEMU.
func TestRegionScenarioOnTheImage(t *testing.T) {
	t.Parallel() // a long run: two QEMUs at a time, one per core (see TestMain)
	img := evkImage(t)
	start := time.Now()
	code, stdout, said := runHarness(t, "-image", img, "-timeout", "150s", "scenario=region")
	t.Logf("harness: %v, %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(said))
	lines := strings.Split(stdout, "\n")
	tail := func() string { return strings.Join(lines[max(0, len(lines)-40):], "\n") }
	require.Equal(t, 0, code, "%s\n%s", tail(), said)

	var results []result.Line
	for _, l := range lines {
		if r, err := result.Parse(l); err == nil {
			results = append(results, r)
		}
	}
	run := qemu.Run{Results: results}
	num := func(l result.Line, key string) uint64 {
		t.Helper()
		v, err := strconv.ParseUint(l.Value(key), 10, 64)
		require.NoError(t, err, "%s in %s", key, l)
		return v
	}
	res, ok := run.Find("result")
	require.True(t, ok, tail())
	assert.Equal(t, "pass", res.Value("status"))
	for _, c := range []string{"nbd-dial", "journal-format", "region-write", "region-data", "region-invariants",
		"region-reclaimed", "region-close", "region-reopen", "region-durable", "region-no-leak", "region-board-pool"} {
		l, ok := run.Find("check", "name", c)
		if assert.True(t, ok, "no check %s in:\n%s", c, tail()) {
			assert.Equal(t, "true", l.Value("ok"), "%s", l)
		}
	}
	assert.NotContains(t, stdout, "ok=false")

	setup, ok := run.Find("region-setup")
	require.True(t, ok, tail())
	assert.Greater(t, num(setup, "region_kb"), num(setup, "pool_kb"), "the region is larger than the pool")
	r, ok := run.Find("region")
	require.True(t, ok, tail())
	pages := num(r, "region_kb") / 4
	assert.Zero(t, num(r, "mismatches"), "%s", r)
	assert.Equal(t, pages, num(r, "pages_checked"), "%s", r)
	assert.NotZero(t, num(r, "reclaim_writes"), "reclaim wrote back through the journal: %s", r)
	assert.Equal(t, num(r, "pages_written")*4, num(r, "pgpgout"), "pgpgout counts the region's writeback: %s", r)
	assert.GreaterOrEqual(t, num(r, "pages_written"), pages, "every page went through the journal at least once: %s", r)
	assert.Zero(t, num(r, "oom_kill"), "%s", r)
	durable, _ := run.Find("check", "name", "region-durable")
	assert.Equal(t, pages, num(durable, "pages_checked"), "every msync'd page read back after reopening")

	// The stat lines carry the page cache's figures, and /proc shows the
	// mapping as Linux would.
	for _, l := range results {
		if l.Event == "stat" {
			for _, k := range []string{"memfree_kb", "cached_kb", "dirty_kb", "writeback_kb", "pgpgin", "pgpgout"} {
				num(l, k)
			}
		}
	}
	for _, want := range []string{"\nCached:", "\nDirty:", "\nWriteback:", "\nMapped:", " rw-s 00000000 00:00 0          /dev/nbd0\n", "\nVmFlags: rd wr sh mr mw me ms \n"} {
		assert.Contains(t, stdout, want)
	}
	t.Logf("%s", r)
}
