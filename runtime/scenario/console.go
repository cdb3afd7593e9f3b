package scenario

import (
	"fmt"
	"io"
	"strings"

	"yolk/runtime/cmdline"
)

// What an interactive scenario (the console shell) needs beyond a
// batch one: a scenario named by a bare word, the console to write to,
// other scenarios to run on the same machine, and an exit status of its
// own choosing.

// ResolveName lets a bare word on the command line that names a
// registered scenario select it, so that `shell` means scenario=shell
// (make qemu APPEND=shell). Naming two scenarios, by two bare words or a
// bare word and a different scenario=, is a *UsageError. The harness
// calls it too, to read the scenario's name the way the image will.
func ResolveName(p cmdline.Params) error {
	var named []string
	for _, k := range p.Keys() {
		if _, ok := Lookup(k); ok && p.Flag(k) {
			named = append(named, k)
		}
	}
	if len(named) == 0 {
		return nil
	}
	if cur := p.String("scenario", ""); p.Has("scenario") && cur != named[0] {
		named = append([]string{"scenario=" + cur}, named...)
	}
	if len(named) > 1 {
		return &UsageError{Problems: []string{fmt.Sprintf("%s: the command line names %d scenarios, run one at a time",
			strings.Join(named, " "), len(named))}}
	}
	p.Delete(named[0])
	p.Set("scenario", named[0])
	return nil
}

// ExitError ends a scenario with a status it chose (the shell's `exit
// 3`), reported as status=exit and handed to the board as it is.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Stdout is the console as a writer, for text that is not line-shaped (a
// prompt, the echo of a key). It shares the result lines' lock, so a
// write is never cut into by a result line.
func (e *Env) Stdout() io.Writer { return e.out }

// Sub returns an environment for another scenario on the same machine
// (the shell's `run`): the same board, pool, allocator, network and
// console output, args from CheckParams, and a verdict of its own.
// The console's input stays with the caller.
func (e *Env) Sub(args cmdline.Args) *Env {
	return &Env{Args: args, Board: e.Board, Pool: e.Pool, Phys: e.Phys, PhysErr: e.PhysErr,
		Net: e.Net, NetErr: e.NetErr, Rx: e.Rx, Halt: e.Halt, out: e.out}
}

// SubTo is Sub with the new environment's lines written to w rather than
// the console: for a caller that passes them on itself (the tour, which
// keeps its phases' /proc dumps back and puts their stat lines on its
// own clock).
func (e *Env) SubTo(args cmdline.Args, w io.Writer) *Env {
	s := e.Sub(args)
	s.out = NewReporter(w)
	return s
}

// Write writes p to the console as it is.
func (r *Reporter) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.w.Write(p)
}
