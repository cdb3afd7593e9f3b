// Command yolk-mutants checks that the tests catch the bugs they are meant
// to catch (make mutants).
//
//	yolk-mutants [-run REGEXP] [-timeout 5m] [-keep] [-v] [DIR]
//
// Each mutant is a planted bug, kept as a patch in DIR (default: the
// directory of this command's source, mutants/) with a header naming the
// tests that must catch it:
//
//	# Copy-on-write reuse decided by map count alone.
//	# Stands for: CVE-2020-29374, a get_user_pages holder seeing a later write.
//	# test: ./mm -run TestCOW
//	--- a/mm/memory.go
//	+++ b/mm/memory.go
//	@@ ...
//
// The test line holds go test's arguments after -count=1: packages, -run,
// and any flag the mutant needs (-race, -tags). yolk-mutants copies the
// working tree (tracked and untracked files, not ignored ones) to a
// scratch directory, runs every test line once on the unchanged copy (a
// test that already fails catches nothing), then for each mutant applies
// the patch, runs its tests, and reverts it. A mutant is caught when its
// tests fail; it survived when they pass. A patch that no longer applies,
// or a mutant that does not build, is an error too: the list must be
// kept up to date with the code it mutates.
//
// Exit status: 0 every mutant caught, 1 otherwise, 2 bad usage.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// A mutant is one planted bug.
type mutant struct {
	name  string   // the patch's file name without .patch
	path  string   // the patch file
	about string   // its first comment line
	test  []string // go test arguments after -count=1
}

func main() {
	run := flag.String("run", "", "only the mutants whose names match this regular expression")
	timeout := flag.Duration("timeout", 5*time.Minute, "go test's -timeout for each run: a mutant that hangs its tests this long counts as caught")
	keep := flag.Bool("keep", false, "keep the scratch copy and print where it is")
	verbose := flag.Bool("v", false, "print the tests' output for every mutant, not only for those that survive")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: yolk-mutants [-run REGEXP] [-timeout D] [-keep] [-v] [DIR]\n")
		flag.PrintDefaults()
		fmt.Fprintf(os.Stderr, "exit status: 0 every mutant caught, 1 otherwise, 2 usage\n")
	}
	flag.Parse()
	dir := "mutants"
	switch flag.NArg() {
	case 0:
	case 1:
		dir = flag.Arg(0)
	default:
		flag.Usage()
		os.Exit(2)
	}
	var sel *regexp.Regexp
	if *run != "" {
		var err error
		if sel, err = regexp.Compile(*run); err != nil {
			fmt.Fprintf(os.Stderr, "yolk-mutants: -run: %v\n", err)
			os.Exit(2)
		}
	}
	ms, err := load(dir, sel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "yolk-mutants: %v\n", err)
		os.Exit(1)
	}
	r := &runner{timeout: *timeout, verbose: *verbose, out: os.Stdout}
	ok, err := r.all(ms, *keep)
	if err != nil {
		fmt.Fprintf(os.Stderr, "yolk-mutants: %v\n", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// load reads every *.patch in dir whose name sel matches (all if nil).
func load(dir string, sel *regexp.Regexp) ([]*mutant, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.patch"))
	if err != nil {
		return nil, err
	}
	var ms []*mutant
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".patch")
		if sel != nil && !sel.MatchString(name) {
			continue
		}
		m, err := parse(p)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no mutants (*.patch) in %s match", dir)
	}
	return ms, nil
}

// parse reads a mutant's header and checks that a patch follows it.
func parse(path string) (*mutant, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := &mutant{name: strings.TrimSuffix(filepath.Base(path), ".patch"), path: path}
	sc := bufio.NewScanner(f)
	header, patched := true, false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case header && strings.HasPrefix(line, "#"):
			text := strings.TrimSpace(strings.TrimPrefix(line, "#"))
			if t, ok := strings.CutPrefix(text, "test:"); ok {
				m.test = strings.Fields(t)
			} else if m.about == "" {
				m.about = text
			}
		case strings.HasPrefix(line, "+++ "):
			header = false
			file := strings.Fields(strings.TrimPrefix(line, "+++ "))
			if len(file) == 0 || !strings.HasPrefix(file[0], "b/") {
				return nil, fmt.Errorf("%s: %q: want +++ b/PATH", path, line)
			}
			patched = true
		case strings.HasPrefix(line, "--- "), strings.HasPrefix(line, "diff "):
			header = false
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	switch {
	case m.about == "":
		return nil, fmt.Errorf("%s: no description: the first line should be a # comment saying what bug this is", path)
	case len(m.test) == 0:
		return nil, fmt.Errorf("%s: no \"# test: PACKAGES -run REGEXP\" line", path)
	case !patched:
		return nil, fmt.Errorf("%s: no patch (no +++ b/PATH line)", path)
	}
	return m, nil
}

type runner struct {
	timeout time.Duration
	verbose bool
	out     io.Writer
	scratch string
}

// all runs the baseline and then every mutant, printing a line for each,
// and reports whether every mutant was caught.
func (r *runner) all(ms []*mutant, keep bool) (bool, error) {
	start := time.Now()
	scratch, err := os.MkdirTemp("", "yolk-mutants-")
	if err != nil {
		return false, err
	}
	r.scratch = scratch
	if keep {
		fmt.Fprintf(r.out, "scratch copy: %s\n", scratch)
	} else {
		defer os.RemoveAll(scratch)
	}
	if err := copyTree(scratch); err != nil {
		return false, err
	}

	// The baseline: each distinct test line must pass before any mutant
	// is planted, or its failure under a mutant would prove nothing.
	var lines [][]string
	for _, m := range ms {
		if !slices.ContainsFunc(lines, func(l []string) bool { return slices.Equal(l, m.test) }) {
			lines = append(lines, m.test)
		}
	}
	for _, l := range lines {
		t0 := time.Now()
		out, err := r.goTest(l)
		if err != nil {
			fmt.Fprintf(r.out, "%s\n", out)
			return false, fmt.Errorf("baseline: go test %s fails without any mutant (%v): fix the tree first", strings.Join(l, " "), err)
		}
		fmt.Fprintf(r.out, "baseline  go test %s  (%.1fs)\n", strings.Join(l, " "), time.Since(t0).Seconds())
	}

	caught := 0
	for _, m := range ms {
		if r.one(m) {
			caught++
		}
	}
	fmt.Fprintf(r.out, "mutants: %d of %d caught in %s\n", caught, len(ms), time.Since(start).Round(time.Second))
	return caught == len(ms), nil
}

// one plants m, runs its tests, reverts it, and reports whether it was
// caught.
func (r *runner) one(m *mutant) bool {
	t0 := time.Now()
	patch, err := filepath.Abs(m.path)
	if err != nil {
		fmt.Fprintf(r.out, "ERROR     %s: %v\n", m.name, err)
		return false
	}
	if out, err := r.git("apply", patch); err != nil {
		fmt.Fprintf(r.out, "STALE     %s: the patch no longer applies (%s): update it to the code it mutates\n", m.name, firstLine(out))
		return false
	}
	defer func() {
		if out, err := r.git("apply", "-R", patch); err != nil {
			// The scratch copy is now unreliable for every later mutant.
			fmt.Fprintf(r.out, "yolk-mutants: reverting %s: %s\n", m.name, firstLine(out))
			os.Exit(1)
		}
	}()
	out, err := r.goTest(m.test)
	secs := time.Since(t0).Seconds()
	var exit *exec.ExitError
	switch {
	case err == nil:
		fmt.Fprintf(r.out, "SURVIVED  %s: %s\n          go test %s passed with it planted (%.1fs)\n", m.name, m.about, strings.Join(m.test, " "), secs)
		if r.verbose {
			r.out.Write(out)
		}
		return false
	case bytes.Contains(out, []byte("[build failed]")) || bytes.Contains(out, []byte("[setup failed]")):
		fmt.Fprintf(r.out, "BROKEN    %s: does not build with the tree (%.1fs):\n%s\n", m.name, secs, out)
		return false
	case !errors.As(err, &exit):
		fmt.Fprintf(r.out, "ERROR     %s: go test: %v\n", m.name, err)
		return false
	}
	fmt.Fprintf(r.out, "caught    %-36s by %s (%.1fs)\n", m.name, failedTests(out), secs)
	if r.verbose {
		r.out.Write(out)
	}
	return true
}

// goTest runs go test -count=1 with args in the scratch copy.
func (r *runner) goTest(args []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout+time.Minute)
	defer cancel()
	full := append([]string{"test", "-count=1", "-timeout", r.timeout.String()}, args...)
	cmd := exec.CommandContext(ctx, "go", full...)
	cmd.Dir = r.scratch
	cmd.Env = cleanEnv()
	return cmd.CombinedOutput()
}

func (r *runner) git(args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = r.scratch
	cmd.Env = cleanEnv()
	return cmd.CombinedOutput()
}

// cleanEnv is the environment without make's variables, which make test
// would otherwise hand down to every make a test runs.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		for _, v := range []string{"MAKEFLAGS=", "MFLAGS=", "MAKELEVEL=", "GIT_DIR=", "GIT_WORK_TREE="} {
			if strings.HasPrefix(kv, v) {
				return true
			}
		}
		return false
	})
}

var failRE = regexp.MustCompile(`(?m)^\s*--- FAIL: (\S+)|^panic: test timed out`)

// failedTests names the failing tests in go test's output (the top-level
// ones, and a timeout), or says how it failed when none is named.
func failedTests(out []byte) string {
	var names []string
	for _, m := range failRE.FindAllSubmatch(out, -1) {
		n := string(m[1])
		if n == "" {
			n = "a test timeout"
		}
		if top, _, _ := strings.Cut(n, "/"); !slices.Contains(names, top) {
			names = append(names, top)
		}
	}
	if len(names) == 0 {
		return "a failing test binary: " + firstLine(lastFailure(out))
	}
	if len(names) > 3 {
		return strings.Join(names[:3], ", ") + fmt.Sprintf(" and %d more", len(names)-3)
	}
	return strings.Join(names, ", ")
}

func lastFailure(out []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if l := bytes.TrimSpace(lines[i]); len(l) > 0 && !bytes.HasPrefix(l, []byte("FAIL")) {
			return l
		}
	}
	return out
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// copyTree copies the working tree into dst: what git tracks plus
// untracked files that are not ignored, so that uncommitted tests and
// patches are what runs. git apply in dst then works without a
// repository, as patch(1) would.
func copyTree(dst string) error {
	out, err := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		return fmt.Errorf("listing the working tree (run from the repository): %w", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if f == "" {
			continue
		}
		fi, err := os.Lstat(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted but not yet committed
		}
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		p := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, fi.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}
