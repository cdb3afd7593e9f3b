package scenario

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/board"
	"yolk/runtime/cmdline"
	"yolk/runtime/result"
)

func init() {
	Register(Scenario{Name: "t-pass", Help: "passes", Run: func(e *Env) error { e.Check("fine", nil); return nil }})
	Register(Scenario{Name: "t-check", Help: "a check fails", Run: func(e *Env) error { e.Check("bad", errors.New("boom")); return nil }})
	Register(Scenario{Name: "t-err", Help: "returns an error", Run: func(e *Env) error { return errors.New("broken") }})
	Register(Scenario{Name: "t-panic", Help: "panics", Run: func(e *Env) error { panic("oops") }})
	Register(Scenario{Name: "t-late", Help: "finds its parameter bad only when it runs", Run: func(e *Env) error {
		return fmt.Errorf("setting up: %w", &cmdline.ParamError{Key: "k", Value: "v", Reason: cmdline.ErrOutOfRange, Allowed: "less"})
	}})
	Register(Scenario{Name: "t-params", Help: "declares parameters", Run: func(e *Env) error { return nil },
		Params: []cmdline.Spec{
			{Name: "count", Value: cmdline.Int{Min: 1, Max: 10}, Default: "3"},
			{Name: "addr", Value: cmdline.HostPort{}, Required: true},
		}})
}

func run(t *testing.T, name string) (int, []result.Line) {
	t.Helper()
	var buf bytes.Buffer
	p, err := cmdline.Parse("img scenario="+name, true)
	require.NoError(t, err)
	args, _ := CheckParams(p) // an unknown name is Run's to report too
	code := Run(NewEnv(NewReporter(&buf), args, board.Info{Name: "host"}))
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
	for name, want := range map[string]int{"t-pass": ExitPass, "t-check": ExitFail, "t-err": ExitFail, "t-panic": ExitPanic, "t-late": ExitUsage, "nope": ExitUsage} {
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
	assert.Panics(t, func() { Register(Scenario{Name: "t-pass"}) })
	assert.Contains(t, Names(), "t-pass")
	s, ok := Lookup("t-panic")
	require.True(t, ok)
	assert.Equal(t, "panics", s.Help)
	assert.Panics(t, func() {
		Register(Scenario{Name: "t-shadow", Params: []cmdline.Spec{{Name: "ip", Value: cmdline.IPv4{}}}})
	}, "a scenario may not redeclare the image's parameters")
}

func TestCheckParams(t *testing.T) {
	check := func(line string) error {
		p, err := cmdline.Parse("img "+line, true)
		require.NoError(t, err)
		_, err = CheckParams(p)
		return err
	}
	require.NoError(t, check("scenario=t-params addr=10.0.2.2:9"))
	require.NoError(t, check("scenario=t-params addr=10.0.2.2:9 count=0x0a ip=192.168.1.5 gw=192.168.1.1"))
	require.NoError(t, check("scenario=t-pass ip=off gw=1.2.3.4"), "ip=off: the other addresses are not used")
	for line, want := range map[string]string{
		"scenario=t-params":                          "bad boot parameter addr= is required: want HOST:PORT",
		"scenario=t-params addr=x":                   "bad boot parameter addr=x is malformed: want HOST:PORT",
		"scenario=t-params addr=10.0.2.2:9 count=11": "bad boot parameter count=11 is out of range: want an integer from 1 to 10",
		"scenario=t-params addr=10.0.2.2:9 cuont=2":  "bad boot parameter cuont=2 is not a parameter of t-params (did you mean count=?): t-params takes count, addr; every scenario takes scenario, ip, netmask, gw, mac",
		"scenario=t-pass count=2":                    "bad boot parameter count=2 is not a parameter of t-pass (t-params takes it): t-pass takes no parameters of its own",
		"scenario=t-pass zzz":                        "bad boot parameter zzz=true is not a parameter of t-pass: t-pass takes no parameters",
		`scenario=t-pass msg="a b"`:                  `bad boot parameter msg="a b" is not a parameter of t-pass`,
		"scenario=t-pas":                             "bad boot parameter scenario=t-pas is not a choice (did you mean t-pass?): want one of ",
		"scenario=t-pass gw=10.0.3.1":                "bad boot parameter gw=10.0.3.1 is not on 10.0.2.0/24, the subnet of ip=10.0.2.15 netmask=255.255.255.0",
		"scenario=t-pass ip=999.1.1.1":               "bad boot parameter ip=999.1.1.1 is malformed: want an IPv4 address, or off",
		"scenario=t-params count=0 a=1":              "3 bad boot parameters: a=1 is not a parameter of t-params: t-params takes count, addr; every scenario takes scenario, ip, netmask, gw, mac; count=0 is out of range: want an integer from 1 to 10; addr= is required: want HOST:PORT, an IPv4 address and a TCP port from 1 to 65535 (e.g. 10.0.2.2:7)",
	} {
		err := check(line)
		var ue *UsageError
		require.ErrorAs(t, err, &ue, line)
		assert.Contains(t, err.Error(), want, line)
		assert.NotContains(t, err.Error(), "\n", line)
	}
}
