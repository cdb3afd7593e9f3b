package nbdserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKinds(t *testing.T) {
	assert.Equal(t, []Kind{NbdkitMemory, NbdkitFile, QemuNBD, NBDServer}, Kinds())
}

func TestAvailable(t *testing.T) {
	for _, k := range Kinds() {
		if err := Available(k); err != nil {
			_, pkg, _ := program(k)
			assert.Contains(t, err.Error(), "Debian package "+pkg)
			t.Logf("%s: %v", k, err)
		}
	}
	assert.ErrorContains(t, Available("nbd-whatever"), "unknown kind")
	if err := NbdcopyAvailable(); err != nil {
		assert.Contains(t, err.Error(), "libnbd-bin")
	}
}

// Each kind starts with the defaults, and with a size of its own, and both
// our handshake and nbdinfo see that size.
func TestStart(t *testing.T) {
	for _, k := range Kinds() {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			s := startT(t, Config{Kind: k})
			assert.Equal(t, k, s.Kind)
			assert.EqualValues(t, DefaultSize, s.Size)
			host, port, err := net.SplitHostPort(s.Addr)
			require.NoError(t, err)
			assert.Equal(t, "127.0.0.1", host)
			wantExport := ""
			if k == NBDServer {
				wantExport = DefaultExport
			}
			assert.Equal(t, wantExport, s.Export)
			assert.Equal(t, "nbd://127.0.0.1:"+port+"/"+wantExport, s.URI())
			if k == NbdkitMemory {
				assert.Empty(t, s.File)
			} else {
				st, err := os.Stat(s.File)
				require.NoError(t, err)
				assert.EqualValues(t, DefaultSize, st.Size())
			}

			const size = 3<<20 + 4096
			s2 := startT(t, Config{Kind: k, Size: size, Export: "disk-2"})
			assert.EqualValues(t, size, s2.Size)
			assert.Equal(t, "nbd://"+s2.Addr+"/disk-2", s2.URI())
			assert.EqualValues(t, size, nbdinfoSize(t, s2.URI()))
		})
	}
}

// A file that exists is served as it is, whatever Size says.
func TestExistingFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "mine.img")
	require.NoError(t, os.WriteFile(file, bytes.Repeat([]byte{0xa5}, 128<<10), 0o644))
	for _, k := range []Kind{NbdkitFile, QemuNBD, NBDServer} {
		t.Run(string(k), func(t *testing.T) {
			s := startT(t, Config{Kind: k, File: file, Size: 1 << 20})
			assert.Equal(t, file, s.File)
			assert.EqualValues(t, 128<<10, s.Size)
			got := readExport(t, s)
			assert.Equal(t, bytes.Repeat([]byte{0xa5}, 128<<10), got)
		})
	}
}

// Several clients at once: connections parked after the greeting do not
// keep the next client from completing its handshake, and concurrent
// handshakes all succeed.
func TestSeveralConnections(t *testing.T) {
	for _, k := range Kinds() {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			s := startT(t, Config{Kind: k, Size: 1 << 20})
			for range 3 {
				c := greet(t, s.Addr)
				defer c.Close()
			}
			var wg sync.WaitGroup
			errs := make([]error, 8)
			for i := range errs {
				wg.Go(func() { _, _, errs[i] = handshake(s.Addr, s.Export, 5*time.Second) })
			}
			wg.Wait()
			for _, err := range errs {
				assert.NoError(t, err)
			}
		})
	}
}

// Kill drops clients at once and leaves no process; Restart comes back on
// the same address with the data of the file-backed kinds.
func TestKillRestart(t *testing.T) {
	requireTool(t, NbdcopyAvailable())
	for _, k := range Kinds() {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			const size = 1 << 20
			s := startT(t, Config{Kind: k, Size: size})
			addr, pid := s.Addr, s.Pid()
			pattern := make([]byte, size)
			for i := range pattern {
				pattern[i] = byte(rand.Uint32())
			}
			src := filepath.Join(t.TempDir(), "pattern")
			require.NoError(t, os.WriteFile(src, pattern, 0o644))
			require.NoError(t, nbdcopy(src, s.URI()))
			assert.Equal(t, pattern, readExport(t, s))

			// A client mid-stream, held by a per-connection process for
			// nbd-server.
			c := greet(t, s.Addr)
			defer c.Close()
			group := groupPids(pid)
			start := time.Now()
			require.NoError(t, s.Kill())
			t.Logf("Kill took %v", time.Since(start))
			assert.Zero(t, s.Pid())
			for _, p := range group {
				assert.True(t, gone(p), "process %d of the group is still there", p)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := c.Read(make([]byte, 1))
			assert.Error(t, err, "the client's connection survived Kill")
			assert.False(t, isTimeout(err), "the client's connection survived Kill: %v", err)
			_, err = net.DialTimeout("tcp", addr, time.Second)
			assert.Error(t, err, "something still listens on %s", addr)
			assert.ErrorIs(t, s.Kill(), errNotRunning)

			if s.File != "" {
				onDisk, err := os.ReadFile(s.File)
				require.NoError(t, err)
				assert.Equal(t, pattern, onDisk, "the backing file lacks the data")
			}

			start = time.Now()
			require.NoError(t, s.Restart())
			t.Logf("Restart took %v", time.Since(start))
			assert.Equal(t, addr, s.Addr)
			assert.NotZero(t, s.Pid())
			assert.NotEqual(t, pid, s.Pid())
			got := readExport(t, s)
			if k == NbdkitMemory {
				assert.Equal(t, make([]byte, size), got, "nbdkit-memory should come back empty")
			} else {
				assert.Equal(t, pattern, got, "data lost across Kill and Restart")
			}

			// Restart of a running server stops it first.
			pid = s.Pid()
			require.NoError(t, s.Restart())
			assert.True(t, gone(pid))
			assert.EqualValues(t, size, nbdinfoSize(t, s.URI()))
		})
	}
}

// Stop ends every process of the server, per-connection ones included,
// reaps them, frees the port, and is idempotent.
func TestStopLeavesNothing(t *testing.T) {
	for _, k := range Kinds() {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			s, err := Start(Config{Kind: k, Size: 1 << 20})
			if err != nil {
				requireTool(t, err)
			}
			pid := s.Pid()
			require.NotZero(t, pid)
			c := greet(t, s.Addr)
			defer c.Close()
			group := groupPids(pid)
			require.Contains(t, group, pid)
			if k == NBDServer {
				assert.Greater(t, len(group), 1, "no per-connection process")
			}

			start := time.Now()
			require.NoError(t, s.Stop())
			t.Logf("Stop took %v; group was %v", time.Since(start), group)
			for _, p := range group {
				assert.True(t, gone(p), "process %d is still there (zombie or not)", p)
			}
			_, err = net.DialTimeout("tcp", s.Addr, time.Second)
			assert.Error(t, err)
			_, err = os.Stat(s.dir)
			assert.True(t, errors.Is(err, os.ErrNotExist), "scratch directory left: %v", err)

			assert.NoError(t, s.Stop())
			assert.ErrorIs(t, s.Restart(), errStopped)
			assert.ErrorIs(t, s.Kill(), errStopped)
			assert.Zero(t, s.Pid())
		})
	}
}

func TestNbdkitFilters(t *testing.T) {
	requireTool(t, NbdcopyAvailable())
	src := filepath.Join(t.TempDir(), "src")
	require.NoError(t, os.WriteFile(src, bytes.Repeat([]byte("yolk"), 16<<10), 0o644))

	t.Run("error", func(t *testing.T) {
		t.Parallel()
		log := &lockedBuffer{}
		s := startT(t, Config{Kind: NbdkitMemory, Size: 64 << 10, Filters: []string{"error"}, Params: []string{"error-pwrite-rate=100%"}, Log: log})
		err := nbdcopy(src, s.URI())
		assert.ErrorContains(t, err, "Input/output error", "writes should fail")
		assert.NoError(t, nbdcopy("--no-extents", s.URI(), "null:"), "reads should work")
		require.NoError(t, s.Stop())
		assert.Contains(t, s.Output(), "injecting EIO error into pwrite")
		assert.Equal(t, s.Output(), log.String(), "Log should get all the output")
	})
	t.Run("delay", func(t *testing.T) {
		t.Parallel()
		s := startT(t, Config{Kind: NbdkitMemory, Size: 64 << 10, Filters: []string{"delay"}, Params: []string{"delay-read=200ms"}})
		start := time.Now()
		require.NoError(t, nbdcopy("--no-extents", s.URI(), "null:"))
		assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	})
	t.Run("both", func(t *testing.T) {
		t.Parallel()
		s := startT(t, Config{Kind: NbdkitFile, Filters: []string{"error", "delay"}, Params: []string{"error-rate=5%", "delay-write=1ms"}})
		assert.Contains(t, s.Output(), "--filter=error --filter=delay file file=")
	})
}

func TestNBDServerParams(t *testing.T) {
	s := startT(t, Config{Kind: NBDServer})
	assert.NotZero(t, s.flags&flagSendTrim)
	s = startT(t, Config{Kind: NBDServer, Params: []string{"trim = false", "flush=false"}})
	assert.Zero(t, s.flags&flagSendTrim)
	assert.Zero(t, s.flags&flagSendFlush)
	assert.NotZero(t, s.flags&flagSendFUA)
	conf, err := os.ReadFile(filepath.Join(s.dir, "nbd-server.conf"))
	require.NoError(t, err)
	assert.Contains(t, string(conf), "[yolk]\nexportname = "+s.File+"\nflush = false\nfua = true\ntrim = false\n")
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Kind: "nbd-whatever"},
		{Kind: QemuNBD, Filters: []string{"delay"}},
		{Kind: QemuNBD, Params: []string{"a=b"}},
		{Kind: NBDServer, Filters: []string{"delay"}},
		{Kind: NBDServer, Export: "generic"},
		{Kind: NBDServer, Export: "a]b"},
		{Kind: NBDServer, Params: []string{"novalue"}},
		{Kind: NbdkitMemory, File: "disk.img"}, // memory has no file
		{Kind: NbdkitMemory, Size: -1},
	} {
		_, err := Start(cfg)
		assert.Error(t, err, "%+v", cfg)
		var se *StartError
		assert.False(t, errors.As(err, &se), "%+v: a bad config is not a start failure", cfg)
	}
}

// The port picked is taken before the server binds it: Start tries another.
// Restart must keep its address, so it fails instead.
func TestPortTaken(t *testing.T) {
	for _, k := range Kinds() {
		if Available(k) != nil {
			continue
		}
		t.Run(string(k), func(t *testing.T) {
			held, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer held.Close()
			heldPort := held.Addr().(*net.TCPAddr).Port
			var once sync.Once
			orig := pickPort
			pickPort = func() (int, error) {
				port := 0
				once.Do(func() { port = heldPort })
				if port != 0 {
					return port, nil
				}
				return orig()
			}
			defer func() { pickPort = orig }()

			s := startT(t, Config{Kind: k, Size: 1 << 20})
			assert.NotEqual(t, strconv.Itoa(heldPort), portOf(s.Addr))
			assert.Contains(t, s.Output(), fmt.Sprintf("port %d was taken", heldPort))

			// Restart with its port taken.
			require.NoError(t, s.Kill())
			thief, err := net.Listen("tcp", s.Addr)
			require.NoError(t, err)
			err = s.Restart()
			thief.Close()
			require.Error(t, err)
			t.Logf("Restart with the port taken: %v", strings.SplitN(err.Error(), "\n", 2)[0])
			require.NoError(t, s.Restart())
			assert.EqualValues(t, 1<<20, s.Size)
		})
	}
}

// startT starts a server for t and stops it in t's cleanup. These tests
// cannot use nbdservertest, which imports this package; CI installs every
// server, so a missing one skips here only outside it.
func startT(t *testing.T, cfg Config) *Server {
	t.Helper()
	if err := Available(cfg.Kind); err != nil && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	s, err := Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s output:\n%s", s.Kind, s.Output())
		}
		assert.NoError(t, s.Stop())
	})
	return s
}

// What each kind advertises, as nbdinfo --json sees it: the table in the
// package documentation.
func TestFeatures(t *testing.T) {
	requireTool(t, NbdinfoAvailable())
	type features struct {
		Structured bool `json:"structured"`
		Exports    []struct {
			Contexts  []string `json:"contexts"`
			Flush     bool     `json:"can_flush"`
			FUA       bool     `json:"can_fua"`
			Trim      bool     `json:"can_trim"`
			Zero      bool     `json:"can_zero"`
			FastZero  bool     `json:"can_fast_zero"`
			DF        bool     `json:"can_df"`
			Cache     bool     `json:"can_cache"`
			MultiConn bool     `json:"can_multi_conn"`
			ReadOnly  bool     `json:"is_read_only"`
			BlockMin  int64    `json:"block_size_minimum"`
			BlockPref int64    `json:"block_size_preferred"`
			BlockMax  int64    `json:"block_size_maximum"`
			Size      int64    `json:"export-size"`
		} `json:"exports"`
	}
	// Keep in step with the table in doc.go.
	want := map[Kind]string{
		NbdkitMemory: "sr=true ctx=[base:allocation] flush=true fua=true trim=true zero=true fastzero=true df=true cache=true multiconn=true ro=false block=0/0/0 infosize=65536",
		NbdkitFile:   "sr=true ctx=[base:allocation] flush=true fua=true trim=true zero=true fastzero=false df=true cache=true multiconn=true ro=false block=0/0/0 infosize=65536",
		QemuNBD:      "sr=true ctx=[base:allocation] flush=true fua=true trim=true zero=true fastzero=true df=true cache=true multiconn=true ro=false block=1/4096/33554432 infosize=65536",
		NBDServer:    "sr=false ctx=[] flush=true fua=true trim=true zero=true fastzero=false df=false cache=false multiconn=true ro=false block=0/0/0 infosize=0",
	}
	for _, k := range Kinds() {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			s := startT(t, Config{Kind: k, Size: 64 << 10})
			out, err := exec.Command("nbdinfo", "--json", s.URI()).Output()
			require.NoError(t, err)
			var f features
			require.NoError(t, json.Unmarshal(out, &f))
			require.Len(t, f.Exports, 1)
			e := f.Exports[0]
			got := fmt.Sprintf("sr=%v ctx=%v flush=%v fua=%v trim=%v zero=%v fastzero=%v df=%v cache=%v multiconn=%v ro=%v block=%d/%d/%d infosize=%d",
				f.Structured, e.Contexts, e.Flush, e.FUA, e.Trim, e.Zero, e.FastZero, e.DF, e.Cache, e.MultiConn, e.ReadOnly,
				e.BlockMin, e.BlockPref, e.BlockMax, e.Size)
			t.Logf("%s: %s; NBD_OPT_GO without structured replies: size %d, flags %#x %v",
				k, got, s.Size, s.flags, flagNames(s.flags))
			assert.Equal(t, want[k], got, "the feature table in doc.go is out of date for %s", k)
			assert.EqualValues(t, 64<<10, s.Size, "NBD_OPT_GO size")
		})
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// requireTool skips the test (fails it in CI) when err says a tool is
// missing.
func requireTool(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal(err)
	}
	t.Skip(err)
}

func nbdcopy(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nbdcopy", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nbdcopy %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func nbdinfoSize(t *testing.T, uri string) int64 {
	t.Helper()
	requireTool(t, NbdinfoAvailable())
	out, err := exec.Command("nbdinfo", "--size", uri).CombinedOutput()
	require.NoError(t, err, "%s", out)
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	require.NoError(t, err)
	return n
}

// readExport reads the whole export through nbdcopy.
func readExport(t *testing.T, s *Server) []byte {
	t.Helper()
	requireTool(t, NbdcopyAvailable())
	dst := filepath.Join(t.TempDir(), "read")
	require.NoError(t, nbdcopy(s.URI(), dst))
	b, err := os.ReadFile(dst)
	require.NoError(t, err)
	return b
}

// greet connects and reads the server's greeting, leaving the connection in
// the middle of the handshake.
func greet(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hello := make([]byte, 18)
	_, err = io.ReadFull(c, hello)
	require.NoError(t, err)
	require.Equal(t, nbdMagic, string(hello[:8]))
	c.SetReadDeadline(time.Time{})
	return c
}

// groupPids lists the processes in process group pgid.
func groupPids(pgid int) []int {
	var out []int
	for _, pid := range pids() {
		if _, _, pgrp, err := procStat(pid); err == nil && pgrp == pgid {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out
}

// gone reports whether pid has no /proc entry: not running, not a zombie.
func gone(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return errors.Is(err, os.ErrNotExist)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// A test binary that dies without running its cleanups (killed, or a test
// timeout's panic) leaves no server behind: nbdkit and qemu-nbd through
// Pdeathsig, nbd-server through its guard.
func TestCrashLeavesNothing(t *testing.T) {
	if os.Getenv("NBDSERVER_CRASH_HELPER") != "" {
		crashHelper()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashLeavesNothing$")
	cmd.Env = append(os.Environ(), "NBDSERVER_CRASH_HELPER=1", "TMPDIR="+t.TempDir())
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var procs []int
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && lines.Text() != "ready" {
		var kind string
		var pid int
		if _, err := fmt.Sscanf(lines.Text(), "%s %d", &kind, &pid); err == nil {
			procs = append(procs, pid)
		}
	}
	require.NoError(t, cmd.Process.Kill())
	cmd.Wait()
	if len(procs) == 0 {
		t.Skip("no server started")
	}
	t.Logf("server processes: %v", procs)

	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range procs {
		for !deadOrReaped(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		assert.True(t, deadOrReaped(pid), "process %d outlived its test binary", pid)
	}
}

func crashHelper() {
	for _, k := range Kinds() {
		s, err := Start(Config{Kind: k, Size: 1 << 20})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			continue
		}
		c, err := net.Dial("tcp", s.Addr) // for nbd-server, a per-connection process
		if err == nil {
			io.ReadFull(c, make([]byte, 18))
		}
		for _, pid := range groupPids(s.Pid()) {
			fmt.Printf("%s %d\n", k, pid)
		}
		if g := s.p.guardPid; g != 0 {
			fmt.Printf("%s-guard %d\n", k, g)
		}
	}
	fmt.Println("ready")
	select {}
}

// deadOrReaped reports whether pid has exited: it is gone, or a zombie,
// which it reaps if it is ours (this process may be a subreaper and have
// adopted it).
func deadOrReaped(pid int) bool {
	st, ppid, _, err := procStat(pid)
	if err != nil {
		return true
	}
	if st != 'Z' && st != 'X' {
		return false
	}
	if ppid == os.Getpid() {
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	}
	return true
}
