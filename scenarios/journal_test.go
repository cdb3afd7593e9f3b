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

// runJournal runs the journal scenario on an 8 MiB pool with the host's
// TCP stack for the network (nil: no network).
func runJournal(t *testing.T, dialer scenario.Dialer, args string) (int, string) {
	t.Helper()
	return runLine(t, "scenario=journal "+args, func(env *scenario.Env) {
		withPool(t)(env)
		if dialer != nil {
			env.Net = dialer
		} else {
			env.NetErr = assert.AnError
		}
	})
}

func TestJournalOnNbdkit(t *testing.T) {
	srv := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: 16 << 20})
	code, out := runJournal(t, &net.Dialer{}, "nbd="+srv.Addr+" tx=100 blocks=8")
	require.Equal(t, scenario.ExitPass, code, out)
	for _, want := range []string{
		"yolk: check name=nbd-dial ok=true",
		"yolk: nbd addr=" + srv.Addr + ` export="" size=16777216 block_size=4096 `,
		"yolk: check name=journal-commit ok=true transactions=100 commits=100 ",
		"yolk: check name=journal-close ok=true",
		"yolk: check name=journal-no-leak ok=true",
		"yolk: journal transactions=100 blocks=8 commits=100 records=800 ",
		"yolk: check name=home-blocks ok=true blocks=2048 ",
		"yolk: check name=journal-recovery-clean ok=true clean=true replayed=0 ",
		"yolk: result scenario=journal status=pass code=0",
	} {
		assert.Contains(t, out, want)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "yolk: nbd ") || strings.HasPrefix(l, "yolk: journal ") {
			t.Log(l)
		}
	}
}

func TestJournalNeedsAServerAndTheNetwork(t *testing.T) {
	code, out := runJournal(t, &net.Dialer{}, "")
	assert.Equal(t, scenario.ExitUsage, code)
	assert.Equal(t, `yolk: result scenario=journal status=fail code=2 err="bad boot parameter nbd= is required: want HOST:PORT, an IPv4 address and a TCP port from 1 to 65535 (e.g. 10.0.2.2:7)"`+"\n", out)

	code, out = runJournal(t, nil, "nbd=10.0.2.2:10809")
	assert.Equal(t, scenario.ExitFail, code)
	assert.Contains(t, out, "no network")

	for _, args := range []string{"nbd=10.0.2.2:1 tx=0", "nbd=10.0.2.2:1 blocks=0", "nbd=10.0.2.2:1 blocks=129",
		"nbd=10.0.2.2:1 tx=y", "nbd=auto", "nbd=x:1"} {
		code, out := runJournal(t, &net.Dialer{}, args)
		assert.Equal(t, scenario.ExitUsage, code, "%s: %s", args, out)
		assert.False(t, strings.Contains(out, "check name=nbd-dial"), "%s dialled: %s", args, out)
	}
}
