package nbdserver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one running server: the process that listens, and the process
// group that holds it and everything it forks.
type proc struct {
	pid  int
	pgid int
	// reap waits for pid once it has exited: cmd.Wait for a direct child,
	// os.Process.Wait for nbd-server's daemon (our child by adoption).
	reap func() error
	// orphans says whether members of the group other than pid may be
	// left to us to reap (nbd-server's per-connection children, adopted
	// when the daemon dies before them).
	orphans bool
	// unguard ends the guard (see guard), if there is one.
	unguard  func()
	guardPid int
	reaped   bool
	// waitErr is what reaping pid returned: its exit status.
	waitErr error
}

// exited reports whether p's process has exited. It looks at /proc rather
// than reaping: an exited child stays a zombie, which keeps its pid, and so
// its process group ID, from being reused until stop signals the group.
func (p *proc) exited() bool {
	st, _, _, err := procStat(p.pid)
	return err != nil || st == 'Z' || st == 'X'
}

// stop ends the whole process group and reaps it. Graceful stops send
// SIGTERM first and wait up to grace for the listener to exit; the group is
// then SIGKILLed in any case, because nbd-server's per-connection children
// outlive their daemon. The leader is reaped only after that signal, so the
// group ID still names our group when it is sent.
func (p *proc) stop(graceful bool, grace time.Duration) error {
	if p.reaped {
		return nil
	}
	if p.unguard != nil {
		p.unguard()
	}
	if graceful && !p.exited() {
		syscall.Kill(-p.pgid, syscall.SIGTERM)
		for deadline := time.Now().Add(grace); !p.exited() && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := syscall.Kill(-p.pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", p.pgid, err)
	}
	p.waitErr = p.reap()
	p.reaped = true
	if p.orphans {
		reapGroup(p.pgid)
	}
	// The server's exit status after our signal says nothing useful.
	var exitErr *exec.ExitError
	if errors.As(p.waitErr, &exitErr) {
		return nil
	}
	return p.waitErr
}

// guard starts a process that SIGKILLs process group pgid when this process
// dies, and returns the function that ends it. It reads its stdin, a pipe
// whose write end only we hold, until the kernel closes that end with our
// last file descriptor. nbd-server's daemon needs it: it is no child of
// ours to get Pdeathsig, and it would outlive a test binary killed by a
// test timeout, holding its port, forever.
func guard(pgid int) (unguard func(), pid int, err error) {
	cmd := exec.Command("/bin/sh", "-c", `read _; kill -s KILL -- -"$0"`, strconv.Itoa(pgid))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // outlives a ^C to our group
	w, err := cmd.StdinPipe()                             // close-on-exec: no other child inherits it
	if err != nil {
		return nil, 0, err
	}
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("guard: %w", err)
	}
	return func() {
		cmd.Process.Kill()
		cmd.Wait() // closes w
		w.Close()
	}, cmd.Process.Pid, nil
}

// reapGroup reaps the members of process group pgid that have become our
// children (we are a subreaper, see adoptOrphans). They were all sent
// SIGKILL, so waiting for them does not block for long.
func reapGroup(pgid int) {
	self := os.Getpid()
	for range 100 {
		found := false
		for _, pid := range pids() {
			_, ppid, pgrp, err := procStat(pid)
			if err != nil || ppid != self || pgrp != pgid {
				continue
			}
			found = true
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, 0, nil)
		}
		if !found {
			return
		}
	}
}

var (
	subreaperOnce sync.Once
	subreaperErr  error
)

// adoptOrphans makes this process a child subreaper (PR_SET_CHILD_SUBREAPER),
// once. nbd-server has no foreground mode that serves more than one client
// (-d serves a single session and exits), so it runs as a daemon: the
// process we start forks the daemon and exits. As a subreaper we adopt the
// daemon, and later its orphaned per-connection children, instead of PID 1,
// so we can reap them: in a container PID 1 often reaps nothing, and the
// tests check that a stopped server leaves no process, zombie or not.
//
// The setting is process-wide: any other orphaned descendant of the process
// is adopted too, and stays a zombie until the process exits.
func adoptOrphans() error {
	subreaperOnce.Do(func() {
		const prSetChildSubreaper = 36
		_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
		if errno != 0 {
			subreaperErr = fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", errno)
		}
	})
	return subreaperErr
}

var spawnCalls = make(chan func())

// startCmd starts cmd from a goroutine locked to its OS thread for the life
// of the process. Pdeathsig, and nbdkit's --exit-with-parent, which sets it
// too, fire when the thread that forked the child exits, not when the
// process does; the Go runtime ends a thread when a goroutine locked to it
// returns, which would kill a healthy server in the middle of a test.
func startCmd(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked: this thread lives as long as the process
			for f := range spawnCalls {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnCalls <- func() { errc <- cmd.Start() }
	return <-errc
}

var spawnOnce sync.Once

// procStat reads a process's state, parent and process group from
// /proc/PID/stat.
func procStat(pid int) (state byte, ppid, pgrp int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	// "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return f[0][0], ppid, pgrp, nil
}

// pids lists the processes in /proc.
func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// listens reports whether process pid holds a TCP socket listening on port.
//
// Readiness waits for this before the handshake, so that a port picked by
// us but bound in the meantime by someone else (another test's server, say)
// is never mistaken for ours: a process that owns the listening socket on
// 127.0.0.1:port is the only one that can accept connections there.
func listens(pid, port int) bool {
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[3] != "0A" { // TCP_LISTEN
				continue
			}
			_, portHex, ok := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseUint(portHex, 16, 16); ok && err == nil && int(p) == port {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
		f.Close()
	}
	if len(inodes) == 0 {
		return false
	}
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if link, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && inodes[link] {
			return true
		}
	}
	return false
}
