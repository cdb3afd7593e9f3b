// Package scenario is the image's registry of runnable scenarios: named
// functions selected on the boot command line with scenario=NAME, run
// once, reported as result lines, and turned into the exit status that
// reaches the QEMU process (or the board's halt/reset).
//
// Each scenario declares the parameters it reads (cmdline.Spec), and the
// image declares its own (scenario=, the network's); CheckParams holds the
// command line to both before anything runs, so a misspelt key, a key the
// chosen scenario does not read, or a value out of range is exit status 2
// with one line naming it, never a run with a default.
//
// Exit status convention:
//
//	0  the scenario passed
//	1  the scenario ran and failed (a check failed or it returned an error)
//	2  the scenario could not be started (unknown name, bad parameters,
//	   board set-up failed)
//	3  the scenario panicked (and the panic was recovered)
//	4  the Go runtime died: an unrecovered panic in another goroutine or a
//	   fatal error (the image has no "yolk: exit" line then)
//	5  the scenario's watchdog found the machine stalled: no progress for
//	   its set time with free memory at or below min (a deadlock shown)
//
// A scenario may also end with a status of its own choosing, reported as
// status=exit (the shell's `exit N`: see ExitError).
package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"yolk/board"
	"yolk/mm/phys"
	"yolk/net/rx"
	"yolk/net/stack"
	"yolk/runtime/cmdline"
	"yolk/runtime/result"
)

// Exit statuses.
const (
	ExitPass  = 0
	ExitFail  = 1
	ExitUsage = 2
	ExitPanic = 3
	ExitFatal = 4
	ExitStall = 5
)

// Dialer opens connections through whatever network stack the image has
// (gVisor over ENET on the board, the host's stack in host tests).
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Env is what a scenario gets to work with.
type Env struct {
	// Args are the boot parameters, checked against the image's and the
	// scenario's declarations.
	Args  cmdline.Args
	Board board.Info
	// Pool is the managed pool as bytes, or nil where it is not mapped.
	Pool []byte
	// Phys is the page allocator managing Pool; nil if it could not be
	// set up, and PhysErr says why.
	Phys    *phys.Pool
	PhysErr error
	// Net is nil when the board has no network.
	Net Dialer
	// NetErr says why Net is nil.
	NetErr error
	// Rx is the network's receive path (nil without a network, and in
	// host tests): its charging pool, mode and memalloc sockets.
	Rx *rx.Receiver
	// Halt ends the run at once with an exit status and why, for a
	// watchdog that finds the scenario stuck where returning is
	// impossible; nil where nothing can (host tests), and then a watchdog
	// only reports.
	Halt func(code int, err error)
	// Stdin is the console's input, for a scenario that reads it (the
	// shell); nil where there is none.
	Stdin io.Reader

	out    *Reporter
	failed atomic.Bool // Check may be called from several goroutines
}

// NewEnv prepares an environment that reports to out; args come from
// CheckParams.
func NewEnv(out *Reporter, args cmdline.Args, b board.Info) *Env {
	return &Env{Args: args, Board: b, out: out}
}

// Text writes raw console text (a /proc file, say) between result lines.
// Lines of it that begin with the result prefix would be read as results,
// so callers print only text they made.
func (e *Env) Text(s string) { e.out.Text(s) }

// Report writes one result line.
func (e *Env) Report(event string, kv ...any) { e.out.Emit(result.New(event, kv...)) }

// Check reports a named check. A nil err passes; otherwise the check fails
// and so will the scenario. Extra key/value pairs are appended.
func (e *Env) Check(name string, err error, kv ...any) bool {
	fields := []any{"name", name, "ok", err == nil}
	fields = append(fields, kv...)
	if err != nil {
		e.failed.Store(true)
		fields = append(fields, "err", err.Error())
	}
	e.Report("check", fields...)
	return err == nil
}

// Failed reports whether a check has failed.
func (e *Env) Failed() bool { return e.failed.Load() }

// Func is a scenario body. Returning an error fails the scenario.
type Func func(*Env) error

// A Scenario is something the image can run: scenario=NAME on its
// command line.
type Scenario struct {
	Name string
	// Help says what it does, in a sentence.
	Help string
	// Params are the parameters it reads, beside the image's own.
	Params []cmdline.Spec
	Run    Func
	// NBDSize, if set, says how many bytes the NBD export its "nbd"
	// service parameters point at must hold for a run with args (swap
	// for its working set, say), so that the QEMU harness starts a
	// server big enough. It reads only parameters that name no service:
	// the harness calls it before it has a server to name. The image
	// never calls it.
	NBDSize func(args cmdline.Args) int64
	// Console says the scenario reads the console (Env.Stdin): the QEMU
	// harness then connects its own input to the image's serial port.
	Console bool
}

// DefaultScenario runs when the command line names none: the tour of the
// whole machine (package yolk/scenarios).
const DefaultScenario = "tour"

var (
	mu       sync.Mutex
	registry = map[string]Scenario{}
)

// Register adds a scenario. It panics on a duplicate name, a parameter
// that cannot work or one that shadows the image's: those are programming
// errors found at init time, never at run time.
func Register(s Scenario) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[s.Name]; dup {
		panic("scenario: duplicate registration of " + s.Name)
	}
	for _, p := range s.Params {
		if err := p.Validate(); err != nil {
			panic("scenario: " + s.Name + ": " + err.Error())
		}
		for _, q := range imageParams(nil) {
			if p.Name == q.Name {
				panic("scenario: " + s.Name + " declares the image's parameter " + p.Name)
			}
		}
	}
	registry[s.Name] = s
}

// Lookup returns the scenario registered under name.
func Lookup(name string) (Scenario, bool) {
	mu.Lock()
	defer mu.Unlock()
	s, ok := registry[name]
	return s, ok
}

// Names returns the registered scenario names, sorted.
func Names() []string {
	mu.Lock()
	defer mu.Unlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ImageParams are the parameters the image reads whatever the scenario:
// scenario= itself and the network's.
func ImageParams() []cmdline.Spec { return imageParams(Names()) }

func imageParams(scenarios []string) []cmdline.Spec {
	return append([]cmdline.Spec{{
		Name: "scenario", Value: cmdline.Choice(scenarios), Default: DefaultScenario,
		Help: "the scenario to run",
	}}, stack.Params...)
}

// Params returns every parameter a run of the named scenario takes: the
// image's, then the scenario's own.
func Params(name string) ([]cmdline.Spec, bool) {
	s, ok := Lookup(name)
	if !ok {
		return nil, false
	}
	return append(ImageParams(), s.Params...), true
}

// NBDSize returns how many bytes of NBD export a run of the command line
// p needs, as its scenario's NBDSize says: 0 when the scenario does not
// say, and when the parameters NBDSize would read are refused anyway
// (the image will say why). Parameters that name a service, and unknown
// ones, are not held against p here: the harness sets the first itself,
// and the image judges the rest.
func NBDSize(p cmdline.Params) int64 {
	s, ok := Lookup(p.String("scenario", DefaultScenario))
	if !ok || s.NBDSize == nil {
		return 0
	}
	var specs []cmdline.Spec
	for _, spec := range append(ImageParams(), s.Params...) {
		if spec.Service == "" {
			specs = append(specs, spec)
		}
	}
	args, _, errs := cmdline.Bind(p, specs)
	if len(errs) > 0 {
		return 0
	}
	return max(s.NBDSize(args), 0)
}

// A UsageError lists what is wrong with a command line, one problem per
// parameter; its text is a single line.
type UsageError struct{ Problems []string }

func (e *UsageError) Error() string {
	if len(e.Problems) == 1 {
		return "bad boot parameter " + e.Problems[0]
	}
	return fmt.Sprintf("%d bad boot parameters: %s", len(e.Problems), strings.Join(e.Problems, "; "))
}

// CheckParams holds a command line to the image's parameters and those of
// the scenario it names: every key must be declared by one of them, every
// value must pass its check, and the network's addresses must agree. The
// error, a *UsageError, names each offending key and value and what is
// allowed, in one line; a run that gets it must exit with ExitUsage.
func CheckParams(p cmdline.Params) (cmdline.Args, error) {
	if err := ResolveName(p); err != nil {
		return cmdline.Args{}, err
	}
	name := p.String("scenario", DefaultScenario)
	specs, ok := Params(name)
	if !ok {
		// Without a scenario the other keys cannot be judged: report the
		// name, and any of the image's own values that are bad too.
		specs = ImageParams()
	}
	args, unknown, errs := cmdline.Bind(p, specs)
	var problems []string
	if ok {
		for _, k := range unknown {
			problems = append(problems, unknownKey(k, p.String(k, ""), name, specs))
		}
	}
	for _, err := range errs {
		problems = append(problems, err.Error())
	}
	if len(problems) == 0 {
		if _, err := stack.FromArgs(args); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return args, &UsageError{Problems: problems}
	}
	return args, nil
}

// unknownKey says why a key is refused: a likely misspelling of a
// parameter, a parameter of another scenario, or nothing yolk knows; and
// what the chosen scenario does take. specs are the run's parameters, the
// image's first.
func unknownKey(key, value, scenario string, specs []cmdline.Spec) string {
	names := func(specs []cmdline.Spec) []string {
		var out []string
		for _, s := range specs {
			out = append(out, s.Name)
		}
		return out
	}
	image := names(ImageParams())
	own := names(specs[len(image):])
	takes := scenario + " takes no parameters of its own"
	if len(own) > 0 {
		takes = scenario + " takes " + strings.Join(own, ", ")
	}
	takes += "; every scenario takes " + strings.Join(image, ", ")

	msg := cmdline.Word(key, value) + " is not a parameter of " + scenario
	if near := cmdline.Suggest(key, names(specs)); near != "" {
		return fmt.Sprintf("%s (did you mean %s=?): %s", msg, near, takes)
	}
	var others []string
	for _, n := range Names() {
		s, _ := Lookup(n)
		if slices.Contains(names(s.Params), key) {
			others = append(others, n)
		}
	}
	switch len(others) {
	case 0:
		return msg + ": " + takes
	case 1:
		return fmt.Sprintf("%s (%s takes it): %s", msg, others[0], takes)
	}
	return fmt.Sprintf("%s (%s and %s take it): %s", msg, strings.Join(others[:len(others)-1], ", "), others[len(others)-1], takes)
}

// Run runs the scenario named by the scenario= parameter and returns the
// exit status. It reports exactly one result line for the verdict.
func Run(env *Env) (code int) {
	name := env.Args.String("scenario")
	ent, ok := Lookup(name)
	if !ok {
		env.Report("result", "scenario", name, "status", "fail", "code", ExitUsage,
			"err", fmt.Sprintf("unknown scenario %q (have %v)", name, Names()))
		return ExitUsage
	}
	env.Report("scenario", "name", name, "help", ent.Help)

	defer func() {
		if r := recover(); r != nil {
			env.Report("result", "scenario", name, "status", "fail", "code", ExitPanic,
				"err", fmt.Sprintf("panic: %v", r), "stack", string(debug.Stack()))
			code = ExitPanic
		}
	}()
	err := ent.Run(env)
	var bad *cmdline.ParamError
	var exit *ExitError
	switch {
	case errors.As(err, &exit):
		env.Report("result", "scenario", name, "status", "exit", "code", exit.Code)
		return exit.Code
	case errors.As(err, &bad):
		// A value only the machine can judge (one that must fit the
		// pool, say): still a bad parameter.
		env.Report("result", "scenario", name, "status", "fail", "code", ExitUsage,
			"err", (&UsageError{Problems: []string{bad.Error()}}).Error())
		return ExitUsage
	case err != nil:
		env.Report("result", "scenario", name, "status", "fail", "code", ExitFail, "err", err.Error())
		return ExitFail
	case env.Failed():
		env.Report("result", "scenario", name, "status", "fail", "code", ExitFail, "err", "a check failed")
		return ExitFail
	}
	env.Report("result", "scenario", name, "status", "pass", "code", ExitPass)
	return ExitPass
}

// Reporter serialises result lines onto one writer (the console).
type Reporter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewReporter writes result lines to w.
func NewReporter(w io.Writer) *Reporter { return &Reporter{w: w} }

// Text writes s as it is, ending it with a newline if it has none.
func (r *Reporter) Text(s string) {
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	io.WriteString(r.w, s)
}

// Emit writes one line. Console write errors have nowhere to be reported
// and are dropped.
func (r *Reporter) Emit(l result.Line) {
	r.mu.Lock()
	defer r.mu.Unlock()
	io.WriteString(r.w, l.String()+"\n")
}
