package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A module small enough to mutate in seconds: Add is tested, Sub is not.
var module = map[string]string{
	"go.mod": "module toy\n\ngo 1.26\n",
	"toy.go": `package toy

func Add(a, b int) int { return a + b }

func Sub(a, b int) int { return a - b }
`,
	"toy_test.go": `package toy

import "testing"

func TestAdd(t *testing.T) {
	if Add(2, 3) != 5 {
		t.Fatal("2+3 != 5")
	}
}
`,
}

func patch(about, test, old, new string) string {
	return "# " + about + "\n# test: " + test + "\n" +
		"--- a/toy.go\n+++ b/toy.go\n@@ -1,5 +1,5 @@\n package toy\n \n" +
		"-" + old + "\n+" + new + "\n \n func Sub(a, b int) int { return a - b }\n"
}

var (
	addLine = "func Add(a, b int) int { return a + b }"
	caught  = patch("Add subtracts.", ". -run TestAdd", addLine, "func Add(a, b int) int { return a - b }")
	// Sub's line is the context here, so its mutant rewrites Add's line to
	// itself and Sub's below.
	survived = "# Sub adds.\n# test: . -run TestAdd\n" +
		"--- a/toy.go\n+++ b/toy.go\n@@ -3,3 +3,3 @@\n " + addLine + "\n \n" +
		"-func Sub(a, b int) int { return a - b }\n+func Sub(a, b int) int { return a + b }\n"
	stale  = patch("Add is a stale mutant.", ".", "func Add(x, y int) int { return x + y }", addLine)
	broken = patch("Add does not compile.", ".", addLine, "func Add(a, b int) int { return a - }")
)

// toy writes the module and mutants into a fresh git work tree, makes it
// the working directory, and returns the mutants' directory.
func toy(t *testing.T, mutants map[string]string) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: yolk-mutants lists the work tree with git")
	}
	dir := t.TempDir()
	for name, text := range module {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
	}
	mdir := filepath.Join(dir, "mutants")
	require.NoError(t, os.Mkdir(mdir, 0o755))
	for name, text := range mutants {
		require.NoError(t, os.WriteFile(filepath.Join(mdir, name+".patch"), []byte(text), 0o644))
	}
	out, err := exec.Command("git", "-C", dir, "init", "-q").CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Chdir(dir)
	return mdir
}

func runAll(t *testing.T, dir string) (bool, string) {
	t.Helper()
	ms, err := load(dir, nil)
	require.NoError(t, err)
	var out strings.Builder
	r := &runner{timeout: time.Minute, out: &out}
	ok, err := r.all(ms, false)
	require.NoError(t, err)
	return ok, out.String()
}

func TestEveryVerdict(t *testing.T) {
	dir := toy(t, map[string]string{"1-caught": caught, "2-survived": survived, "3-stale": stale, "4-broken": broken})
	ok, out := runAll(t, dir)
	t.Log(out)
	assert.False(t, ok)
	assert.Regexp(t, `(?m)^caught +1-caught +by TestAdd `, out)
	assert.Regexp(t, `(?m)^SURVIVED +2-survived: Sub adds\.$`, out)
	assert.Regexp(t, `(?m)^STALE +3-stale: the patch no longer applies`, out)
	assert.Regexp(t, `(?m)^BROKEN +4-broken: does not build`, out)
	assert.Contains(t, out, "mutants: 1 of 4 caught")
	// Every mutant was reverted: the one after the broken one would have
	// been stale otherwise, and the tree itself was never touched.
	src, err := os.ReadFile("toy.go")
	require.NoError(t, err)
	assert.Equal(t, module["toy.go"], string(src))
}

func TestAllCaught(t *testing.T) {
	dir := toy(t, map[string]string{"caught": caught})
	ok, out := runAll(t, dir)
	assert.True(t, ok, out)
	assert.Contains(t, out, "mutants: 1 of 1 caught")
}

// A test that fails before any mutant is planted proves nothing about
// the mutants: the run stops and says so.
func TestFailingBaseline(t *testing.T) {
	dir := toy(t, map[string]string{"caught": caught})
	require.NoError(t, os.WriteFile("toy.go", []byte(strings.Replace(module["toy.go"], "a + b", "a * b", 1)), 0o644))
	ms, err := load(dir, nil)
	require.NoError(t, err)
	var out strings.Builder
	_, err = (&runner{timeout: time.Minute, out: &out}).all(ms, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "fails without any mutant")
}

func TestParseRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"no-test":  "# About.\n--- a/x.go\n+++ b/x.go\n@@ -1 +1 @@\n-a\n+b\n",
		"no-about": "# test: ./x\n--- a/x.go\n+++ b/x.go\n@@ -1 +1 @@\n-a\n+b\n",
		"no-patch": "# About.\n# test: ./x\n",
	} {
		p := filepath.Join(dir, name+".patch")
		require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
		_, err := parse(p)
		assert.Error(t, err, name)
	}
}

// The repository's own mutants all parse, and each names its tests.
func TestRepositoryMutantsParse(t *testing.T) {
	ms, err := load(".", nil)
	require.NoError(t, err)
	for _, m := range ms {
		assert.NotEmpty(t, m.test, m.name)
		assert.NotEmpty(t, m.about, m.name)
	}
}
