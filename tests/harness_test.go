package tests

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu"
)

var harnessOnce struct {
	sync.Once
	path string
	err  error
}

// harness builds the yolk-qemu command as make qemu does.
func harness(t testing.TB) string {
	t.Helper()
	harnessOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		harnessOnce.err = qemu.Make(ctx, "harness", "BUILD="+buildDir)
		harnessOnce.path = filepath.Join(buildDir, "yolk-qemu")
	})
	require.NoError(t, harnessOnce.err)
	return harnessOnce.path
}

// runHarness runs yolk-qemu and returns its exit status, its console
// (stdout) and what it said of the run (stderr).
func runHarness(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	cmd := exec.Command(harness(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return code, out.String(), errOut.String()
}

// The harness exits with the image's status whenever the image gave one,
// shows the console once, and keeps its own codes for its own failures.
func TestHarnessExitStatus(t *testing.T) {
	img := evkImage(t)
	t.Run("runtime crash", func(t *testing.T) {
		code, console, said := runHarness(t, "-image", img, "scenario=crash")
		assert.Equal(t, 4, code, said)
		assert.Equal(t, 1, strings.Count(console, "panic: crash scenario"), "the console is shown once:\n%s", console)
		assert.NotContains(t, said, "panic: crash scenario", "and not again in the harness's summary")
		assert.Contains(t, said, "yolk-qemu: the Go runtime died (no verdict; the panic is above), QEMU exit status 4")
	})
	t.Run("scenario fails", func(t *testing.T) {
		code, _, said := runHarness(t, "-image", img, "scenario=selftest", "host=10.0.2.2:1", "timeout=3s")
		assert.Equal(t, 1, code, said)
		assert.Contains(t, said, "yolk-qemu: scenario selftest fail, QEMU exit status 1")
		assert.NotContains(t, said, "echo server", "host= was given, so the harness started no echo server")
	})
	t.Run("bad parameters", func(t *testing.T) {
		code, console, said := runHarness(t, "-image", img, "scenario=vm", "stpes=10")
		assert.Equal(t, 2, code, said)
		assert.Contains(t, console, `err="bad boot parameter stpes=10 is not a parameter of vm (did you mean steps=?)`)
		assert.Contains(t, said, "yolk-qemu: scenario vm refused its boot parameters, QEMU exit status 2")
	})
	t.Run("no services for a scenario that takes none", func(t *testing.T) {
		code, console, said := runHarness(t, "-image", img, "scenario=sleep", "duration=1ms")
		assert.Equal(t, 0, code, said)
		assert.Contains(t, console, "yolk: params scenario=sleep duration=1ms\n")
		assert.NotContains(t, said, "echo server")
	})
	t.Run("timeout", func(t *testing.T) {
		code, _, said := runHarness(t, "-image", img, "-timeout", "3s", "scenario=sleep", "duration=10m")
		assert.Equal(t, 124, code, said)
		assert.Contains(t, said, "killed after 3s")
	})
	t.Run("no image", func(t *testing.T) {
		code, _, said := runHarness(t, "-image", filepath.Join(t.TempDir(), "missing.elf"))
		assert.Equal(t, 125, code, said)
		assert.Contains(t, said, "before the image reported an exit")
	})
	t.Run("usage", func(t *testing.T) {
		code, _, said := runHarness(t, "-h")
		assert.Equal(t, 0, code)
		assert.Contains(t, said, "124 timed out, 125 QEMU or a host service could not run the image")
		code, _, _ = runHarness(t)
		assert.Equal(t, 2, code)
	})
}
