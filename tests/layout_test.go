package tests

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu"
	"yolk/qemu/toolchain"
)

// goList runs `go list -deps` of pkg in the module root, with env added
// (a tamago build's), and returns the import paths.
func goList(t *testing.T, goCmd string, env []string, args ...string) []string {
	t.Helper()
	root, err := qemu.ModuleRoot()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goCmd, append([]string{"list", "-deps"}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	require.NoError(t, err, "%s list -deps %v: %s", goCmd, args, stderr)
	return strings.Fields(string(out))
}

// testCode names the packages among deps that are test code: the testing
// package and its helpers, mm's old test-package name, anything under
// yolk/tests, and any *test helper package of yolk's.
func testCode(deps []string) []string {
	var bad []string
	for _, p := range deps {
		switch {
		case p == "testing", strings.HasPrefix(p, "testing/"),
			strings.Contains(p, "vmtest"),
			p == "yolk/tests", strings.HasPrefix(p, "yolk/tests/"),
			strings.HasPrefix(p, "yolk/") && strings.HasSuffix(p, "test"),
			strings.HasPrefix(p, "github.com/stretchr/testify"):
			bad = append(bad, p)
		}
	}
	return bad
}

// The image carries no test code: not the testing package, not a test
// helper, nothing from tests/. (The vm scenario's model checker is
// mm/vmcheck, which is not a test package.)
func TestImageLinksNoTestCode(t *testing.T) {
	if err := toolchain.Check(); err != nil {
		t.Skipf("SKIP: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tamago, err := exec.CommandContext(ctx, "go", "tool", "-n", "github.com/usbarmory/tamago/cmd/tamago").Output()
	require.NoError(t, err)
	env := []string{"GOOS=tamago", "GOOSPKG=github.com/usbarmory/tamago", "GOARCH=arm", "GOARM=7"}
	for _, board := range []string{"mx6ullevk", "usbarmory"} {
		deps := goList(t, strings.TrimSpace(string(tamago)), env, "-tags", board+",linkramsize", ".")
		require.Contains(t, deps, "yolk/mm", "%s: the listing is not the image's", board)
		require.Contains(t, deps, "yolk/board/"+board)
		assert.Empty(t, testCode(deps), "%s image", board)
	}
}

// The harness is a program: it links no testing either.
func TestHarnessLinksNoTestCode(t *testing.T) {
	deps := goList(t, "go", nil, "./qemu/cmd/yolk-qemu")
	require.Contains(t, deps, "yolk/qemu/nbdserver")
	assert.Empty(t, testCode(deps))
}
