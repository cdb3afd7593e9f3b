package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleRoot walks up from the working directory to yolk's go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module yolk\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("qemu: not inside the yolk module")
		}
		dir = parent
	}
}

// Make runs a make target in the module root with VAR=value arguments. The
// Makefile is the one recipe for images, so tests build exactly what
// `make image` and `make imx` build.
func Make(ctx context.Context, target string, vars ...string) error {
	out, err := MakeOutput(ctx, target, vars...)
	if err != nil {
		return fmt.Errorf("make %s %v: %w\n%s", target, vars, err, out)
	}
	return nil
}

// MakeOutput is Make returning the combined output; err is the *exec.ExitError
// of a failed make.
func MakeOutput(ctx context.Context, target string, vars ...string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "make", append([]string{"-C", root, "--no-print-directory", target}, vars...)...)
	cmd.Env = freshMakeEnv(os.Environ())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// freshMakeEnv drops what a make running the tests passes down to its
// sub-makes (its flags, jobserver, command-line variables such as APPEND
// or BUILD, and its depth), so that the make a test runs is the one it
// asks for, as if run from a shell.
func freshMakeEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS":
			continue
		}
		out = append(out, kv)
	}
	return out
}
