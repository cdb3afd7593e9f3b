package scenarios

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/runtime/scenario"
)

// withConsole gives the run a pool and console input.
func withConsole(t *testing.T, input string) func(*scenario.Env) {
	return func(env *scenario.Env) {
		withPool(t)(env)
		env.Stdin = strings.NewReader(input)
	}
}

// TestShellRunsScenariosOnItsPool: the bare word selects the shell; run
// takes a scenario that brings its own memory manager (thp) on the same
// pool, refuses itself, an unknown name and the image's parameters, and
// exit's status is the run's.
func TestShellRunsScenariosOnItsPool(t *testing.T) {
	input := strings.Join([]string{
		"run thp", "ps", "run shell", "run nosuch", "run sleep ip=off", "run sleep duration=forever",
		"run sleep duration=1ms", "exit 3",
	}, "\r") + "\r"
	code, out := runLine(t, "shell", withConsole(t, input))
	out = strings.ReplaceAll(out, "\r\n", "\n")
	require.Equal(t, 3, code, out)
	for _, want := range []string{
		"yolk: scenario name=shell help=",
		"yolk# run thp\n",
		"yolk: result scenario=thp status=pass code=0\n",
		"run: thp exited with status 0\n",
		"yolk# run shell\nrun: the shell is running already; exit leaves it\n",
		"yolk# run nosuch\nrun: no scenario \"nosuch\" (have crash, journal, ",
		"yolk# run sleep ip=off\nrun: \"ip=off\": give the scenario's own parameters as k=v (the image's are set at boot)\n",
		"yolk# run sleep duration=forever\nrun: bad boot parameter duration=forever ",
		"yolk: result scenario=sleep status=pass code=0\nmm: Adding 16380k swap on /dev/zram0.  Priority:-2 extents:1 across:16380k\nrun: sleep exited with status 0\n",
		"yolk# exit 3\n",
		"yolk: result scenario=shell status=exit code=3\n",
	} {
		assert.Contains(t, out, want)
	}
	assert.NotContains(t, out, "frames fewer free", "every run gave the pool back what it took")
	assert.Regexp(t, `(?m)^ +1 +0 +\d+ .* init\s*$`, out, "init is back after thp")
}

func TestShellWithoutConsole(t *testing.T) {
	code, out := runLine(t, "scenario=shell", withPool(t))
	assert.Equal(t, scenario.ExitFail, code)
	assert.Contains(t, out, "err=\"the board has no console input\"")
}
