// Package tests holds yolk's end-to-end tests: real images booted under
// qemu-system-arm by the harness in yolk/qemu, talking TCP to servers the
// tests start on loopback.
//
// The images come from YOLK_IMAGE (mx6ullevk), YOLK_IMAGE_USBARMORY and
// YOLK_IMX, which `make test` sets after building them; when unset, the
// tests build them with the Makefile. Without the TamaGo toolchain no image
// can be built and every test here is skipped with that reason.
package tests

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/board"
	"yolk/board/mx6ullevk"
	"yolk/board/usbarmory"
	"yolk/mm/phys"
	"yolk/qemu"
	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
	"yolk/qemu/toolchain"
	"yolk/runtime/result"
)

var (
	buildDir  string
	buildOnce sync.Map // make target+vars → *artifact
)

type artifact struct {
	once sync.Once
	path string
	err  error
}

// The long scenario runs (tens of seconds each) call t.Parallel: they run
// after the quick tests, two at a time (go test's -parallel defaults to
// GOMAXPROCS, the two cores here), one QEMU per core.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "yolk-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needImage returns the artifact named by env, building it with `make
// makeTarget` when the variable is unset. It skips the test, saying why,
// when the TamaGo toolchain is absent, and fails it when QEMU is missing.
func needImage(t testing.TB, env, makeTarget, boardTarget, ext string) string {
	t.Helper()
	return needBuild(t, env, makeTarget, filepath.Join(buildDir, "yolk-"+boardTarget+ext), "TARGET="+boardTarget)
}

// needBuild is needImage for an artifact at out, made by `make makeTarget
// vars... BUILD=buildDir`.
func needBuild(t testing.TB, env, makeTarget, out string, vars ...string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if !filepath.IsAbs(p) {
			root, err := qemu.ModuleRoot()
			require.NoError(t, err)
			p = filepath.Join(root, p)
		}
		return p
	}
	if err := toolchain.Check(); err != nil {
		t.Skipf("SKIP: %v", err)
	}
	a, _ := buildOnce.LoadOrStore(out, &artifact{})
	art := a.(*artifact)
	art.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		art.err = qemu.Make(ctx, makeTarget, append(vars, "BUILD="+buildDir)...)
		art.path = out
	})
	require.NoError(t, art.err)
	return art.path
}

func needQEMU(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-arm"); err != nil {
		t.Fatalf("qemu-system-arm is not installed (make deps installs it): %v", err)
	}
}

func evkImage(t testing.TB) string {
	img := needImage(t, "YOLK_IMAGE", "image", "mx6ullevk", ".elf")
	needQEMU(t)
	return img
}

func boot(t *testing.T, cfg qemu.Config) *qemu.Run {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 90 * time.Second
	}
	run, err := qemu.Boot(context.Background(), cfg)
	require.NoError(t, err)
	t.Logf("boot-to-banner %v, run %v, host CPU %v, QEMU exit status %d", run.Banner.Round(time.Millisecond),
		run.Elapsed.Round(time.Millisecond), run.CPU.Round(time.Millisecond), run.ExitCode)
	return run
}

func check(t *testing.T, run *qemu.Run, name string) result.Line {
	t.Helper()
	l, ok := run.Find("check", "name", name)
	require.True(t, ok, "no check %s in:\n%s", name, run.Tail(30))
	return l
}

func TestSelftestEchoesThroughGVisor(t *testing.T) {
	echo := &qemu.EchoServer{}
	run := boot(t, qemu.Config{Image: evkImage(t), Services: []qemu.Service{echo}, Append: []string{"scenario=selftest"}})
	require.Equal(t, 0, run.ExitCode, run.Tail(30))

	v, ok := run.Find("result")
	require.True(t, ok)
	assert.Equal(t, "pass", v.Value("status"))
	for _, c := range []string{"memmap", "pool-size", "pool-rw", "phys-orders", "echo"} {
		assert.Equal(t, "true", check(t, run, c).Value("ok"), c)
	}
	// The round trip is asserted on the host side too: the nonce (32 hex
	// digits and a newline) went through the server.
	assert.Equal(t, int64(33), echo.Echoed())
	net, ok := run.Find("net", "up", "true")
	require.True(t, ok)
	assert.Equal(t, "10.0.2.15/24", net.Value("ip"))
	t.Logf("echo round trip in the guest: %sus", check(t, run, "echo").Value("rtt_us"))
}

func TestSelftestFailsOnWrongEchoPort(t *testing.T) {
	// A port nothing listens on: the guest's dial is refused and the run
	// must exit non-zero, and that status must reach the QEMU process.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	echo := &qemu.EchoServer{Port: closed}
	run := boot(t, qemu.Config{Image: evkImage(t), Services: []qemu.Service{echo}, Append: []string{"scenario=selftest", "timeout=5s"}})
	assert.Equal(t, 1, run.ExitCode)
	c := check(t, run, "echo")
	assert.Equal(t, "false", c.Value("ok"))
	assert.Contains(t, c.Value("err"), "refused")
	assert.Zero(t, echo.Echoed())
	v, _ := run.Find("result")
	assert.Equal(t, "fail", v.Value("status"))
}

func TestUnknownScenarioExitsWithUsageStatus(t *testing.T) {
	run := boot(t, qemu.Config{Image: evkImage(t), Append: []string{"scenario=no-such-thing"}})
	assert.Equal(t, 2, run.ExitCode)
	v, ok := run.Find("result", "status", "fail")
	require.True(t, ok)
	assert.Contains(t, v.Value("err"), "scenario=no-such-thing is not a choice: want one of ")
}

// Bad boot parameters stop the image before anything runs: status 2 and
// one result line naming the key, the value and what is allowed. (The
// whole table runs on the host against the same checker, in
// scenarios/params_test.go; these are the README's cases.)
func TestBadBootParametersOnTheImage(t *testing.T) {
	img := evkImage(t)
	for _, c := range []struct {
		append []string
		want   string
	}{
		{[]string{"scenraio=vm"}, "scenraio=vm is not a parameter of tour (did you mean scenario=?)"},
		{[]string{"steps=abc"}, "steps=abc is not a parameter of tour (mmu and vm take it)"},
		{[]string{"scenario=vm", "steps=-1"}, "bad boot parameter steps=-1 is out of range: want an integer from 1 to 10000000"},
		{[]string{"scenario=vm", "steps=99999999999"}, "bad boot parameter steps=99999999999 is out of range"},
		{[]string{"scenario=meminfo", "fill=500"}, "bad boot parameter fill=500 is out of range: want an integer from 0 to 100"},
		{[]string{"scenario=selftest", "ip=999.1.1.1"}, "bad boot parameter ip=999.1.1.1 is malformed: want an IPv4 address, or off"},
		// Only the machine knows this one's bound: the pool's size.
		{[]string{"scenario=meminfo", "min_free_kbytes=300000"}, "bad boot parameter min_free_kbytes=300000 is out of range: want an integer from 0 to "},
	} {
		t.Run(strings.Join(c.append, " "), func(t *testing.T) {
			run := boot(t, qemu.Config{Image: img, Append: c.append, Timeout: 60 * time.Second})
			assert.Equal(t, 2, run.ExitCode, run.Tail(10))
			var verdicts []result.Line
			for _, l := range run.Results {
				if l.Event == "result" {
					verdicts = append(verdicts, l)
				}
			}
			require.Len(t, verdicts, 1, run.Tail(10))
			assert.Contains(t, verdicts[0].Value("err"), c.want)
			assert.Equal(t, "2", verdicts[0].Value("code"))
			assert.NotEmpty(t, verdicts[0].Value("scenario"))
			_, ran := run.Find("check")
			assert.False(t, ran, "a check ran on bad parameters")
		})
	}
}

func TestBadCommandLineIsAnErrorNotAPanic(t *testing.T) {
	run := boot(t, qemu.Config{Image: evkImage(t), Append: []string{`msg="unterminated`}})
	assert.Equal(t, 2, run.ExitCode)
	v, ok := run.Find("result", "status", "fail")
	require.True(t, ok)
	assert.Contains(t, v.Value("err"), "quote")
}

// The banner and memory map the image prints are the board's layout, and
// that layout is valid.
func TestBannerAndMemoryMap(t *testing.T) {
	run := boot(t, qemu.Config{Image: evkImage(t), Append: []string{"scenario=sleep", "duration=1ms"}})
	require.Equal(t, 0, run.ExitCode, run.Tail(30))
	b, ok := run.Find("banner")
	require.True(t, ok)
	assert.Equal(t, "mx6ullevk", b.Value("board"))
	assert.Equal(t, "true", b.Value("emulated"))
	assert.True(t, strings.HasPrefix(b.Value("go"), "go1.26"), b.Value("go"))

	got := memoryMap(t, run)
	require.NoError(t, got.Validate())
	assert.Equal(t, mx6ullevk.Layout.Memory, got)
	assert.GreaterOrEqual(t, got.Pool.Size, uint64(256<<20))

	// The pool is managed by mm/phys, and its MemTotal is the pool's.
	p, ok := run.Find("phys")
	require.True(t, ok, run.Tail(30))
	assert.Equal(t, "true", p.Value("managed"))
	assert.Equal(t, strconv.FormatUint(got.Pool.Size>>10, 10), p.Value("memtotal_kb"))
	assert.Equal(t, strconv.FormatUint(got.Pool.Size/board.PageSize, 10), p.Value("frames"))
	assert.Equal(t, fmt.Sprintf("%#x", got.Pool.Start/board.PageSize), p.Value("start_pfn"))
	assert.Equal(t, "2495", p.Value("min_free_kbytes"), "Linux's default for a 380 MiB zone")
}

func memoryMap(t *testing.T, run *qemu.Run) board.MemoryMap {
	t.Helper()
	regions := map[string]board.Region{}
	for _, l := range run.Results {
		if l.Event != "mem" {
			continue
		}
		start, err := strconv.ParseUint(l.Value("start"), 0, 64)
		require.NoError(t, err)
		end, err := strconv.ParseUint(l.Value("end"), 0, 64)
		require.NoError(t, err)
		size, err := board.ParseSize(l.Value("size"))
		require.NoError(t, err)
		require.Equal(t, end-start, size, "mem line %s", l)
		regions[l.Value("name")] = board.Region{Name: l.Value("name"), Start: start, Size: size}
	}
	require.Len(t, regions, 4)
	return board.MemoryMap{RAM: regions["ram"], Runtime: regions["runtime"], DMA: regions["dma"], Pool: regions["pool"]}
}

func TestDeadlineKillsAHungImage(t *testing.T) {
	run, err := qemu.Boot(context.Background(), qemu.Config{
		Image:   evkImage(t),
		Append:  []string{"scenario=sleep", "duration=10m"},
		Timeout: 5 * time.Second,
	})
	require.Error(t, err)
	require.NotNil(t, run)
	assert.True(t, run.TimedOut)
	assert.Less(t, run.Elapsed, 30*time.Second, "QEMU was not killed promptly")
	// The error shows the last console lines, so a hang is diagnosable.
	assert.Contains(t, err.Error(), "scenario name=sleep")
}

func TestUSBArmoryImageBootsUnderQEMU(t *testing.T) {
	img := needImage(t, "YOLK_IMAGE_USBARMORY", "image", "usbarmory", ".elf")
	needQEMU(t)
	echo := &qemu.EchoServer{}
	run := boot(t, qemu.Config{Image: img, Target: "usbarmory", Services: []qemu.Service{echo}, Append: []string{"scenario=selftest"}})
	require.Equal(t, 0, run.ExitCode, run.Tail(30))
	b, _ := run.Find("banner")
	assert.Equal(t, "usbarmory", b.Value("board"))
	assert.Equal(t, "UART2", b.Value("console"))
	assert.Equal(t, "ENET1", b.Value("ethernet"), "QEMU attaches the first -net nic to ENET1")
	assert.Equal(t, usbarmory.Layout.Memory, memoryMap(t, run))
	assert.Equal(t, int64(33), echo.Echoed())
}

func TestNoExitLineIsAnError(t *testing.T) {
	// QEMU failing before the image runs (here: no kernel file) must not
	// pass for a verdict: the harness reports that the image never exited.
	bogus := filepath.Join(t.TempDir(), "missing.elf")
	needQEMU(t)
	_, err := qemu.Boot(context.Background(), qemu.Config{Image: bogus, Timeout: 30 * time.Second})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "before the image reported an exit")
	var ee *exec.ExitError
	assert.False(t, errors.As(err, &ee))
}

func TestRuntimeCrashEndsTheRunAtOnce(t *testing.T) {
	run, err := qemu.Boot(context.Background(), qemu.Config{
		Image: evkImage(t), Append: []string{"scenario=crash"}, Timeout: 60 * time.Second,
	})
	require.Error(t, err, "a crash is not a verdict")
	require.NotNil(t, run)
	assert.False(t, run.TimedOut)
	assert.Equal(t, 4, run.ExitCode)
	assert.Contains(t, err.Error(), "panic: crash scenario")
	t.Logf("crash reported after %v", run.Elapsed.Round(time.Millisecond))
}

// `make qemu`, the README's first command, boots to the banner and the
// memory map and runs the tour against the services the harness starts
// (echo, nbdkit, the flood): every phase passes, and the summary says
// what the phases' own closing lines say. A failing scenario's status
// reaches make.
func TestMakeQEMU(t *testing.T) {
	// make qemu builds the image itself; only the toolchain is needed.
	if err := toolchain.Check(); err != nil {
		t.Skipf("SKIP: %v", err)
	}
	needQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	start := time.Now()
	out, err := qemu.MakeOutput(ctx, "qemu", "BUILD="+buildDir)
	require.NoError(t, err, out)
	t.Logf("make qemu: the tour took %v (image built beforehand by the test's other runs or by this one)", time.Since(start).Round(time.Second))
	for _, want := range []string{"yolk: banner ", "yolk: mem name=pool ", "yolk: check name=echo ok=true",
		"yolk: result scenario=tour status=pass code=0", "QEMU exit status 0", "yolk tour: what happened, in "} {
		assert.Contains(t, out, want)
	}
	checkTourSummary(t, out)
	matchExample(t, readmeExample(t, ""), out, "make qemu")

	out, err = qemu.MakeOutput(ctx, "qemu", "BUILD="+buildDir, "APPEND=scenario=selftest host=10.0.2.2:1 timeout=3s")
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, out)
	assert.Contains(t, out, "scenario selftest fail, QEMU exit status 1")
	// The scenario's status reaches make, which reports it (and exits 2,
	// as make does for any failed recipe).
	assert.Regexp(t, `make(\[\d+\])?: \*\*\* \[Makefile:\d+: qemu\] Error 1\n`, out)
	assert.Equal(t, 2, ee.ExitCode())
}

// checkTourSummary holds a tour's console to its own counters: each phase
// ran and passed, every check passed, and each figure of the tour line is
// the one its phase's closing line gave, none missing; the flood reached
// the guest during the swap phase.
func checkTourSummary(t *testing.T, console string) {
	t.Helper()
	var lines []result.Line
	for _, s := range strings.Split(console, "\n") {
		if l, err := result.Parse(s); err == nil {
			lines = append(lines, l)
		}
	}
	run := qemu.Run{Results: lines}
	for _, ph := range []string{"selftest", "thp", "mmu", "nbdswap", "region"} {
		done, ok := run.Find("tour-phase-done", "scenario", ph)
		if assert.True(t, ok, "phase %s never finished", ph) {
			assert.Equal(t, "true", done.Value("ok"), "phase %s: %s", ph, done)
		}
	}
	for _, l := range lines {
		if l.Event == "check" {
			assert.Equal(t, "true", l.Value("ok"), "%s", l)
		}
	}
	tour, ok := run.Find("tour")
	require.True(t, ok, "no tour line")
	_, missing := tour.Get("missing")
	assert.False(t, missing, "the tour line misses figures: %s", tour)
	from := map[string][2]string{
		"thp_fault_alloc": {"thp-vmstat", "thp_fault_alloc"}, "thp_split_pmd": {"thp-vmstat", "thp_split_pmd"},
		"pglazyfreed": {"thp-vmstat", "pglazyfreed"}, "pswpout": {"pressure", "pswpout"}, "pswpin": {"pressure", "pswpin"},
		"swap_pages_checked": {"pressure", "pages_checked"}, "swap_mismatches": {"pressure", "mismatches"},
		"rx_dropped": {"nbdswap", "dropped"}, "rx_memalloc_drops": {"nbdswap", "memalloc_drops"},
		"rx_reserve_peak": {"nbdswap", "reserve_peak"}, "commits": {"region", "commits"},
		"reclaim_writes": {"region", "reclaim_writes"}, "region_mismatches": {"region", "mismatches"},
		"mmu_aborts": {"mmu-aborts", "total"}, "mmu_served": {"mmu-faults", "served"}, "mmu_disagreed": {"mmu-faults", "disagreed"},
	}
	for key, src := range from {
		l, ok := run.Find(src[0])
		if assert.True(t, ok, "no %s line", src[0]) {
			assert.Equal(t, l.Value(src[1]), tour.Value(key), "%s: the tour line against the %s line", key, src[0])
		}
	}
	for _, key := range []string{"thp_fault_alloc", "mmu_aborts", "mmu_served", "mmu_kills", "pglazyfreed", "pswpout", "pswpin", "swap_pages_checked", "commits", "reclaim_writes"} {
		assert.NotContains(t, []string{"", "0"}, tour.Value(key), "%s: the tour did not exercise it", key)
	}
	assert.Equal(t, "0", tour.Value("mmu_disagreed"), "the software MMU agrees with QEMU's on every abort")
	assert.Equal(t, "0", tour.Value("swap_mismatches"))
	assert.Equal(t, "0", tour.Value("region_mismatches"))
	assert.Equal(t, "0", tour.Value("rx_memalloc_drops"), "classify-first drops no NBD frame")
	nbdswap, _ := run.Find("nbdswap")
	assert.Equal(t, "128", nbdswap.Value("flood_kbps"), "the swap phase runs under the flood")
	assert.Regexp(t, `flood server on \S+ sent [1-9]\d* bytes`, console, "the flood reached the guest")
	// The table a person reads says the same as the tour line.
	assert.Regexp(t, `\n    pages swapped out +`+tour.Value("pswpout")+`\n`, console)
}

// An idle image must not spin the only core: while the guest sleeps, QEMU
// (which halts its vCPU thread on WFI) should use a small fraction of the
// sleep in host CPU time. A guest that spins uses all of it. Checked with
// the network up and with it down (bad ip=), since idling must not depend
// on the ENET driver.
func TestIdleImageWaitsForInterrupts(t *testing.T) {
	img := evkImage(t)
	const sleep = 3 * time.Second
	for name, extra := range map[string]string{"network up": "", "network down": "ip=off"} {
		t.Run(name, func(t *testing.T) {
			run := boot(t, qemu.Config{Image: img, Append: []string{"scenario=sleep", "duration=" + sleep.String(), extra}})
			require.Equal(t, 0, run.ExitCode, run.Tail(20))
			if extra != "" {
				_, down := run.Find("net", "up", "false")
				require.True(t, down, "the network came up with %s", extra)
			}
			assert.Less(t, run.CPU, sleep*4/10, "QEMU used %v of CPU while the guest slept %v: the guest spins", run.CPU, sleep)
		})
	}
}

// The meminfo scenario prints the allocator's /proc files from the image,
// on the real pool: 97280 frames, and Linux's watermarks for them.
func TestMeminfoOnTheImage(t *testing.T) {
	run := boot(t, qemu.Config{Image: evkImage(t), Append: []string{"scenario=meminfo", "fill=50"}})
	require.Equal(t, 0, run.ExitCode, run.Tail(40))
	console := strings.Join(run.Lines, "\n")
	for _, want := range []string{
		"\nPage block order: 8\n",
		"\n        min      623\n        low      778\n        high     933\n",
		"\n        managed  97280\n",
		"\nMemTotal:         389120 kB\n",
		"\npgalloc_normal ",
	} {
		assert.Contains(t, console, want)
	}
	var buddy string
	for _, l := range run.Lines {
		if strings.HasPrefix(l, "Node 0, zone   Normal ") {
			buddy = l
			break
		}
	}
	assert.Len(t, strings.Fields(strings.TrimPrefix(buddy, "Node 0, zone   Normal")), phys.NrOrders, "buddyinfo: %q", buddy)
	for _, c := range []string{"invariants-full", "invariants-empty"} {
		assert.Equal(t, "true", check(t, run, c).Value("ok"), c)
	}
}

// The vm scenario runs mm's differential property test on the image: the
// real pool, the software MMU, mm.Check after every step, and every frame
// back in the pool at the end. 3000 steps take about 70 s under QEMU.
func TestVMScenarioOnTheImage(t *testing.T) {
	t.Parallel() // a long run: two QEMUs at a time, one per core (see TestMain)
	const steps = "3000"
	// About 70 s here; a slower host gets room.
	run := boot(t, qemu.Config{Image: evkImage(t), Append: []string{"scenario=vm", "steps=" + steps}, Timeout: 3 * time.Minute})
	require.Equal(t, 0, run.ExitCode, run.Tail(40))
	for _, c := range []string{"vm-invariants", "vm-no-leak"} {
		assert.Equal(t, "true", check(t, run, c).Value("ok"), c)
	}
	v, ok := run.Find("vm")
	require.True(t, ok, run.Tail(40))
	assert.Equal(t, steps, v.Value("steps"))
	assert.Equal(t, steps, v.Value("checks"))
	ops, ok := run.Find("vm-ops")
	require.True(t, ok, run.Tail(40))
	for _, op := range []string{"mmap", "munmap", "fork", "write", "reclaim"} {
		assert.NotEmpty(t, ops.Value(op), op)
	}
	console := strings.Join(run.Lines, "\n")
	for _, want := range []string{"\nMemTotal:         389120 kB\n", "\nAnonPages:", "\nPageTables:", "/maps lines=", " rw-p 00000000 00:00 0 "} {
		assert.Contains(t, console, want)
	}
	// The Go heap stayed small: the scenario yields, so the collector ran.
	// (Without the yield no cycle completed in 3000 steps and the heap
	// passed 40 MB; 10000 steps filled the runtime region.)
	heap, ok := run.Find("go-heap")
	require.True(t, ok, run.Tail(40))
	cycles, err := strconv.Atoi(heap.Value("gc_cycles"))
	require.NoError(t, err)
	assert.Greater(t, cycles, 1, "%s", heap)
	sys, err := strconv.Atoi(heap.Value("sys_kb"))
	require.NoError(t, err)
	assert.Less(t, sys, 24<<10, "%s", heap)
	t.Logf("%s", heap)
	t.Logf("%s steps in %v: %s", steps, run.Elapsed.Round(time.Millisecond), v)
}

// The thp scenario runs the huge page script on the image's real pool:
// every step's check passes, the vmstat events are the hand-computed ones
// (the scenario checks them too; here they are read back from its lines),
// and smaps and meminfo show what is left mapped whole.
func TestTHPScenarioOnTheImage(t *testing.T) {
	run := boot(t, qemu.Config{Image: evkImage(t), Append: []string{"scenario=thp"}})
	require.Equal(t, 0, run.ExitCode, run.Tail(60))
	console := strings.Join(run.Lines, "\n")
	assert.NotContains(t, console, "ok=false")
	for _, c := range []string{"thp-aligned", "thp-cow-child", "thp-cow-parent", "thp-discard-redirtied",
		"thp-discard-section", "thp-discarded-zero", "thp-deferred-split", "thp-counts", "thp-no-leak"} {
		assert.Equal(t, "true", check(t, run, c).Value("ok"), c)
	}
	ev, ok := run.Find("thp-vmstat")
	require.True(t, ok, run.Tail(40))
	for name, want := range map[string]string{
		"thp_fault_alloc": "5", "thp_fault_fallback": "0", "thp_zero_page_alloc": "1",
		"thp_split_pmd": "3", "thp_split_page": "2", "thp_deferred_split_page": "1",
		"pglazyfree": "528", "pglazyfreed": "257",
	} {
		assert.Equal(t, want, ev.Value(name), name)
	}
	assert.Equal(t, "16", check(t, run, "thp-deferred-split").Value("freed_frames"))
	area, ok := run.Find("thp-area")
	require.True(t, ok, run.Tail(40))
	assert.Equal(t, "4096", area.Value("anon_huge_kb"))
	assert.Equal(t, "1088", area.Value("lazyfree_kb"))
	for _, want := range []string{"\nAnonHugePages:      2048 kB\n", "\nTHPeligible:    1\n", "\nMemTotal:         389120 kB\n"} {
		assert.Contains(t, console, want)
	}
	t.Logf("thp scenario in %v: %s", run.Elapsed.Round(time.Millisecond), ev)
}

// The journal scenario runs blk/journal on the image over blk/nbd, on
// gVisor TCP to a real nbdkit memory server on the host: 200 transactions
// of 8 random blocks, Close (which checkpoints), every home block read back
// through the client, and a reopen that must find the journal clean. About
// 10 s under QEMU, most of it the commits' writes over the guest's TCP.
func TestJournalOverNBDOnTheImage(t *testing.T) {
	t.Parallel() // a long run: two QEMUs at a time, one per core (see TestMain)
	img := evkImage(t)
	srv := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: 64 << 20})
	_, port, err := net.SplitHostPort(srv.Addr)
	require.NoError(t, err)
	const tx, blocks = "200", "8"
	run := boot(t, qemu.Config{Image: img, Append: []string{"scenario=journal",
		"nbd=" + net.JoinHostPort(qemu.GuestHostAddr, port), "tx=" + tx, "blocks=" + blocks}})
	require.Equal(t, 0, run.ExitCode, run.Tail(40))
	v, ok := run.Find("result")
	require.True(t, ok)
	assert.Equal(t, "pass", v.Value("status"))
	for _, c := range []string{"nbd-dial", "home-zero", "journal-format", "journal-open", "journal-commit",
		"journal-close", "journal-no-leak", "home-blocks", "journal-reopen", "journal-recovery-clean", "nbd-close"} {
		assert.Equal(t, "true", check(t, run, c).Value("ok"), c)
	}
	info, ok := run.Find("nbd")
	require.True(t, ok, run.Tail(40))
	assert.Equal(t, strconv.FormatInt(srv.Size, 10), info.Value("size"))
	assert.Equal(t, "4096", info.Value("block_size"))
	assert.Equal(t, "true", info.Value("structured"))
	j, ok := run.Find("journal")
	require.True(t, ok, run.Tail(40))
	assert.Equal(t, tx, j.Value("transactions"))
	assert.Equal(t, "1600", j.Value("records"))
	assert.NotEqual(t, "0", j.Value("checkpoints"))
	rec := check(t, run, "journal-recovery-clean")
	assert.Equal(t, "true", rec.Value("clean"))
	assert.Equal(t, "0", rec.Value("replayed"))
	t.Logf("%s", info)
	t.Logf("%s", j)
	t.Logf("read back %s home blocks (%s written) in %sms", check(t, run, "home-blocks").Value("blocks"),
		check(t, run, "home-blocks").Value("written"), check(t, run, "home-blocks").Value("ms"))
}

// The pressure scenario, as `make qemu APPEND='scenario=pressure'` runs
// it: the harness starts an nbdkit memory server big enough for the swap
// the scenario's defaults want (nbd= left out, as nbd=auto), and the
// image runs a working set twice its 4 MiB pool in three address spaces
// with swap on it. Every byte must read back right, pages must go out
// and come back in, nothing may be OOM killed, a stat line comes every
// second, and /proc/swaps names the NBD device. About 25 s under QEMU.
func TestPressureScenarioOnTheImage(t *testing.T) {
	t.Parallel() // a long run: two QEMUs at a time, one per core (see TestMain)
	img := evkImage(t)
	start := time.Now()
	code, stdout, said := runHarness(t, "-image", img, "-timeout", "150s", "scenario=pressure")
	t.Logf("harness: %v, %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(said))
	lines := strings.Split(stdout, "\n")
	tail := func() string { return strings.Join(lines[max(0, len(lines)-60):], "\n") }
	require.Equal(t, 0, code, "%s\n%s", tail(), said)

	var results []result.Line
	for _, l := range lines {
		if r, err := result.Parse(l); err == nil {
			results = append(results, r)
		}
	}
	find := func(event string, kv ...string) (result.Line, bool) {
		run := qemu.Run{Results: results}
		return run.Find(event, kv...)
	}
	num := func(l result.Line, key string) uint64 {
		t.Helper()
		v, err := strconv.ParseUint(l.Value(key), 10, 64)
		require.NoError(t, err, "%s in %s", key, l)
		return v
	}
	v, ok := find("result")
	require.True(t, ok, tail())
	assert.Equal(t, "pass", v.Value("status"))
	for _, c := range []string{"pressure-pool", "nbd-dial", "swapon", "pressure-invariants", "pressure-data",
		"pressure-no-oom", "pressure-swapped", "pressure-no-leak", "pressure-board-pool"} {
		l, ok := find("check", "name", c)
		if assert.True(t, ok, "no check %s in:\n%s", c, tail()) {
			assert.Equal(t, "true", l.Value("ok"), "%s", l)
		}
	}
	assert.NotContains(t, stdout, "ok=false")

	// The harness started the server itself, with room for the swap.
	params, ok := find("params")
	require.True(t, ok, tail())
	assert.Regexp(t, `^10\.0\.2\.2:\d+$`, params.Value("nbd"))
	assert.Equal(t, "4", params.Value("pool"))
	m := regexp.MustCompile(`yolk-qemu: nbdkit-memory server on \S+, (\d+) bytes`).FindStringSubmatch(said)
	require.NotNil(t, m, said)
	size, err := strconv.ParseInt(m[1], 10, 64)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, size, int64(2*4<<20), "the NBD server cannot hold twice the pool")

	setup, ok := find("pressure-setup")
	require.True(t, ok, tail())
	assert.Equal(t, "4096", setup.Value("pool_kb"))
	assert.GreaterOrEqual(t, num(setup, "working_set_kb"), uint64(2*4096), "twice the pool: %s", setup)

	// A stat line a second, with the figures asked for.
	var stats []result.Line
	for _, l := range results {
		if l.Event == "stat" {
			stats = append(stats, l)
		}
	}
	p, ok := find("pressure")
	require.True(t, ok, tail())
	elapsed := num(p, "elapsed_ms")
	assert.GreaterOrEqual(t, len(stats), int(elapsed/1000), "%d stat lines in %d ms", len(stats), elapsed)
	for _, s := range stats {
		for _, k := range []string{"free_kb", "active_kb", "inactive_kb", "swap_used_kb", "pswpin", "pswpout"} {
			num(s, k)
		}
	}
	if len(stats) > 2 {
		assert.NotZero(t, num(stats[len(stats)-2], "swap_used_kb"), "%s", stats[len(stats)-2])
	}

	assert.NotZero(t, num(p, "pswpout"), "%s", p)
	assert.NotZero(t, num(p, "pswpin"), "%s", p)
	assert.NotZero(t, num(p, "pgmajfault"), "%s", p)
	assert.Zero(t, num(p, "oom_kill"), "%s", p)
	assert.Zero(t, num(p, "mismatches"), "%s", p)
	assert.NotZero(t, num(p, "pages_checked"), "%s", p)

	// The /proc files, as Linux prints them.
	for _, want := range []string{
		"yolk: proc file=/proc/meminfo ", "\nMemTotal:           4096 kB\n", "\nSwapTotal:",
		"yolk: proc file=/proc/vmstat ", "\npswpin ", "\npswpout ", "\noom_kill 0\n",
		"yolk: proc file=/proc/swaps lines=2\nFilename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/nbd0 ",
	} {
		assert.Contains(t, stdout, want)
	}
	t.Logf("%s", p)
}
