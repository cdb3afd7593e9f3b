package scenario

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/board"
	"yolk/runtime/cmdline"
)

func init() {
	Register(Scenario{Name: "t-exit", Help: "exits with status=", Params: []cmdline.Spec{
		{Name: "status", Value: cmdline.Int{Min: 0, Max: 255}, Default: "0"},
	}, Run: func(e *Env) error { return &ExitError{Code: e.Args.Int("status")} }})
}

func TestABareWordNamesAScenario(t *testing.T) {
	for line, want := range map[string]string{
		"img t-pass":                   "t-pass",
		"img t-pass scenario=t-pass":   "t-pass",
		"img t-exit status=7":          "t-exit",
		"img verbose":                  DefaultScenario, // a flag, and nothing yolk runs
		"img t-pass=true":              DefaultScenario, // not a bare word
		"img scenario=t-exit t-exit=1": "t-exit",
	} {
		p, err := cmdline.Parse(line, true)
		require.NoError(t, err)
		require.NoError(t, ResolveName(p), line)
		assert.Equal(t, want, p.String("scenario", DefaultScenario), line)
	}
	for _, line := range []string{"img t-pass t-err", "img scenario=t-err t-pass"} {
		p, err := cmdline.Parse(line, true)
		require.NoError(t, err)
		_, err = CheckParams(p)
		var usage *UsageError
		require.ErrorAs(t, err, &usage, line)
		assert.Contains(t, err.Error(), "names 2 scenarios", line)
		assert.NotContains(t, err.Error(), "\n")
	}
}

func TestAScenarioChoosesItsExitStatus(t *testing.T) {
	var buf bytes.Buffer
	p, err := cmdline.Parse("img t-exit status=3", true)
	require.NoError(t, err)
	args, err := CheckParams(p)
	require.NoError(t, err)
	env := NewEnv(NewReporter(&buf), args, board.Info{Name: "host"})
	assert.Equal(t, 3, Run(env))
	assert.Contains(t, buf.String(), "yolk: result scenario=t-exit status=exit code=3\n")
}

func TestSubRunsOnTheSameMachine(t *testing.T) {
	var buf bytes.Buffer
	parent := NewEnv(NewReporter(&buf), cmdline.Args{}, board.Info{Name: "host"})
	parent.Pool = make([]byte, 4096)
	parent.Check("parent-fails", assertErr)
	p, err := cmdline.Parse("scenario=t-pass", false)
	require.NoError(t, err)
	args, err := CheckParams(p)
	require.NoError(t, err)
	sub := parent.Sub(args)
	assert.Equal(t, ExitPass, Run(sub), "a sub-run has a verdict of its own")
	assert.Same(t, &parent.Pool[0], &sub.Pool[0])
	_, err = sub.Stdout().Write([]byte("raw> "))
	require.NoError(t, err)
	assert.Contains(t, buf.String(), "yolk: result scenario=t-pass status=pass code=0\nraw> ")
	assert.True(t, parent.Failed())
}

var assertErr = &ExitError{Code: 1}

// SubTo's lines go to its writer, not the console; the machine is the
// same.
func TestSubToWritesElsewhere(t *testing.T) {
	var console, phase bytes.Buffer
	parent := NewEnv(NewReporter(&console), cmdline.Args{}, board.Info{Name: "host"})
	parent.Pool = make([]byte, 4096)
	p, err := cmdline.Parse("scenario=t-pass", false)
	require.NoError(t, err)
	args, err := CheckParams(p)
	require.NoError(t, err)
	sub := parent.SubTo(args, &phase)
	assert.Equal(t, ExitPass, Run(sub))
	assert.Same(t, &parent.Pool[0], &sub.Pool[0])
	assert.Contains(t, phase.String(), "yolk: result scenario=t-pass status=pass code=0\n")
	assert.Empty(t, console.String())
}
