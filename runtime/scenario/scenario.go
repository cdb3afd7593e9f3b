// Package scenario is the image's registry of runnable scenarios: named
// functions selected on the boot command line with scenario=NAME, run
// once, reported as result lines, and turned into the exit status that
// reaches the QEMU process (or the board's halt/reset).
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
package scenario

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"yolk/board"
	"yolk/mm/phys"
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
)

// Dialer opens connections through whatever network stack the image has
// (gVisor over ENET on the board, the host's stack in host tests).
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Env is what a scenario gets to work with.
type Env struct {
	Params cmdline.Params
	Board  board.Info
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

	out    *Reporter
	failed atomic.Bool // Check may be called from several goroutines
}

// NewEnv prepares an environment that reports to out.
func NewEnv(out *Reporter, p cmdline.Params, b board.Info) *Env {
	return &Env{Params: p, Board: b, out: out}
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

type entry struct {
	name, help string
	fn         Func
}

var (
	mu       sync.Mutex
	registry = map[string]entry{}
)

// Register adds a scenario. It panics on a duplicate name: that is a
// programming error found at init time, never at run time.
func Register(name, help string, fn Func) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[name]; dup {
		panic("scenario: duplicate registration of " + name)
	}
	registry[name] = entry{name, help, fn}
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

// Help returns the one-line description of a scenario.
func Help(name string) string {
	mu.Lock()
	defer mu.Unlock()
	return registry[name].help
}

// Run runs the scenario named by the scenario= parameter and returns the
// exit status. It reports exactly one result line for the verdict.
func Run(env *Env) (code int) {
	name := env.Params.String("scenario", "")
	mu.Lock()
	ent, ok := registry[name]
	mu.Unlock()
	if !ok {
		env.Report("result", "scenario", name, "status", "fail", "code", ExitUsage,
			"err", fmt.Sprintf("unknown scenario %q (have %v)", name, Names()))
		return ExitUsage
	}
	env.Report("scenario", "name", name, "help", ent.help)

	defer func() {
		if r := recover(); r != nil {
			env.Report("result", "scenario", name, "status", "fail", "code", ExitPanic,
				"err", fmt.Sprintf("panic: %v", r), "stack", string(debug.Stack()))
			code = ExitPanic
		}
	}()
	err := ent.fn(env)
	switch {
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
