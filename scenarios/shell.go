package scenarios

import (
	"errors"
	"fmt"
	"strings"

	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
	"yolk/runtime/shell"
)

const shellName = "shell"

func init() {
	scenario.Register(scenario.Scenario{
		Name:    shellName,
		Help:    "an interactive prompt on the console: /proc and /sys files, sysctls, ps/maps/smaps of a few tasks, run SCENARIO, exit [STATUS] (help lists the commands)",
		Run:     runShell,
		Console: true,
	})
}

// runShell runs the console shell (package yolk/runtime/shell) until
// `exit`, whose status becomes the run's, or the end of the console's
// input (status 0).
func runShell(env *scenario.Env) error {
	if env.Stdin == nil {
		return errors.New("the board has no console input")
	}
	if env.Phys == nil {
		return fmt.Errorf("no page allocator: %v", env.PhysErr)
	}
	sh, err := shell.New(shell.Config{
		In: env.Stdin, Out: env.Stdout(), Pool: env.Phys,
		Rx: env.Rx, NetErr: env.NetErr,
		Scenario: func(words []string) (func() int, error) { return prepare(env, words) },
	})
	if err != nil {
		return err
	}
	code, err := sh.Run()
	if cerr := sh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return &scenario.ExitError{Code: code}
}

// prepare holds `run NAME k=v...` to the image's and NAME's parameters,
// as the boot command line is held, and returns the run. The network
// parameters are the ones the image came up with: the interface is up
// already, and a run cannot move it.
func prepare(env *scenario.Env, words []string) (func() int, error) {
	name := words[0]
	if name == shellName {
		return nil, errors.New("the shell is running already; exit leaves it")
	}
	if _, ok := scenario.Lookup(name); !ok {
		return nil, fmt.Errorf("no scenario %q (have %s)", name, strings.Join(others(), ", "))
	}
	var line strings.Builder
	line.WriteString(cmdline.Word("scenario", name))
	for _, k := range env.Args.Set() {
		if k != "scenario" {
			line.WriteString(" " + cmdline.Word(k, env.Args.String(k)))
		}
	}
	for _, w := range words[1:] {
		k, v, ok := strings.Cut(w, "=")
		if !ok || k == "scenario" || isImageParam(k) {
			return nil, fmt.Errorf("%q: give the scenario's own parameters as k=v (the image's are set at boot)", w)
		}
		line.WriteString(" " + cmdline.Word(k, v))
	}
	p, err := cmdline.Parse(line.String(), false)
	if err != nil {
		return nil, err
	}
	args, err := scenario.CheckParams(p)
	if err != nil {
		return nil, err
	}
	return func() int { return scenario.Run(env.Sub(args)) }, nil
}

func isImageParam(k string) bool {
	for _, s := range scenario.ImageParams() {
		if s.Name == k {
			return true
		}
	}
	return false
}

// others are the scenarios the shell can run.
func others() []string {
	var out []string
	for _, n := range scenario.Names() {
		if n != shellName {
			out = append(out, n)
		}
	}
	return out
}
