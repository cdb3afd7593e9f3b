package scenarios

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
	"yolk/runtime/scenario"
)

func runRegion(t *testing.T, args string) (int, string) {
	t.Helper()
	return runLine(t, "scenario=region "+args, func(env *scenario.Env) {
		withPool(t)(env)
		env.Net = &net.Dialer{}
	})
}

// The region scenario on the host's TCP stack against nbdkit: the same
// checks as on the image, two rounds.
func TestRegionOnNbdkit(t *testing.T) {
	srv := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: 16 << 20})
	code, out := runRegion(t, "nbd="+srv.Addr+" pool=4 rounds=2")
	require.Equal(t, scenario.ExitPass, code, out)
	assert.NotContains(t, out, "ok=false")
	ls := results(out)
	for _, c := range []string{"nbd-dial", "journal-format", "region-write", "region-data", "region-invariants",
		"region-reclaimed", "region-close", "region-reopen", "region-durable", "region-no-leak", "region-board-pool"} {
		l, ok := find(ls, "check", "name", c)
		if assert.True(t, ok, "no check %s in\n%s", c, out) {
			assert.Equal(t, "true", l.Value("ok"), "%s", l)
		}
	}
	r, ok := find(ls, "region")
	require.True(t, ok, out)
	assert.Zero(t, uintField(t, r, "mismatches"), "%s", r)
	assert.Equal(t, uint64(2*1280), uintField(t, r, "pages_checked"), "%s", r)
	assert.NotZero(t, uintField(t, r, "reclaim_writes"), "%s", r)
	assert.Equal(t, uint64(80), uintField(t, r, "msyncs"), "%s", r)
}

func TestRegionRefusesASmallExport(t *testing.T) {
	srv := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: 4 << 20})
	code, out := runRegion(t, "nbd="+srv.Addr+" pool=4")
	assert.Equal(t, scenario.ExitFail, code, out)
	assert.Contains(t, out, "the NBD export has 4194304 bytes, the journal and region need 6291456")
	assert.Contains(t, out, "yolk: check name=region-no-leak ok=true")
	assert.Contains(t, out, "yolk: check name=region-board-pool ok=true")
}
