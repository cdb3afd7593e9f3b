package toolchain

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu"
)

// The fake make.bash scripts stand in for the five-minute build: they
// make bin/go, a script that answers `go version` as the real one does.
const (
	// makeGood builds a working fake toolchain.
	makeGood = `#!/bin/sh
set -e
root=$(cd .. && pwd)
mkdir -p "$root/bin"
printf '#!/bin/sh\necho "go version go1.26.0 linux/amd64"\n' > "$root/bin/go"
chmod +x "$root/bin/go"
echo "fake make.bash: bootstrap $GOROOT_BOOTSTRAP"
`
	// makeHang writes bin/go first, so that the half-built tree would
	// pass for a toolchain if anything took it for one, then says it has
	// started (its pid, which leads its process group, in $FAKE_STARTED)
	// and never finishes on its own.
	makeHang = `#!/bin/sh
root=$(cd .. && pwd)
mkdir -p "$root/bin"
printf '#!/bin/sh\necho "go version go1.26.0 linux/amd64"\n' > "$root/bin/go"
chmod +x "$root/bin/go"
echo $$ > "$FAKE_STARTED.tmp" && mv "$FAKE_STARTED.tmp" "$FAKE_STARTED"
sleep 600
`
	makeFails = `#!/bin/sh
echo "fake make.bash: cannot find a bootstrap toolchain" >&2
exit 2
`
	// makeWrongGo builds a go command of another release.
	makeWrongGo = `#!/bin/sh
mkdir -p ../bin
printf '#!/bin/sh\necho "go version go1.25.7 linux/amd64"\n' > ../bin/go
chmod +x ../bin/go
`
)

type entry struct {
	name, body string
	mode       int64
	typ        byte
}

// archive writes a .tar.gz as `git archive` makes one: a pax global
// header naming the commit, then the tree with no top-level directory.
func archive(t *testing.T, entries ...entry) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	require.NoError(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header",
		PAXRecords: map[string]string{"comment": "354e6e83ecebf958c56aa6c12bc05766e57c1de5"}}))
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Typeflag: e.typ, Size: int64(len(e.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeSymlink {
			h.Linkname, h.Size = e.body, 0
		}
		require.NoError(t, tw.WriteHeader(h))
		if h.Typeflag == tar.TypeReg {
			_, err := tw.Write([]byte(e.body))
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	require.NoError(t, zw.Close())
	name := filepath.Join(t.TempDir(), "tamago-go1.26.0.src.tar.gz")
	require.NoError(t, os.WriteFile(name, buf.Bytes(), 0o644))
	return name
}

// source is a fake tamago-go source tree with the given make.bash.
func source(t *testing.T, makeBash string) string {
	return archive(t,
		entry{name: "VERSION", body: "go1.26.0\ntime 2026-02-10T01:22:00Z\n"},
		entry{name: "src/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "src/make.bash", body: makeBash, mode: 0o755},
		entry{name: "src/all.bash", body: "#!/bin/sh\n", mode: 0o755},
		entry{name: "lib/time/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "misc/link", typ: tar.TypeSymlink, body: "../VERSION"},
	)
}

func installer(t *testing.T, archive string) (*Installer, *bytes.Buffer) {
	var log bytes.Buffer
	in := &Installer{
		Dir:       filepath.Join(t.TempDir(), "tamago-go", Version),
		Archive:   archive,
		Bootstrap: "/the/host/go",
		Log:       &log,
		Reachable: func(context.Context) error { return errors.New("this test has no network") },
	}
	return in, &log
}

func exists(name string) bool {
	_, err := os.Lstat(name)
	return err == nil
}

func TestInstallFromArchive(t *testing.T) {
	in, log := installer(t, source(t, makeGood))
	require.NoError(t, in.Install(context.Background()), log.String())

	out, err := exec.Command(filepath.Join(in.Dir, "bin", "go"), "version").Output()
	require.NoError(t, err)
	assert.Equal(t, "go version go1.26.0 linux/amd64\n", string(out))
	assert.FileExists(t, filepath.Join(in.Dir, "src", "all.bash"))
	target, err := os.Readlink(filepath.Join(in.Dir, "misc", "link"))
	require.NoError(t, err)
	assert.Equal(t, "../VERSION", target)
	assert.False(t, exists(in.staging()), "the staging directory is gone")

	// It said first what it does and how long that takes, which source
	// it is, and then what it did.
	said := log.String()
	assert.Regexp(t, `(?s)^yolk: building the TamaGo toolchain tamago-go1\.26\.0 from \S+ into \S+: about 5 minutes on 2 cores\n`, said)
	assert.Contains(t, said, "is tamago-go commit 354e6e83ecebf958c56aa6c12bc05766e57c1de5")
	assert.Contains(t, said, "fake make.bash: bootstrap /the/host/go")
	assert.Regexp(t, `yolk: installed tamago-go1\.26\.0 at \S+ in \d+s\n$`, said)

	// Installed: nothing more is done, not even a look at the archive.
	log.Reset()
	in.Archive = filepath.Join(t.TempDir(), "gone.tar.gz")
	require.NoError(t, in.Install(context.Background()))
	assert.Empty(t, log.String())
}

func TestRefusesWhatIsNotTheSourceOfTheRelease(t *testing.T) {
	for name, c := range map[string]struct {
		archive string
		want    string
	}{
		"another release": {archive(t, entry{name: "VERSION", body: "go1.25.7\n"}, entry{name: "src/make.bash", body: makeGood, mode: 0o755}),
			"holds the source of go1.25.7, not go1.26.0"},
		"no VERSION":      {archive(t, entry{name: "src/make.bash", body: makeGood, mode: 0o755}), "it has no VERSION file"},
		"no make.bash":    {archive(t, entry{name: "VERSION", body: "go1.26.0\n"}), "it has no src/make.bash"},
		"escapes with ..": {archive(t, entry{name: "../evil", body: "x"}), `entry "../evil" leaves the tree`},
		"absolute path":   {archive(t, entry{name: "/var/evil", body: "x"}), `entry "/var/evil" leaves the tree`},
		"through a symlink": {archive(t, entry{name: "out", typ: tar.TypeSymlink, body: "/tmp"}, entry{name: "out/evil", body: "x"}),
			"out"},
		"a device":        {archive(t, entry{name: "dev", typ: tar.TypeChar}), "which a source tree does not need"},
		"the build fails": {source(t, makeFails), "make.bash: exit status 2"},
		"the wrong go":    {source(t, makeWrongGo), `version says "go version go1.25.7 linux/amd64", not "go version go1.26.0 ..."`},
		"not an archive": {func() string {
			n := filepath.Join(t.TempDir(), "x.tar.gz")
			os.WriteFile(n, []byte("hello"), 0o644)
			return n
		}(), "gzip"},
		"no archive at all": {filepath.Join(t.TempDir(), "missing.tar.gz"), "no such file"},
	} {
		in, log := installer(t, c.archive)
		err := in.Install(context.Background())
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), c.want, "%s: %s", name, log)
		assert.Contains(t, err.Error(), "installing the TamaGo toolchain tamago-go1.26.0: ", name)
		assert.False(t, exists(in.Dir), "%s: a failed install left %s", name, in.Dir)
		assert.False(t, exists(in.staging()), "%s: a failed install left its staging directory", name)
	}
}

// Cancelling an install (what ^C does to make toolchain) stops the build,
// its whole process group, and leaves nothing that looks installed.
func TestCancelledBuildLeavesNothing(t *testing.T) {
	in, log := installer(t, source(t, makeHang))
	started := filepath.Join(t.TempDir(), "started")
	t.Setenv("FAKE_STARTED", started)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Install(ctx) }()
	pid := waitStarted(t, started)
	require.FileExists(t, filepath.Join(in.stagedRoot(), "bin", "go"), "the fake build got as far as bin/go")
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled, log.String())
	case <-time.After(20 * time.Second):
		t.Fatal("Install did not return after its context was cancelled")
	}
	assert.False(t, exists(in.Dir))
	assert.False(t, exists(in.staging()))
	assert.Eventually(t, func() bool { return syscall.Kill(-pid, 0) != nil }, 10*time.Second, 50*time.Millisecond,
		"the build's process group outlived the install")
}

// The installer killed outright (kill -9, a closed terminal): the orphaned
// build still holds the lock, so the next install waits for it; then it
// removes the half-built tree, which never was in place, and builds again.
func TestKilledInstallIsRedone(t *testing.T) {
	bin := buildCommand(t)
	cache := t.TempDir()
	started := filepath.Join(t.TempDir(), "started")
	run := func(archive string) *exec.Cmd {
		cmd := exec.Command(bin, "-archive", archive)
		cmd.Env = append(cacheEnv(t, cache), "FAKE_STARTED="+started)
		return cmd
	}
	dir := filepath.Join(cache, "tamago-go", Version)

	first := run(source(t, makeHang))
	outputFile(t, first)
	require.NoError(t, first.Start())
	build := waitStarted(t, started)
	t.Cleanup(func() { syscall.Kill(-build, syscall.SIGKILL) })
	require.NoError(t, first.Process.Kill())
	first.Wait()
	assert.False(t, exists(dir), "a killed install left %s", dir)
	assert.FileExists(t, filepath.Join(dir+".partial", "tamago-go", Version, "bin", "go"),
		"the half-built tree is where the killed install left it")

	second := run(source(t, makeGood))
	out := outputFile(t, second)
	require.NoError(t, second.Start())
	require.Eventually(t, func() bool { return strings.Contains(out(), "waiting for another install") },
		20*time.Second, 20*time.Millisecond, "the second install did not wait for the orphaned build")
	assert.False(t, exists(dir))
	require.NoError(t, syscall.Kill(-build, syscall.SIGKILL)) // the orphaned build ends
	require.NoError(t, second.Wait(), out())
	assert.Contains(t, out(), "left by an interrupted build")
	assert.Contains(t, out(), "yolk: installed "+Version)
	got, err := exec.Command(filepath.Join(dir, "bin", "go"), "version").Output()
	require.NoError(t, err)
	assert.Equal(t, "go version go1.26.0 linux/amd64\n", string(got))
	assert.False(t, exists(dir+".partial"))
}

// A build that fails says so on one line, with both remedies.
func TestFailedInstallSaysWhatToDo(t *testing.T) {
	cmd := exec.Command(buildCommand(t), "-archive", source(t, makeFails))
	cmd.Env = cacheEnv(t, t.TempDir())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, string(out))
	assert.Equal(t, 1, ee.ExitCode())
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	assert.Regexp(t, `^yolk: installing the TamaGo toolchain tamago-go1\.26\.0: make\.bash: exit status 2, so nothing was installed at \S+; give this machine network access for upstream's installer, or run make toolchain TAMAGO_GO_SRC=/path/to/tamago-go1\.26\.0\.src\.tar\.gz \(a git archive of the tag\)\.$`, last)
	assert.Contains(t, string(out), "fake make.bash: cannot find a bootstrap toolchain", "the build's own words come first")
}

// ^C on make toolchain during make.bash: make, the installer and (through
// the installer) the build all stop; running it again rebuilds.
func TestInterruptedMakeToolchainRebuilds(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skipf("SKIP: make is not installed: %v", err)
	}
	root := moduleRoot(t)
	cache, build := t.TempDir(), t.TempDir()
	started := filepath.Join(t.TempDir(), "started")
	makeToolchain := func(archive string) *exec.Cmd {
		cmd := exec.Command("make", "-C", root, "--no-print-directory", "toolchain", "BUILD="+build, "TAMAGO_GO_SRC="+archive)
		cmd.Env = append(cacheEnv(t, cache), "FAKE_STARTED="+started)
		// The terminal's foreground process group, which ^C signals.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		return cmd
	}
	dir := filepath.Join(cache, "tamago-go", Version)

	first := makeToolchain(source(t, makeHang))
	out := outputFile(t, first)
	require.NoError(t, first.Start())
	pid := waitStarted(t, started)
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	require.NoError(t, syscall.Kill(-first.Process.Pid, syscall.SIGINT))
	err := first.Wait()
	require.Error(t, err, "an interrupted make toolchain succeeded: %s", out())
	assert.Contains(t, out(), "yolk: interrupted: "+Version+" is not installed")
	assert.False(t, exists(dir), "an interrupted build left %s", dir)
	assert.False(t, exists(dir+".partial"), "an interrupted build left its staging directory")
	assert.Eventually(t, func() bool { return syscall.Kill(-pid, 0) != nil }, 10*time.Second, 50*time.Millisecond,
		"the build outlived the interrupt")

	second := makeToolchain(source(t, makeGood))
	b, err := second.CombinedOutput()
	require.NoError(t, err, string(b))
	assert.FileExists(t, filepath.Join(dir, "bin", "go"))
	// And once it is there, make toolchain is silent and quick.
	b, err = makeToolchain(filepath.Join(t.TempDir(), "not-needed.tar.gz")).CombinedOutput()
	require.NoError(t, err, string(b))
	assert.Empty(t, string(b))
}

func TestOfflineWithoutArchive(t *testing.T) {
	in, log := installer(t, "")
	err := in.Install(context.Background())
	require.ErrorIs(t, err, ErrOffline)
	var off *OfflineError
	require.ErrorAs(t, err, &off)
	assert.EqualError(t, off.Reason, "this test has no network")
	assert.Empty(t, log.String(), "nothing to say before finding there is nothing to do")
	assert.False(t, exists(in.Dir))
	assert.False(t, exists(in.staging()))
}

// Without an archive, upstream's installer builds, pointed at the staging
// directory through XDG_CACHE_HOME, and the go command's own cache stays
// where it was.
func TestUpstreamInstallerBuildsInStaging(t *testing.T) {
	in, log := installer(t, "")
	in.Reachable = func(context.Context) error { return nil }
	seen := filepath.Join(t.TempDir(), "env")
	fake := filepath.Join(t.TempDir(), "tamago")
	require.NoError(t, os.WriteFile(fake, []byte(`#!/bin/sh
set -e
echo "XDG_CACHE_HOME=$XDG_CACHE_HOME GOCACHE=$GOCACHE args=$*" > "$SEEN"
root="$XDG_CACHE_HOME/tamago-go/`+Version+`"
mkdir -p "$root/bin"
printf '#!/bin/sh\necho "go version go1.26.0 linux/amd64"\n' > "$root/bin/go"
chmod +x "$root/bin/go"
`), 0o755))
	in.Upstream = []string{fake, "version"}
	t.Setenv("SEEN", seen)
	require.NoError(t, in.Install(context.Background()), log.String())
	assert.FileExists(t, filepath.Join(in.Dir, "bin", "go"))
	assert.False(t, exists(in.staging()))
	assert.Contains(t, log.String(), "with upstream's installer (git clone of https://github.com/usbarmory/tamago-go, then make.bash): about 5 minutes on 2 cores")

	env, err := os.ReadFile(seen)
	require.NoError(t, err)
	gocache, err := exec.Command("go", "env", "GOCACHE").Output()
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("XDG_CACHE_HOME=%s GOCACHE=%s args=version\n", in.staging(), strings.TrimSpace(string(gocache))), string(env))
}

// A Dir that exists without bin/go was not made by Install (which renames
// only finished trees into place): it is refused, not built over.
func TestForeignHalfInstallIsRefused(t *testing.T) {
	in, _ := installer(t, source(t, makeGood))
	require.NoError(t, os.MkdirAll(filepath.Join(in.Dir, "src"), 0o755))
	err := in.Install(context.Background())
	assert.ErrorContains(t, err, "exists but has no bin/go")
}

func TestCheck(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	err := Check()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the TamaGo toolchain "+Version+" is not installed at "+filepath.Join(cache, "tamago-go", Version))
	assert.Contains(t, err.Error(), "make toolchain")
}

// The toolchain version follows the tamago module version in go.mod the
// way cmd/tamago derives it, and CI's recorded checksum names its archive.
func TestVersionMatchesGoModAndCI(t *testing.T) {
	root := moduleRoot(t)
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^\s*github.com/usbarmory/tamago (v\S+)`).FindSubmatch(gomod)
	require.NotNil(t, m, "tamago not required in go.mod")
	assert.Equal(t, "tamago-go"+strings.TrimPrefix(string(m[1]), "v"), Version)
	assert.Contains(t, string(gomod), "tool github.com/usbarmory/tamago/cmd/tamago")

	sum, err := os.ReadFile(filepath.Join(root, ".ci", "tamago-go.sha256"))
	require.NoError(t, err)
	assert.Regexp(t, `^[0-9a-f]{64}  `+regexp.QuoteMeta(Version)+`\.src\.tar\.gz\n$`, string(sum))
}

// CI checks the archive beside the checkout before building from it: a
// wrong one stops the run with one sentence, before anything is built.
func TestCIRefusesAWrongArchive(t *testing.T) {
	root := moduleRoot(t)
	shared := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(shared, "toolchain"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(shared, "toolchain", Version+".src.tar.gz"), []byte("not it"), 0o644))
	cmd := exec.Command("bash", filepath.Join(root, ".ci", "run"))
	cmd.Env = append(os.Environ(), "YOLK_SHARED="+shared)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, string(out))
	assert.Equal(t, 1, ee.ExitCode())
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 1, string(out))
	assert.Regexp(t, `^ci: \S+/toolchain/tamago-go1\.26\.0\.src\.tar\.gz has sha256 [0-9a-f]{64}, not the d6f28d8e\S+ recorded in \.ci/tamago-go\.sha256: .*\.$`, lines[0])
}

// outputFile sends a command's output to a file, not a pipe (an orphaned
// build would keep a pipe open and Wait waiting), and returns a reader of
// what it has said so far.
func outputFile(t *testing.T, cmd *exec.Cmd) func() string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "output")
	f, err := os.Create(name)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	cmd.Stdout, cmd.Stderr = f, f
	return func() string {
		b, _ := os.ReadFile(name)
		return string(b)
	}
}

func waitStarted(t *testing.T, name string) (pid int) {
	t.Helper()
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(name)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "the fake make.bash did not start")
	return pid
}

// cacheEnv is the environment for a make or an install of the test's
// own: the user cache directory moved to cache, the go command's build
// cache kept where it is (it would follow, and make's go build would
// compile the standard library anew), and nothing of an enclosing make's
// (make test passes its command line, TAMAGO_GO_SRC included, to every
// make below it through MAKEFLAGS).
func cacheEnv(t *testing.T, cache string) []string {
	t.Helper()
	env, err := hostGoEnv(context.Background(), "GOCACHE")
	require.NoError(t, err)
	var out []string
	for _, kv := range env {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "TAMAGO_GO_SRC", "XDG_CACHE_HOME":
			continue
		}
		out = append(out, kv)
	}
	return append(out, "XDG_CACHE_HOME="+cache)
}

// buildCommand builds yolk-toolchain for the tests that kill it.
func buildCommand(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "yolk-toolchain")
	out, err := exec.Command("go", "build", "-o", bin, "yolk/qemu/cmd/yolk-toolchain").CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := qemu.ModuleRoot()
	require.NoError(t, err)
	return root
}

// On a machine with neither the toolchain nor a way to get it, make qemu
// fails with one sentence naming both remedies, and make test-qemu
// prints one SKIP: line and passes. Only such a machine can show it: with
// network access, make would clone and build.
func TestWithoutToolchainArchiveOrNetwork(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skipf("SKIP: make is not installed: %v", err)
	}
	in := &Installer{}
	if err := in.gitReachable(context.Background()); err == nil {
		t.Skipf("SKIP: %s is reachable from here, so make would install the toolchain over the network", Repo)
	}
	root := moduleRoot(t)
	env := cacheEnv(t, t.TempDir())
	remedies := regexp.MustCompile(`give this machine network access for upstream's installer, or run make toolchain TAMAGO_GO_SRC=/path/to/tamago-go1\.26\.0\.src\.tar\.gz \(a git archive of the tag\)\.$`)

	cmd := exec.Command("make", "-C", root, "--no-print-directory", "qemu", "BUILD="+t.TempDir())
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	require.Error(t, err, string(out))
	var said []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasPrefix(l, "yolk: ") {
			said = append(said, l)
		}
	}
	require.Len(t, said, 1, string(out))
	assert.Regexp(t, `^yolk: the TamaGo toolchain tamago-go1\.26\.0 is not installed at \S+ and cannot be installed here: there is no source archive, and git cannot reach https://github\.com/usbarmory/tamago-go \(.+\); `, said[0])
	assert.Regexp(t, remedies, said[0])

	start := time.Now()
	cmd = exec.Command("make", "-C", root, "--no-print-directory", "test-qemu", "BUILD="+t.TempDir())
	cmd.Env = env
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 1, string(out))
	assert.True(t, strings.HasPrefix(lines[0], "SKIP: QEMU tests: the TamaGo toolchain tamago-go1.26.0 is not installed at "), lines[0])
	assert.Regexp(t, remedies, lines[0])
	t.Logf("make test-qemu skipped in %v", time.Since(start).Round(time.Millisecond))
}
