// Package toolchain finds and installs the TamaGo Go distribution that
// builds yolk's image.
//
// Upstream's `go tool tamago` (github.com/usbarmory/tamago/cmd/tamago) runs
// the go command of the distribution named after the tamago module version
// (v1.26.0 → tamago-go1.26.0) from the user cache directory:
//
//	$XDG_CACHE_HOME/tamago-go/tamago-go1.26.0   (or ~/.cache/...)
//
// and, when it is not there, installs it itself: a git clone of
// usbarmory/tamago-go at that tag into that very directory, then its
// make.bash. That is all a machine with network access needs, but an
// interrupted clone or build leaves a directory that later runs may take
// for a toolchain, and a machine without network access has no way in at
// all.
//
// Install closes both gaps. It builds in a staging directory beside the
// final one, from a source archive of the tag (what `git archive` makes)
// when it is given one, or else by letting upstream's installer clone and
// build there; it renames the tree into place only once its bin/go answers
// `go version` with the release the tag names. So the final directory
// either holds a working toolchain or does not exist, whenever the build is
// interrupted; a staging directory left by a killed build is removed and
// the build redone. A lock file serialises concurrent installs (two image
// builds started at once).
package toolchain

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Version is the distribution that builds the image. It follows the
// tamago module version in go.mod (v1.26.0 → tamago-go1.26.0), the rule
// cmd/tamago applies; a test holds the two together.
const Version = "tamago-go1.26.0"

// Repo is where upstream's installer clones the distribution from.
const Repo = "https://github.com/usbarmory/tamago-go"

// BuildTime is what a build from source takes on the development host
// (2 cores); Install says it before starting one.
const BuildTime = "about 5 minutes on 2 cores"

// ErrOffline matches the error Install returns when there is neither a
// source archive nor network access to clone the source: the one case in
// which a caller may skip image work rather than fail.
var ErrOffline = errors.New("no source archive and no network access")

// OfflineError says why Repo could not be reached; it matches ErrOffline.
type OfflineError struct{ Reason error }

func (e *OfflineError) Error() string { return ErrOffline.Error() + ": " + e.Reason.Error() }

func (e *OfflineError) Is(target error) bool { return target == ErrOffline }

func (e *OfflineError) Unwrap() error { return e.Reason }

// Dir returns the directory cmd/tamago runs a distribution from: the user
// cache directory's tamago-go/VERSION.
func Dir(version string) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("TamaGo toolchain %s: no user cache directory: %w", version, err)
	}
	return filepath.Join(cache, "tamago-go", version), nil
}

// Check returns nil when the distribution is installed where cmd/tamago
// looks for it, or an error that says in one sentence what is missing,
// where it was expected and how to get it.
func Check() error {
	dir, err := Dir(Version)
	if err != nil {
		return err
	}
	if _, err := os.Stat(goBin(dir)); err != nil {
		return fmt.Errorf("the TamaGo toolchain %s is not installed at %s (make toolchain installs it: see README, \"The TamaGo toolchain\")", Version, dir)
	}
	return nil
}

// Installer installs one version of the distribution into Dir.
type Installer struct {
	// Version is the distribution, e.g. tamago-go1.26.0.
	Version string
	// Dir is the final directory; Dir(Version) when empty.
	Dir string
	// Archive, when set, is a .tar.gz of the distribution's source tree at
	// the tag, without a top-level directory (what `git archive` makes).
	Archive string
	// Bootstrap is the Go installation make.bash builds with
	// (GOROOT_BOOTSTRAP); `go env GOROOT` of the go command on PATH when
	// empty.
	Bootstrap string
	// Upstream is the command that runs upstream's installer, run in
	// ModuleDir with the user cache directory pointed at the staging
	// directory: `go tool tamago version` when nil.
	Upstream []string
	// ModuleDir is the yolk module, where `go tool tamago` resolves.
	ModuleDir string
	// Reachable reports whether upstream's installer can clone Repo; nil
	// asks git (ls-remote of the tag).
	Reachable func(ctx context.Context) error
	// Log receives what Install says and what the build prints; os.Stderr
	// when nil.
	Log io.Writer

	lockFile *os.File // held while installing; build steps inherit it
}

// Install makes the distribution available at Dir and returns nil, doing
// nothing when it already is. It returns an error wrapping ErrOffline
// when it has no archive and cannot reach Repo.
func (in *Installer) Install(ctx context.Context) error {
	if err := in.defaults(); err != nil {
		return err
	}
	if ok, err := in.installed(); ok || err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(in.Dir), 0o755); err != nil {
		return err
	}
	unlock, err := in.lock(filepath.Dir(in.Dir))
	if err != nil {
		return err
	}
	defer unlock()
	// Another install may have finished while this one waited.
	if ok, err := in.installed(); ok || err != nil {
		return err
	}

	staging := in.staging()
	if _, err := os.Lstat(staging); err == nil {
		in.logf("yolk: removing %s, left by an interrupted build", staging)
	}
	if err := os.RemoveAll(staging); err != nil {
		return err
	}
	start := time.Now()
	if in.Archive != "" {
		err = in.fromArchive(ctx, staging)
	} else {
		err = in.fromUpstream(ctx, staging)
	}
	if err == nil {
		err = in.verify(ctx, in.stagedRoot())
	}
	if err == nil {
		err = os.Rename(in.stagedRoot(), in.Dir)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		// What was built is useless without the rest; a later run would
		// remove it anyway, but a finished failure need not leave 500 MB
		// behind.
		os.RemoveAll(staging)
		return fmt.Errorf("installing the TamaGo toolchain %s: %w", in.Version, err)
	}
	os.RemoveAll(staging)
	in.logf("yolk: installed %s at %s in %v", in.Version, in.Dir, time.Since(start).Round(time.Second))
	return nil
}

func (in *Installer) defaults() error {
	if in.Version == "" {
		in.Version = Version
	}
	if !strings.HasPrefix(in.Version, "tamago-go") {
		return fmt.Errorf("toolchain: %q is not a TamaGo Go version (tamago-goX.Y.Z)", in.Version)
	}
	if in.Dir == "" {
		dir, err := Dir(in.Version)
		if err != nil {
			return err
		}
		in.Dir = dir
	}
	if in.Log == nil {
		in.Log = os.Stderr
	}
	return nil
}

// installed reports whether Dir holds the distribution. Install only ever
// renames a verified tree into place, so its bin/go is enough to go by;
// a Dir without one was made by something else (upstream's installer,
// interrupted) and is refused rather than built over.
func (in *Installer) installed() (bool, error) {
	if _, err := os.Stat(goBin(in.Dir)); err == nil {
		return true, nil
	}
	if _, err := os.Lstat(in.Dir); err == nil {
		return false, fmt.Errorf("%s exists but has no bin/go: an interrupted install by `go tool tamago`? Remove it and run make toolchain again", in.Dir)
	}
	return false, nil
}

// The staging directory sits beside Dir, on the same file system, so the
// finished tree can be renamed into place. It is laid out as a user cache
// directory, because upstream's installer, pointed at it through
// XDG_CACHE_HOME, builds into its tamago-go/VERSION; the archive is
// unpacked to the same place.
func (in *Installer) staging() string { return in.Dir + ".partial" }

func (in *Installer) stagedRoot() string {
	return filepath.Join(in.staging(), "tamago-go", in.Version)
}

// goVersion is the release the distribution's go command reports:
// tamago-go1.26.0 → go1.26.0.
func (in *Installer) goVersion() string { return strings.TrimPrefix(in.Version, "tamago-") }

func (in *Installer) logf(format string, args ...any) { fmt.Fprintf(in.Log, format+"\n", args...) }

// fromArchive unpacks the archive into the staging tree and runs its
// make.bash with the host's Go as the bootstrap toolchain.
func (in *Installer) fromArchive(ctx context.Context, staging string) error {
	root := in.stagedRoot()
	in.logf("yolk: building the TamaGo toolchain %s from %s into %s: %s", in.Version, in.Archive, in.Dir, BuildTime)
	commit, err := unpack(in.Archive, root)
	if err != nil {
		return err
	}
	if err := in.checkRelease(root, commit); err != nil {
		return err
	}
	boot := in.Bootstrap
	if boot == "" {
		out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
		if err != nil {
			return fmt.Errorf("finding the host Go for GOROOT_BOOTSTRAP: %w", err)
		}
		boot = strings.TrimSpace(string(out))
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "src", "make.bash"))
	cmd.Dir = filepath.Join(root, "src")
	cmd.Env = append(buildEnv(root), "GOROOT_BOOTSTRAP="+boot)
	return in.run(ctx, cmd, "make.bash")
}

// checkRelease holds the unpacked tree to the version asked for: its
// VERSION file's first line is the Go release (go1.26.0).
func (in *Installer) checkRelease(root, commit string) error {
	b, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		return fmt.Errorf("%s is not a tamago-go source archive: it has no VERSION file", in.Archive)
	}
	release, _, _ := strings.Cut(string(b), "\n")
	if release = strings.TrimSpace(release); release != in.goVersion() {
		return fmt.Errorf("%s holds the source of %s, not %s", in.Archive, release, in.goVersion())
	}
	if _, err := os.Stat(filepath.Join(root, "src", "make.bash")); err != nil {
		return fmt.Errorf("%s is not a tamago-go source archive: it has no src/make.bash", in.Archive)
	}
	if commit != "" {
		in.logf("yolk: %s is tamago-go commit %s", in.Archive, commit)
	}
	return nil
}

// fromUpstream lets cmd/tamago clone and build, with the user cache
// directory pointed at the staging directory so that it builds there.
func (in *Installer) fromUpstream(ctx context.Context, staging string) error {
	reach := in.Reachable
	if reach == nil {
		reach = in.gitReachable
	}
	if err := reach(ctx); err != nil {
		return &OfflineError{Reason: err}
	}
	in.logf("yolk: installing the TamaGo toolchain %s into %s with upstream's installer (git clone of %s, then make.bash): %s", in.Version, in.Dir, Repo, BuildTime)
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return err
	}
	argv := in.Upstream
	if argv == nil {
		argv = []string{"go", "tool", "tamago", "version"}
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = in.ModuleDir
	// The go command's build cache would follow the cache directory into
	// the staging tree; keep it where it is.
	env, err := hostGoEnv(ctx, "GOCACHE")
	if err != nil {
		return err
	}
	cmd.Env = append(env, "XDG_CACHE_HOME="+staging)
	return in.run(ctx, cmd, "upstream's installer")
}

func (in *Installer) gitReachable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "ls-remote", "--exit-code", Repo, "refs/tags/"+in.Version)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		// git says e.g. "fatal: unable to access 'URL': Could not resolve
		// host: github.com"; the part after the URL is the reason.
		msg := lastLine(strings.TrimSpace(string(out)))
		if _, after, ok := strings.Cut(msg, "': "); ok {
			msg = after
		}
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("git cannot reach %s (%s)", Repo, msg)
	}
	return nil
}

// run runs a build step with its output on the log, in a process group
// of its own. Cancelling ctx interrupts the whole group (SIGINT, as ^C
// would, then SIGKILL), so no compiler goes on writing into a tree that
// is about to be removed. The step inherits the lock: if this process is
// killed outright, a later install waits for the orphaned build to end
// before it removes the staging directory.
func (in *Installer) run(ctx context.Context, cmd *exec.Cmd, what string) error {
	cmd.Stdout = in.Log
	cmd.Stderr = in.Log
	cmd.ExtraFiles = []*os.File{in.lockFile}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if cmd.Process != nil && ctx.Err() != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// verify runs the staged go command: only a tree whose bin/go answers
// with the expected release is ever renamed into place.
func (in *Installer) verify(ctx context.Context, root string) error {
	cmd := exec.CommandContext(ctx, goBin(root), "version")
	cmd.Env = append(buildEnv(root), "GOROOT="+root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("the build finished but %s version fails: %v: %s", goBin(root), err, strings.TrimSpace(string(out)))
	}
	want := "go version " + in.goVersion() + " "
	if !strings.HasPrefix(string(out), want) {
		return fmt.Errorf("the build finished but %s version says %q, not %q", goBin(root), strings.TrimSpace(string(out)), want+"...")
	}
	return nil
}

// buildEnv is the environment a distribution is built and run in: the
// host's, without the variables that would point the go command at
// another Go or another target, and with its bin first on PATH (which
// make.bash checks for).
func buildEnv(root string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOROOT", "GOOS", "GOARCH", "GOARM", "GOOSPKG", "GOTOOLCHAIN", "PATH":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH="+filepath.Join(root, "bin")+string(filepath.ListSeparator)+os.Getenv("PATH"),
		"GOTOOLCHAIN=local")
}

// hostGoEnv is the host's environment with the named go settings fixed to
// their current values, so that changing XDG_CACHE_HOME does not move
// them.
func hostGoEnv(ctx context.Context, names ...string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "go", append([]string{"env"}, names...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("go env %s: %w", strings.Join(names, " "), err)
	}
	env := os.Environ()
	for i, v := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if i < len(names) {
			env = append(env, names[i]+"="+v)
		}
	}
	return env, nil
}

func goBin(root string) string {
	name := "go"
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	return filepath.Join(root, "bin", name)
}

// unpack extracts a gzipped tar into dir, which it creates, and returns
// the commit `git archive` recorded in the pax global header, if any.
// Every entry stays inside dir (os.Root refuses anything that would
// leave it, through .. or a symbolic link); only directories, regular
// files and relative symbolic links are taken.
func unpack(archive, dir string) (commit string, err error) {
	f, err := os.Open(archive)
	if err != nil {
		return "", err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return "", fmt.Errorf("%s is not a gzipped tar archive: %w", archive, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return commit, nil
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", archive, err)
		}
		name := path.Clean(h.Name)
		if !filepath.IsLocal(name) && name != "." {
			return "", fmt.Errorf("%s: entry %q leaves the tree", archive, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeXGlobalHeader:
			commit = h.PAXRecords["comment"]
		case tar.TypeDir:
			err = root.MkdirAll(name, 0o755)
		case tar.TypeReg:
			err = writeFile(root, name, tr, h.FileInfo().Mode())
		case tar.TypeSymlink:
			if err = mkdirParent(root, name); err == nil {
				err = root.Symlink(h.Linkname, name)
			}
		default:
			err = fmt.Errorf("entry %q has type %q, which a source tree does not need", h.Name, h.Typeflag)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", archive, err)
		}
	}
}

func mkdirParent(root *os.Root, name string) error {
	if d := path.Dir(name); d != "." {
		return root.MkdirAll(d, 0o755)
	}
	return nil
}

func writeFile(root *os.Root, name string, r io.Reader, mode os.FileMode) error {
	if err := mkdirParent(root, name); err != nil {
		return err
	}
	perm := os.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// lock takes an exclusive lock on the directory that holds the
// distributions, waiting (and saying so) while another install holds it.
func (in *Installer) lock(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		in.logf("yolk: waiting for another install in %s to finish", dir)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", dir, err)
		}
	}
	in.lockFile = f
	return func() { in.lockFile = nil; f.Close() }, nil
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
