package shell

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"yolk/mm/phys"
	"yolk/net/rx"
)

// Prompt is what the shell prints before each line.
const Prompt = "yolk# "

// Config is what a shell runs on.
type Config struct {
	In  io.Reader // the console's input, byte by byte
	Out io.Writer // the console
	// Pool is the page allocator the shell's machine lives on; it must
	// have room for the tasks (about 6 MiB).
	Pool *phys.Pool
	// Rx is the network's receive path for `net`; nil without a network,
	// and NetErr says why.
	Rx     *rx.Receiver
	NetErr error
	// Scenario prepares a run of the scenario named by words[0] with the
	// k=v parameters after it, on Pool: err refuses it (an unknown name,
	// bad parameters) in one line, before the shell stops its tasks;
	// run runs it and returns its exit status. Nil leaves the run command
	// out.
	Scenario func(words []string) (run func() int, err error)
}

// Shell is the console shell. It is used from one goroutine.
type Shell struct {
	cfg Config
	out io.Writer
	ed  *editor
	m   *machine
}

// New starts the shell's machine (its manager, swap and tasks) on
// cfg.Pool. Close stops it.
func New(cfg Config) (*Shell, error) {
	if cfg.Pool == nil {
		return nil, errors.New("shell: no page allocator")
	}
	out := &onlcr{w: cfg.Out}
	s := &Shell{cfg: cfg, out: out, ed: newEditor(cfg.In, out)}
	m, err := boot(cfg.Pool, s.printk)
	if err != nil {
		return nil, fmt.Errorf("shell: starting its tasks: %w", err)
	}
	s.m = m
	return s, nil
}

// printk writes a message of the memory manager's to the console.
func (s *Shell) printk(msg string) { fmt.Fprintf(s.out, "mm: %s\n", msg) }

// Close exits the shell's tasks and closes its manager.
func (s *Shell) Close() error {
	if s.m == nil {
		return nil
	}
	err := s.m.shutdown()
	s.m = nil
	return err
}

// Run reads and runs command lines until `exit` or the end of the input,
// and returns the exit status: exit's, or 0 at the end of the input. Its
// error is the input's, other than io.EOF.
func (s *Shell) Run() (code int, err error) {
	for {
		line, err := s.ed.readLine(Prompt)
		var bad *lineError
		switch {
		case errors.Is(err, io.EOF):
			fmt.Fprintln(s.out)
			return 0, nil
		case errors.Is(err, errCancelled):
			continue
		case errors.As(err, &bad):
			fmt.Fprintln(s.out, bad.msg)
			continue
		case err != nil:
			return 0, fmt.Errorf("shell: reading the console: %w", err)
		}
		if code, exit := s.Exec(line); exit {
			return code, nil
		}
	}
}

// A command is one of the shell's commands.
type command struct {
	name, usage, help string
	run               func(s *Shell, args []string) error
}

// exitRequest is how the exit command ends Run.
type exitRequest struct{ code int }

func (e *exitRequest) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Exec runs one command line. It returns exit=true, with the status,
// when the line was `exit`. Errors are printed as one line: the command,
// and what is wrong.
func (s *Shell) Exec(line string) (code int, exit bool) {
	words, err := split(line)
	if err != nil {
		fmt.Fprintf(s.out, "sh: %v\n", err)
		return 0, false
	}
	if len(words) == 0 {
		return 0, false
	}
	cmd, ok := commandByName(words[0])
	if !ok {
		fmt.Fprintf(s.out, "sh: %s: unknown command (help lists them)\n", words[0])
		return 0, false
	}
	err = cmd.run(s, words[1:])
	var ex *exitRequest
	switch {
	case errors.As(err, &ex):
		return ex.code, true
	case err != nil:
		fmt.Fprintf(s.out, "%s: %s\n", cmd.name, oneLine(err.Error()))
	}
	return 0, false
}

// oneLine keeps an error to one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// split breaks a line into words at spaces. A word may be quoted with '
// or " to hold spaces (echo "always" > ...); there are no escapes.
func split(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote, in = c, true
		case c == ' ':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// procAlias is a command that prints one /proc file.
func procAlias(name, path string) command {
	return command{name: name, help: "print " + path, run: func(s *Shell, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("takes no arguments (got %q)", strings.Join(args, " "))
		}
		return s.cat(path)
	}}
}

// pidFile is a command that prints /proc/PID/name.
func pidFile(name string) command {
	return command{name: name, usage: "PID", help: "print /proc/PID/" + name, run: func(s *Shell, args []string) error {
		if len(args) != 1 {
			return errors.New("usage: " + name + " PID")
		}
		if _, err := s.task(args[0]); err != nil {
			return err
		}
		return s.cat("/proc/" + args[0] + "/" + name)
	}}
}

var commands []command

func init() {
	commands = []command{
		{name: "help", help: "list the commands and files", run: (*Shell).help},
		procAlias("meminfo", "/proc/meminfo"),
		procAlias("buddyinfo", "/proc/buddyinfo"),
		procAlias("pagetypeinfo", "/proc/pagetypeinfo"),
		procAlias("zoneinfo", "/proc/zoneinfo"),
		procAlias("vmstat", "/proc/vmstat"),
		procAlias("swaps", "/proc/swaps"),
		procAlias("net", "/proc/net/yolk_rx"),
		{name: "ps", help: "list the tasks: memory in kB, faults", run: (*Shell).ps},
		pidFile("maps"),
		pidFile("smaps"),
		{name: "cat", usage: "FILE...", help: "print files", run: (*Shell).catCmd},
		{name: "echo", usage: "[VALUE [> FILE]]", help: "print VALUE, or write it to FILE", run: (*Shell).echo},
		{name: "sysctl", usage: "[-a | vm.NAME[=VALUE]...]", help: "read or set vm sysctls", run: (*Shell).sysctl},
		{name: "run", usage: "SCENARIO [k=v...]", help: "run a scenario on this pool (the shell's tasks restart after it)", run: (*Shell).runScenario},
		{name: "exit", usage: "[STATUS]", help: "end the run with STATUS (0 to 255, default 0)", run: exitCmd},
	}
}

func commandByName(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func (s *Shell) help(args []string) error {
	tw := tabwriter.NewWriter(s.out, 0, 8, 2, ' ', 0)
	for _, c := range commands {
		if c.name == "run" && s.cfg.Scenario == nil {
			continue
		}
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.usage, c.help)
	}
	tw.Flush()
	fmt.Fprintln(s.out, "files (cat, echo V > FILE; /proc/sys/vm/NAME is sysctl vm.NAME):")
	fs := s.files()
	for _, p := range paths(fs) {
		fmt.Fprintf(tw, "  %s\t%s%s\n", p, mode(fs[p]), fs[p].help)
	}
	fmt.Fprintf(tw, "  /proc/PID/maps, /proc/PID/smaps\tr  a task's mappings\n")
	tw.Flush()
	fmt.Fprintln(s.out, "keys: backspace, Ctrl-U erases the line, Ctrl-C cancels it, up/down arrows: history")
	return nil
}

func mode(f file) string {
	r, w := "-", "-"
	if f.read != nil {
		r = "r"
	}
	if f.write != nil {
		w = "w"
	}
	return r + w + " "
}

// cat prints one file.
func (s *Shell) cat(path string) error {
	f, err := s.open(path)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", path, err)
	case f.read == nil:
		return fmt.Errorf("%s: permission denied (write-only)", path)
	}
	return f.read(s.out)
}

func (s *Shell) catCmd(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: cat FILE... (help lists the files)")
	}
	for _, p := range args {
		if err := s.cat(p); err != nil {
			return err
		}
	}
	return nil
}

// echo prints its words, or with "> FILE" (or ">FILE") writes them to
// FILE as a sysfs store would: one value, surrounding space trimmed.
func (s *Shell) echo(args []string) error {
	var words []string
	target := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, ">") {
			words = append(words, a)
			continue
		}
		if target != "" {
			return errors.New("more than one > FILE")
		}
		target = strings.TrimPrefix(a, ">")
		if target == "" {
			if i+1 == len(args) {
				return errors.New("> needs a FILE")
			}
			i++
			target = args[i]
		}
	}
	value := strings.Join(words, " ")
	if target == "" {
		fmt.Fprintln(s.out, value)
		return nil
	}
	return s.store(target, value)
}

// store writes value to the file at path.
func (s *Shell) store(path, value string) error {
	f, err := s.open(path)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", path, err)
	case f.write == nil:
		return fmt.Errorf("%s: permission denied (read-only)", path)
	}
	if err := f.write(strings.TrimSpace(value)); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// sysctl reads (vm.NAME), sets (vm.NAME=VALUE) or lists (-a, or no
// argument) the sysctls, printing "name = value" as sysctl(8) does.
func (s *Shell) sysctl(args []string) error {
	if len(args) == 0 || (len(args) == 1 && args[0] == "-a") {
		fs := s.files()
		for _, p := range paths(fs) {
			if name, ok := strings.CutPrefix(p, sysctlDir); ok && fs[p].read != nil {
				if err := s.showSysctl(strings.ReplaceAll(name, "/", ".")); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, a := range args {
		name, value, set := strings.Cut(a, "=")
		name = strings.TrimSpace(name)
		path, err := sysctlPath(name)
		if err != nil {
			return err
		}
		if set {
			if err := s.store(path, value); err != nil {
				return fmt.Errorf("%s: %w", name, errors.Unwrap(err))
			}
			if f, _ := s.open(path); f.read == nil {
				// Write-only (drop_caches): sysctl(8) shows what it wrote.
				fmt.Fprintf(s.out, "%s = %s\n", name, strings.TrimSpace(value))
				continue
			}
		}
		if err := s.showSysctl(name); err != nil {
			return err
		}
	}
	return nil
}

// sysctlPath maps vm.NAME to /proc/sys/vm/NAME.
func sysctlPath(name string) (string, error) {
	if strings.Contains(name, "/") || name == "" || strings.HasPrefix(name, "-") {
		return "", fmt.Errorf("%q is not a sysctl name (e.g. vm.min_free_kbytes; -a lists them)", name)
	}
	return sysctlDir + strings.ReplaceAll(name, ".", "/"), nil
}

// showSysctl prints "name = value"; a write-only one shows as set.
func (s *Shell) showSysctl(name string) error {
	path, err := sysctlPath(name)
	if err != nil {
		return err
	}
	f, err := s.open(path)
	if err != nil {
		return fmt.Errorf("cannot stat %s: %w (-a lists them)", path, err)
	}
	if f.read == nil {
		return nil
	}
	var b strings.Builder
	if err := f.read(&b); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "%s = %s\n", name, strings.TrimSpace(b.String()))
	return nil
}

// ps lists the tasks as ps -o pid,ppid,vsz,rss,... would, in kB.
func (s *Shell) ps(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("takes no arguments (got %q)", strings.Join(args, " "))
	}
	tw := tabwriter.NewWriter(s.out, 0, 8, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "PID\tPPID\tVSZ\tRSS\tANONHUGE\tLAZYFREE\tSWAP\tMINFLT\tMAJFLT\t COMMAND\t")
	tasks := append([]task(nil), s.m.tasks...)
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].as.PID() < tasks[j].as.PID() })
	for _, t := range tasks {
		var vsz, rss, huge, lazy, swap uint64
		for _, sm := range t.as.Smaps() {
			vsz += uint64(sm.End - sm.Start)
			rss += sm.Rss
			huge += sm.AnonHugePages
			lazy += sm.LazyFree
			swap += sm.Swap
		}
		minflt, majflt := t.as.Faults()
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t %s\t\n", t.as.PID(), t.ppid,
			vsz>>10, rss>>10, huge>>10, lazy>>10, swap>>10, minflt, majflt, t.comm)
	}
	return tw.Flush()
}

// runScenario stops the shell's machine, runs the scenario on the pool,
// says whether the pool got every frame back, and starts the machine
// again.
func (s *Shell) runScenario(args []string) error {
	if s.cfg.Scenario == nil {
		return errors.New("no scenarios here")
	}
	if len(args) == 0 {
		return errors.New("usage: run SCENARIO [k=v...]")
	}
	run, err := s.cfg.Scenario(args)
	if err != nil {
		return err
	}
	if err := s.m.shutdown(); err != nil {
		return fmt.Errorf("stopping the shell's tasks: %w", err)
	}
	free := s.cfg.Pool.FreeFrames()
	code := run()
	after := s.cfg.Pool.FreeFrames()
	m, bootErr := boot(s.cfg.Pool, s.printk)
	if bootErr != nil {
		// Without its machine the shell can only end the run.
		fmt.Fprintf(s.out, "run: restarting the shell's tasks: %s\n", oneLine(bootErr.Error()))
		return &exitRequest{code: 1}
	}
	s.m = m
	leak := ""
	if after != free {
		leak = fmt.Sprintf(", %d frames fewer free than before it", int64(free)-int64(after))
	}
	fmt.Fprintf(s.out, "run: %s exited with status %d%s\n", args[0], code, leak)
	return nil
}

func exitCmd(_ *Shell, args []string) error {
	switch len(args) {
	case 0:
		return &exitRequest{}
	case 1:
		code, err := strconv.Atoi(args[0])
		if err != nil || code < 0 || code > 255 {
			return fmt.Errorf("%q is not a status from 0 to 255", args[0])
		}
		return &exitRequest{code: code}
	}
	return errors.New("usage: exit [STATUS]")
}
