// Package qemu is the host-side harness that boots yolk images under
// qemu-system-arm and reads what they say.
//
// Boot starts any host services a scenario needs (on loopback ports it
// picks; QEMU user networking shows the host's loopback to the guest as
// 10.0.2.2), boots the image with those services' parameters appended to
// the command line, streams the console line by line, parses the yolk:
// result lines (package yolk/runtime/result), enforces a deadline, and
// returns the QEMU process's exit status, which the image sets through
// semihosting to its scenario's verdict.
//
// A run that misses its deadline is killed; the error carries the last
// console lines, so a hung image is diagnosed from the test log alone.
package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"yolk/runtime/result"
)

// Target says how QEMU boots one board's image.
type Target struct {
	Name    string
	Machine string
	CPU     string
	// ConsoleUART is the index of the UART the board prints on (0 for
	// UART1, 1 for UART2); the other serial port goes to null.
	ConsoleUART int
}

// Targets are the boards QEMU can boot. Both run on the mcimx6ul-evk
// model: the USB armory Mk II image finds ENET1 under emulation and prints
// on UART2.
var Targets = map[string]Target{
	"mx6ullevk": {Name: "mx6ullevk", Machine: "mcimx6ul-evk", CPU: "cortex-a7", ConsoleUART: 0},
	"usbarmory": {Name: "usbarmory", Machine: "mcimx6ul-evk", CPU: "cortex-a7", ConsoleUART: 1},
}

// Config describes one boot.
type Config struct {
	Image  string // ELF image (required)
	Target string // key of Targets; mx6ullevk when empty
	QEMU   string // emulator binary; qemu-system-arm when empty
	Memory string // -m; 512M when empty
	// Append holds key=value boot parameters, after the services' own.
	Append []string
	// Timeout bounds the whole run; 60s when zero.
	Timeout time.Duration
	// Services are started before and closed after the boot.
	Services []Service
	// Console, when set, receives every console line as it arrives (with
	// Stdin, every byte: the prompt and the echo too).
	Console io.Writer
	// Stdin, when set, is the console's input (the shell's). A terminal
	// (an *os.File that is one) is put in raw mode by QEMU, the guest
	// echoes, Ctrl-C goes to the guest, and Ctrl-A x leaves QEMU. Any
	// other reader is held back until the image reports ready: QEMU
	// reads its stdin from the start, and a byte that reaches the UART
	// before the board resets it is lost.
	Stdin io.Reader
}

// Service is something on the host that a scenario talks to.
type Service interface {
	// Start brings the service up and returns the boot parameters that
	// tell the guest where it is (e.g. host=10.0.2.2:40123).
	Start() ([]string, error)
	Close() error
}

// GuestHostAddr is how a guest on QEMU user networking reaches the host's
// loopback interface.
const GuestHostAddr = "10.0.2.2"

// Run is the outcome of one boot.
type Run struct {
	Args     []string      // the QEMU command line
	ExitCode int           // QEMU's exit status (-1 if killed)
	Lines    []string      // every console line
	Results  []result.Line // the yolk: lines among them
	Banner   time.Duration // QEMU start to the banner line; 0 if none
	Elapsed  time.Duration // QEMU start to exit
	// CPU is the host CPU time QEMU used (user+system). A guest idling in
	// WFI costs almost none; a spinning one costs a core's worth.
	CPU      time.Duration
	TimedOut bool
	Stderr   string
}

// Find returns the first result line of an event whose fields include all
// the given key/value pairs.
func (r *Run) Find(event string, kv ...string) (result.Line, bool) {
	return result.Find(r.Results, event, kv...)
}

// Verdict returns the run's verdict: its last result line. A shell's
// runs print theirs before the shell's own.
func (r *Run) Verdict() (result.Line, bool) {
	for i := len(r.Results) - 1; i >= 0; i-- {
		if r.Results[i].Event == "result" {
			return r.Results[i], true
		}
	}
	return result.Line{}, false
}

// Tail returns the last n console lines, for error messages.
func (r *Run) Tail(n int) string {
	lines := r.Lines
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Args returns the QEMU arguments for cfg (without the binary).
func Args(cfg Config, appendLine string) ([]string, error) {
	name := cfg.Target
	if name == "" {
		name = "mx6ullevk"
	}
	t, ok := Targets[name]
	if !ok {
		return nil, fmt.Errorf("qemu: unknown target %q", name)
	}
	if cfg.Image == "" {
		return nil, errors.New("qemu: no image")
	}
	mem := cfg.Memory
	if mem == "" {
		mem = "512M"
	}
	serial := [2]string{"null", "null"}
	serial[t.ConsoleUART] = "stdio"
	var chardev []string
	if cfg.Stdin != nil {
		// signal=off: Ctrl-C is the guest's (the shell cancels the line);
		// on a terminal the mux's Ctrl-A x still ends QEMU.
		mux := "off"
		if isTerminal(cfg.Stdin) {
			mux = "on"
		}
		chardev = []string{"-chardev", "stdio,id=console,signal=off,mux=" + mux}
		serial[t.ConsoleUART] = "chardev:console"
	}
	args := append([]string{
		"-machine", t.Machine, "-cpu", t.CPU, "-m", mem,
		"-nographic", "-monitor", "none", "-semihosting"}, chardev...)
	args = append(args,
		"-serial", serial[0], "-serial", serial[1],
		"-net", "nic,model=imx.enet,netdev=net0", "-netdev", "user,id=net0",
	)
	if appendLine != "" {
		args = append(args, "-append", appendLine)
	}
	return append(args, "-kernel", cfg.Image), nil
}

// Boot runs one image to completion. A non-zero exit status is not an
// error: it is the scenario's verdict, in Run.ExitCode. Errors are for
// runs that did not complete: QEMU failed to start, the deadline passed,
// or QEMU exited without the image reporting an exit (a crash, a bad
// option), or with a status other than the one the image reported.
func Boot(ctx context.Context, cfg Config) (*Run, error) {
	var params []string
	for _, s := range cfg.Services {
		p, err := s.Start()
		if err != nil {
			return nil, fmt.Errorf("qemu: starting host service: %w", err)
		}
		defer s.Close()
		params = append(params, p...)
	}
	for _, a := range cfg.Append {
		if a != "" {
			params = append(params, a)
		}
	}
	args, err := Args(cfg, strings.Join(params, " "))
	if err != nil {
		return nil, err
	}

	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	bin := cfg.QEMU
	if bin == "" {
		bin = "qemu-system-arm"
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = 2 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	input := &gate{r: cfg.Stdin, open: make(chan struct{})}
	defer input.release()
	switch {
	case cfg.Stdin == nil:
	case isTerminal(cfg.Stdin):
		cmd.Stdin = cfg.Stdin // a person, who waits for the prompt
	default:
		cmd.Stdin = input
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}

	run := &Run{Args: append([]string{bin}, args...), ExitCode: -1}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return run, fmt.Errorf("qemu: %w", err)
	}

	// Read to EOF before Wait, as os/exec requires; a kill at the deadline
	// closes the pipe and ends the read. A console with input is shown
	// byte by byte, since a prompt and the echo of a key end no line.
	console, mirror := io.Reader(stdout), cfg.Console
	if cfg.Stdin != nil && mirror != nil {
		console, mirror = io.TeeReader(stdout, mirror), nil
	}
	readConsole(console, run, start, mirror, input.release)
	input.release() // the image has exited: what is left goes nowhere
	waitErr := cmd.Wait()
	run.Elapsed = time.Since(start)
	run.Stderr = stderr.String()
	if ps := cmd.ProcessState; ps != nil {
		run.ExitCode = ps.ExitCode()
		run.CPU = ps.UserTime() + ps.SystemTime()
	}

	// The errors carry the last console lines, unless the console was
	// already shown as it arrived.
	tail := ""
	if cfg.Console == nil {
		tail = "; last console lines:\n" + run.Tail(20)
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		run.TimedOut = true
		return run, fmt.Errorf("qemu: killed after %v without exiting%s", timeout, tail)
	case ctx.Err() != nil:
		return run, fmt.Errorf("qemu: run cancelled: %w%s", ctx.Err(), tail)
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		return run, fmt.Errorf("qemu: %w", waitErr)
	}
	reported, ok := run.Find("exit")
	if !ok {
		stderr := ""
		if s := strings.TrimSpace(run.Stderr); s != "" {
			stderr = "; stderr: " + s
		}
		return run, fmt.Errorf("qemu: exited with status %d before the image reported an exit%s%s", run.ExitCode, stderr, tail)
	}
	if code, err := strconv.Atoi(reported.Value("code")); err != nil || code != run.ExitCode {
		return run, fmt.Errorf("qemu: image reported exit code %q but QEMU exited with %d", reported.Value("code"), run.ExitCode)
	}
	return run, nil
}

// isTerminal reports whether r is a terminal (a character device).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// ImageStatus returns the exit status the image gave, and whether it gave
// one: the run reached the image's banner and QEMU then exited by itself,
// which under semihosting only the image makes it do (with its verdict,
// or with status 4 when its runtime died). A run that never reached the
// banner failed in QEMU, not in the image; a killed one has no status.
func (r *Run) ImageStatus() (int, bool) {
	if r.TimedOut || r.Banner == 0 || r.ExitCode < 0 {
		return 0, false
	}
	return r.ExitCode, true
}

// gate holds a reader back until it is released.
type gate struct {
	r    io.Reader
	open chan struct{}
	once sync.Once
}

func (g *gate) Read(p []byte) (int, error) {
	<-g.open
	return g.r.Read(p)
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// readConsole splits the console into lines, keeps them, and parses the
// result lines; ready is called at the image's ready line. Malformed
// result lines are kept as console text only.
func readConsole(r io.Reader, run *Run, start time.Time, mirror io.Writer, ready func()) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		run.Lines = append(run.Lines, line)
		if mirror != nil {
			fmt.Fprintln(mirror, line)
		}
		l, err := result.Parse(line)
		if err != nil {
			continue
		}
		if l.Event == "banner" && run.Banner == 0 {
			run.Banner = time.Since(start)
		}
		if l.Event == "ready" {
			ready()
		}
		run.Results = append(run.Results, l)
	}
	// Drain whatever is left so QEMU never blocks on a full pipe.
	io.Copy(io.Discard, r)
}
