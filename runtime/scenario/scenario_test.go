package scenario

import (
	"bufio"
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/board"
	"yolk/runtime/cmdline"
	"yolk/runtime/result"
)

func init() {
	Register("t-pass", "passes", func(e *Env) error { e.Check("fine", nil); return nil })
	Register("t-check", "a check fails", func(e *Env) error { e.Check("bad", errors.New("boom")); return nil })
	Register("t-err", "returns an error", func(e *Env) error { return errors.New("broken") })
	Register("t-panic", "panics", func(e *Env) error { panic("oops") })
}

func run(t *testing.T, name string) (int, []result.Line) {
	t.Helper()
	var buf bytes.Buffer
	p, err := cmdline.Parse("img scenario="+name, true)
	require.NoError(t, err)
	code := Run(NewEnv(NewReporter(&buf), p, board.Info{Name: "host"}))
	var lines []result.Line
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		l, err := result.Parse(sc.Text())
		require.NoError(t, err, sc.Text())
		lines = append(lines, l)
	}
	return code, lines
}

func verdict(t *testing.T, lines []result.Line) result.Line {
	t.Helper()
	var v []result.Line
	for _, l := range lines {
		if l.Event == "result" {
			v = append(v, l)
		}
	}
	require.Len(t, v, 1, "exactly one verdict")
	return v[0]
}

func TestExitCodes(t *testing.T) {
	for name, want := range map[string]int{"t-pass": ExitPass, "t-check": ExitFail, "t-err": ExitFail, "t-panic": ExitPanic, "nope": ExitUsage} {
		code, lines := run(t, name)
		assert.Equal(t, want, code, name)
		v := verdict(t, lines)
		assert.Equal(t, name, v.Value("scenario"))
		if want == ExitPass {
			assert.Equal(t, "pass", v.Value("status"))
		} else {
			assert.Equal(t, "fail", v.Value("status"), name)
			assert.NotEmpty(t, v.Value("err"), name)
		}
	}
}

func TestCheckLines(t *testing.T) {
	_, lines := run(t, "t-check")
	var c result.Line
	for _, l := range lines {
		if l.Event == "check" {
			c = l
		}
	}
	assert.Equal(t, "bad", c.Value("name"))
	assert.Equal(t, "false", c.Value("ok"))
	assert.Equal(t, "boom", c.Value("err"))
}

func TestDuplicateRegistrationPanics(t *testing.T) {
	assert.Panics(t, func() { Register("t-pass", "", nil) })
	assert.Contains(t, Names(), "t-pass")
	assert.Equal(t, "panics", Help("t-panic"))
}
