package nbdserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Kind names a server program and how it is run.
type Kind string

const (
	NbdkitMemory Kind = "nbdkit-memory" // nbdkit memory plugin, size=Size
	NbdkitFile   Kind = "nbdkit-file"   // nbdkit file plugin on File (created sparse, Size bytes, in a temp dir if empty)
	QemuNBD      Kind = "qemu-nbd"      // qemu-nbd -f raw on File, persistent (-t), shared without limit (-e 0) so several connections work
	NBDServer    Kind = "nbd-server"    // nbd-server with a generated config file in a temp dir, exporting File under Export
)

// Kinds returns every kind, in the order of the constants.
func Kinds() []Kind { return []Kind{NbdkitMemory, NbdkitFile, QemuNBD, NBDServer} }

// DefaultSize is the export size when Config.Size is zero.
const DefaultSize = 64 << 20

// DefaultExport is nbd-server's export name when Config.Export is empty:
// its exports are the sections of its config file, which cannot be named
// "". The other kinds serve the empty (default) export name by default.
const DefaultExport = "yolk"

// Timeouts. ReadyTimeout bounds the wait for a started server's first
// handshake. StopGrace is how long a graceful stop waits after SIGTERM
// before SIGKILL: short, because nbdkit does not exit on SIGTERM until
// every client has disconnected, and because no kind keeps acknowledged
// writes anywhere but the backing file (or memory), so SIGKILL loses
// nothing a client was promised.
const (
	ReadyTimeout = 10 * time.Second
	StopGrace    = time.Second
)

// Config describes one server.
type Config struct {
	Kind Kind
	// Size of the export in bytes: nbdkit-memory's size, and the size of
	// the backing file the file-backed kinds create. DefaultSize when 0.
	Size int64
	// File is the backing file of the file-backed kinds (nbdkit-file,
	// qemu-nbd, nbd-server); not allowed for nbdkit-memory. When empty,
	// a file of Size bytes is created in a temporary directory. A File
	// that does not exist is created sparse with Size bytes; one that
	// exists is served as it is, whatever its size.
	File string
	// Export is the export name; default "" (nbdkit, qemu-nbd) or
	// DefaultExport (nbd-server, which cannot serve ""). nbdkit's memory
	// and file plugins serve every name alike; -e only sets the name
	// nbdkit lists.
	Export string
	// Filters, nbdkit only: --filter=NAME for each, in order; the first is
	// the outermost, nearest the client.
	Filters []string
	// Params holds extra key=value arguments: for nbdkit they follow the
	// plugin and its own size= or file= (e.g. "error-pwrite-rate=5%",
	// "delay-read=200ms"); for nbd-server they are options of the export
	// section of the config file, replacing the defaults flush, fua and
	// trim = true (e.g. "trim=false", "maxconnections=2"). qemu-nbd
	// takes none.
	Params []string
	// Args are extra command-line arguments for the server, placed after
	// this package's own options and before the plugin or file, so that
	// for options given twice the later one (Args) wins.
	Args []string
	// Log receives a copy of the server's stdout and stderr as they come.
	// Either way, the last 64 KiB are kept for errors and Output. Log is
	// written to from another goroutine, until Kill, Restart or Stop
	// returns.
	Log io.Writer
}

// Server is a running (or killed) NBD server.
type Server struct {
	Addr   string // 127.0.0.1:PORT, the same after Restart
	Export string // export name to ask for
	File   string // backing file ("" for nbdkit-memory)
	Kind   Kind
	Size   int64 // export size, as the server reported it in its handshake at Start

	cfg    Config
	port   int
	dir    string // scratch directory: config file, pid file, default backing file
	ownDir bool   // dir was made by StartE: Stop removes it
	out    *output

	mu      sync.Mutex
	p       *proc // nil while killed or stopped
	flags   uint16
	stopped bool
}

// URI is the server's NBD URI, nbd://127.0.0.1:PORT/EXPORT, as nbdinfo and
// nbdcopy take it.
func (s *Server) URI() string {
	u := url.URL{Scheme: "nbd", Host: s.Addr, Path: "/" + s.Export}
	return u.String()
}

// Nbdcopy copies file to the server's export with libnbd's nbdcopy, as a
// user of it would: one connection and one thread, requests of
// requestSize bytes, inFlight of them at a time, every byte sent (-S 0:
// no sparseness detection). It returns how long the process took, its
// start-up included.
func (s *Server) Nbdcopy(file string, requestSize, inFlight int) (time.Duration, error) {
	cmd := exec.Command("nbdcopy", "--connections=1", "--threads=1", "-S", "0",
		fmt.Sprintf("--request-size=%d", requestSize), fmt.Sprintf("--requests=%d", inFlight), file, s.URI())
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("nbdcopy: %v: %s", err, out)
	}
	return time.Since(start), nil
}

// Output returns the last 64 KiB the server wrote to stdout and stderr,
// with a line per start naming the command. nbd-server's daemon logs to
// syslog only: its output ends when it detaches.
func (s *Server) Output() string { return s.out.String() }

// Pid returns the server's listening process (for nbd-server, the daemon),
// or 0 while it is killed or stopped. Signal its process group (-Pid) to
// reach per-connection processes too: SIGSTOP/SIGCONT make a hung server.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return 0
	}
	return s.p.pid
}

// Available returns nil if the program that runs kind is installed, or an
// error naming the Debian package that provides it.
func Available(k Kind) error {
	bin, pkg, ok := program(k)
	if !ok {
		return fmt.Errorf("nbdserver: unknown kind %q", k)
	}
	if _, err := findProgram(bin); err != nil {
		return fmt.Errorf("%s not installed (Debian package %s)", bin, pkg)
	}
	return nil
}

// NbdcopyAvailable returns nil if nbdcopy is installed, or an error naming
// its Debian package. nbdcopy copies between files and NBD URIs
// (nbdcopy SRC DST, either side a file, nbd://..., "-" or null:), with
// parallel requests on several connections; see nbdcopy(1).
func NbdcopyAvailable() error { return toolAvailable("nbdcopy") }

// NbdinfoAvailable is NbdcopyAvailable for nbdinfo (nbdinfo --size URI,
// nbdinfo --json URI).
func NbdinfoAvailable() error { return toolAvailable("nbdinfo") }

func toolAvailable(name string) error {
	if _, err := findProgram(name); err != nil {
		return fmt.Errorf("%s not installed (Debian package libnbd-bin)", name)
	}
	return nil
}

// program names the binary and the Debian package for kind.
func program(k Kind) (bin, pkg string, ok bool) {
	switch k {
	case NbdkitMemory, NbdkitFile:
		return "nbdkit", "nbdkit", true
	case QemuNBD:
		return "qemu-nbd", "qemu-utils", true
	case NBDServer:
		return "nbd-server", "nbd-server", true
	}
	return "", "", false
}

// lookPath is exec.LookPath; tests replace it.
var lookPath = exec.LookPath

// findProgram looks for name in PATH, then in /usr/sbin and /sbin, which
// are not in an ordinary user's PATH on Debian.
func findProgram(name string) (string, error) {
	path, err := lookPath(name)
	if err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p, err2 := lookPath(filepath.Join(dir, name)); err2 == nil {
			return p, nil
		}
	}
	return "", err
}

// A StartError is a server that could not be started: its program is
// missing, or it did not come up. A test helper skips on it outside CI
// (nbdservertest.Start); anything else from Start is a mistake.
type StartError struct {
	Kind Kind
	// Reason is one line.
	Reason string
	// Output is what the server said, if it ran.
	Output string
}

func (e *StartError) Error() string {
	msg := fmt.Sprintf("nbdserver: %s: %s", e.Kind, e.Reason)
	if out := strings.TrimSpace(e.Output); out != "" {
		msg += "\nserver output:\n\t" + strings.ReplaceAll(out, "\n", "\n\t")
	}
	return msg
}

// Start starts a server; the caller stops it. Its scratch directory (and
// default backing file) is removed by Stop. A bad Config is an error of
// its own; a server that is not installed or does not come up is a
// *StartError.
func Start(cfg Config) (*Server, error) {
	if err := Validate(cfg); err != nil {
		return nil, err
	}
	if err := Available(cfg.Kind); err != nil {
		return nil, &StartError{Kind: cfg.Kind, Reason: err.Error()}
	}
	dir, err := os.MkdirTemp("", "nbdserver-")
	if err != nil {
		return nil, err
	}
	s, err := start(cfg, dir, true)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// Validate catches configurations that are mistakes whatever the machine.
func Validate(cfg Config) error {
	if _, _, ok := program(cfg.Kind); !ok {
		return fmt.Errorf("nbdserver: unknown kind %q", cfg.Kind)
	}
	nbdkit := cfg.Kind == NbdkitMemory || cfg.Kind == NbdkitFile
	switch {
	case cfg.Size < 0:
		return fmt.Errorf("nbdserver: negative size %d", cfg.Size)
	case cfg.Kind == NbdkitMemory && cfg.File != "":
		return fmt.Errorf("nbdserver: %s has no backing file (File %q)", cfg.Kind, cfg.File)
	case len(cfg.Filters) > 0 && !nbdkit:
		return fmt.Errorf("nbdserver: %s takes no filters (Filters %q)", cfg.Kind, cfg.Filters)
	case len(cfg.Params) > 0 && cfg.Kind == QemuNBD:
		return fmt.Errorf("nbdserver: %s takes no params (Params %q)", cfg.Kind, cfg.Params)
	case len(cfg.Export) > 4096:
		return fmt.Errorf("nbdserver: export name longer than 4096 bytes")
	}
	if cfg.Kind == NBDServer {
		if strings.ContainsAny(cfg.Export, "[]\n\r") || cfg.Export == "generic" {
			return fmt.Errorf("nbdserver: %s cannot name an export %q (a config section)", cfg.Kind, cfg.Export)
		}
		for _, p := range cfg.Params {
			if k, _, ok := strings.Cut(p, "="); !ok || strings.TrimSpace(k) == "" || strings.ContainsAny(p, "\n\r") {
				return fmt.Errorf("nbdserver: %s param %q is not key=value", cfg.Kind, p)
			}
		}
	}
	return nil
}

// start fills in cfg's defaults, prepares the backing file and starts the
// server on a free port, trying another port if the one picked was taken
// before the server could bind it.
func start(cfg Config, dir string, ownDir bool) (*Server, error) {
	if cfg.Size == 0 {
		cfg.Size = DefaultSize
	}
	if cfg.Export == "" && cfg.Kind == NBDServer {
		cfg.Export = DefaultExport
	}
	s := &Server{
		Export: cfg.Export,
		Kind:   cfg.Kind,
		cfg:    cfg,
		dir:    dir,
		ownDir: ownDir,
		out:    &output{tee: cfg.Log},
	}
	if cfg.Kind != NbdkitMemory {
		file, err := backingFile(cfg.File, dir, cfg.Size)
		if err != nil {
			return nil, err
		}
		s.File = file
	}
	if cfg.Kind == NBDServer {
		if err := adoptOrphans(); err != nil {
			return nil, err
		}
	}

	const attempts = 5
	for i := 1; ; i++ {
		port, err := pickPort()
		if err != nil {
			return nil, err
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p, size, flags, err := s.launch()
		if err == nil {
			s.p, s.Size, s.flags = p, size, flags
			return s, nil
		}
		var se *StartError
		if i == attempts || !errors.As(err, &se) || !s.portTaken(se) {
			return nil, err
		}
		fmt.Fprintf(s.out, "nbdserver: port %d was taken before the server bound it; trying another\n", port)
	}
}

// backingFile returns the absolute path of the backing file, creating it
// sparse with size bytes if it does not exist.
func backingFile(file, dir string, size int64) (string, error) {
	if file == "" {
		file = filepath.Join(dir, "disk.img")
	}
	file, err := filepath.Abs(file) // nbd-server wants absolute paths
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return file, nil
	}
	if err != nil {
		return "", fmt.Errorf("nbdserver: backing file: %w", err)
	}
	err = f.Truncate(size)
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		os.Remove(file)
		return "", fmt.Errorf("nbdserver: backing file: %w", err)
	}
	return file, nil
}

// pickPort returns a loopback port that was free a moment ago; tests
// replace it.
var pickPort = func() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portTaken reports whether a failed start is explained by someone else
// holding the port: the server said so, or (nbd-server, whose daemon's
// messages go to syslog) the port cannot be bound now.
func (s *Server) portTaken(se *StartError) bool {
	if strings.Contains(se.Output, "Address already in use") {
		return true
	}
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	l.Close()
	return false
}

// launch starts the server on s.port and waits until it completes a
// handshake, or fails with a *StartError. It returns the export's size and
// transmission flags from that handshake.
func (s *Server) launch() (_ *proc, size int64, flags uint16, _ error) {
	bin, _, _ := program(s.Kind)
	path, err := findProgram(bin)
	if err != nil {
		return nil, 0, 0, &StartError{Kind: s.Kind, Reason: err.Error()}
	}
	args, pidFile, err := s.args()
	if err != nil {
		return nil, 0, 0, err
	}
	mark := s.out.Len()
	fail := func(format string, a ...any) (*proc, int64, uint16, error) {
		return nil, 0, 0, &StartError{Kind: s.Kind, Reason: fmt.Sprintf(format, a...), Output: s.out.Since(mark)}
	}
	fmt.Fprintf(s.out, "nbdserver: exec %s %s\n", path, strings.Join(quoteAll(args), " "))

	cmd := exec.Command(path, args...)
	cmd.Stdout = s.out
	cmd.Stderr = s.out
	cmd.WaitDelay = time.Second // a stray process holding the pipe must not hang Wait
	// A group of its own, so that Stop and Kill reach everything the
	// server forks; Pdeathsig so that a crashed test leaves no server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startCmd(cmd); err != nil {
		return fail("%v", err)
	}
	deadline := time.Now().Add(ReadyTimeout)

	var p *proc
	if s.Kind == NBDServer {
		p, err = s.daemon(cmd, pidFile, deadline)
		if err != nil {
			return fail("%v", err)
		}
	} else {
		p = &proc{pid: cmd.Process.Pid, pgid: cmd.Process.Pid, reap: cmd.Wait}
	}

	var lastErr error
	for {
		if p.exited() {
			p.stop(false, 0)
			if s.Kind == NBDServer {
				return fail("exited before serving (%v; its daemon logs to syslog only)", p.waitErr)
			}
			return fail("exited before serving (%v)", p.waitErr)
		}
		if listens(p.pid, s.port) {
			size, flags, err := handshake(s.Addr, s.Export, time.Until(deadline))
			if err == nil {
				return p, size, flags, nil
			}
			lastErr = err
		}
		if time.Now().After(deadline) {
			p.stop(false, 0)
			if lastErr == nil {
				return fail("did not listen on %s within %v", s.Addr, ReadyTimeout)
			}
			return fail("no NBD handshake on %s within %v: %v", s.Addr, ReadyTimeout, lastErr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// daemon waits for nbd-server to detach and returns its daemon, which we
// adopt (see adoptOrphans).
func (s *Server) daemon(cmd *exec.Cmd, pidFile string, deadline time.Time) (*proc, error) {
	if err := cmd.Wait(); err != nil {
		return nil, err
	}
	for {
		// nbd-server writes the file right after detaching, before it
		// binds the port; an empty or partial file is still being written.
		b, err := os.ReadFile(pidFile)
		if pid, err2 := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && err2 == nil && strings.HasSuffix(string(b), "\n") {
			daemon, err := os.FindProcess(pid)
			if err != nil {
				return nil, err
			}
			if _, ppid, _, err := procStat(pid); err == nil && ppid != os.Getpid() {
				return nil, fmt.Errorf("daemon %d is not our child (parent %d)", pid, ppid)
			}
			reap := func() error {
				st, err := daemon.Wait()
				if err == nil && !st.Success() {
					err = &exec.ExitError{ProcessState: st}
				}
				return err
			}
			// daemon(3) made it a session and group leader.
			p := &proc{pid: pid, pgid: pid, reap: reap, orphans: true}
			if p.unguard, p.guardPid, err = guard(p.pgid); err != nil {
				p.stop(false, 0)
				return nil, err
			}
			return p, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no pid in %s within %v", pidFile, ReadyTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// args returns the server's command line and, for nbd-server, the pid file
// it will write.
func (s *Server) args() (args []string, pidFile string, err error) {
	cfg := s.cfg
	port := strconv.Itoa(s.port)
	switch s.Kind {
	case NbdkitMemory, NbdkitFile:
		args = []string{"--foreground", "--exit-with-parent", "-i", "127.0.0.1", "-p", port, "-e", s.Export}
		for _, f := range cfg.Filters {
			args = append(args, "--filter="+f)
		}
		args = append(args, cfg.Args...)
		if s.Kind == NbdkitMemory {
			args = append(args, "memory", "size="+strconv.FormatInt(cfg.Size, 10))
		} else {
			args = append(args, "file", "file="+s.File)
		}
		args = append(args, cfg.Params...)
	case QemuNBD:
		args = []string{"-b", "127.0.0.1", "-p", port, "-x", s.Export, "-f", "raw", "-t", "-e", "0", "--cache=writeback"}
		args = append(args, cfg.Args...)
		args = append(args, s.File)
	case NBDServer:
		conf := filepath.Join(s.dir, "nbd-server.conf")
		pidFile = filepath.Join(s.dir, "nbd-server.pid")
		if err := os.WriteFile(conf, []byte(s.nbdServerConfig()), 0o644); err != nil {
			return nil, "", fmt.Errorf("nbdserver: %w", err)
		}
		// A stale file from a killed daemon would name a dead process.
		if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, "", fmt.Errorf("nbdserver: %w", err)
		}
		args = append([]string{"-C", conf, "-p", pidFile}, cfg.Args...)
	}
	return args, pidFile, nil
}

// nbdServerConfig is nbd-server's config file (nbd-server(5)). No user or
// group: the server keeps our identity, so it can open the backing file.
func (s *Server) nbdServerConfig() string {
	type kv struct{ k, v string }
	opts := []kv{{"exportname", s.File}, {"flush", "true"}, {"fua", "true"}, {"trim", "true"}}
	for _, p := range s.cfg.Params {
		k, v, _ := strings.Cut(p, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		replaced := false
		for i := range opts {
			if opts[i].k == k {
				opts[i].v, replaced = v, true
			}
		}
		if !replaced {
			opts = append(opts, kv{k, v})
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by yolk/qemu/nbdserver.\n[generic]\nlistenaddr = 127.0.0.1\nport = %d\nallowlist = true\n", s.port)
	fmt.Fprintf(&b, "[%s]\n", s.Export)
	for _, o := range opts {
		fmt.Fprintf(&b, "%s = %s\n", o.k, o.v)
	}
	return b.String()
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return out
}

var (
	errStopped    = errors.New("nbdserver: server was stopped")
	errNotRunning = errors.New("nbdserver: server is not running")
)

// Kill SIGKILLs the server's process group, as a crash would end it, and
// reaps it; clients' connections drop at once (for nbd-server, the
// per-connection processes die too). Restart brings it back.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errStopped
	}
	if s.p == nil {
		return errNotRunning
	}
	p := s.p
	s.p = nil
	if err := p.stop(false, 0); err != nil {
		return fmt.Errorf("nbdserver: kill %s: %w", s.Kind, err)
	}
	return nil
}

// Restart starts the server again on the same address and backing file
// (stopping it gracefully first if it is running), and waits until it
// completes a handshake. nbdkit-memory comes back empty. If the port was
// taken meanwhile, Restart fails: the address is the point.
func (s *Server) Restart() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return errStopped
	}
	p := s.p
	s.p = nil
	s.mu.Unlock()
	if p != nil {
		if err := p.stop(true, StopGrace); err != nil {
			return fmt.Errorf("nbdserver: restart %s: %w", s.Kind, err)
		}
	}
	p, _, _, err := s.launch()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch { // Stop or another Restart ran meanwhile
	case s.stopped:
		p.stop(false, 0)
		return errStopped
	case s.p != nil:
		p.stop(false, 0)
		return errors.New("nbdserver: concurrent Restart")
	}
	s.p = p
	return nil
}

// Stop stops the server gracefully (SIGTERM, then SIGKILL after StopGrace),
// reaps every process it left, and removes StartE's scratch directory. It
// is idempotent; a stopped server cannot be restarted.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	var err error
	if s.p != nil {
		err = s.p.stop(true, StopGrace)
		s.p = nil
	}
	if s.ownDir {
		if err2 := os.RemoveAll(s.dir); err == nil {
			err = err2
		}
	}
	if err != nil {
		return fmt.Errorf("nbdserver: stop %s: %w", s.Kind, err)
	}
	return nil
}

// output keeps the tail of a server's output and copies it to a writer.
type output struct {
	mu      sync.Mutex
	tee     io.Writer
	buf     []byte
	written int // bytes ever written; Len and Since count in these
}

const outputMax = 64 << 10

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.tee != nil {
		o.tee.Write(p) // a failing copy must not stop the server's output
	}
	o.buf = append(o.buf, p...)
	o.written += len(p)
	if len(o.buf) > outputMax {
		o.buf = append(o.buf[:0], o.buf[len(o.buf)-outputMax:]...)
	}
	return len(p), nil
}

func (o *output) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.written
}

// Since returns what was written after Len returned mark, as far as kept.
func (o *output) Since(mark int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := min(o.written-mark, len(o.buf))
	return string(o.buf[len(o.buf)-n:])
}

func (o *output) String() string { return o.Since(0) }
