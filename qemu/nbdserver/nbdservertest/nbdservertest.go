// Package nbdservertest starts the NBD servers of package nbdserver for
// tests and benchmarks: each one stopped in the test's cleanup, its output
// logged if the test failed.
//
// A server that cannot run here (its program is missing, or it does not
// come up) skips the test with one line saying why, e.g. "nbd-server not
// installed (Debian package nbd-server)", and fails it instead, with the
// server's output, when the environment variable CI is set: CI installs
// every server, so there a skip would hide a broken machine. A bad Config
// always fails the test.
//
// It is the only part of the NBD server support that imports testing, so
// that programs (the QEMU harness) can use nbdserver without linking it.
package nbdservertest

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"yolk/qemu/nbdserver"
)

// Start starts a server for t, as described in the package doc.
func Start(t testing.TB, cfg nbdserver.Config) *nbdserver.Server {
	t.Helper()
	if err := nbdserver.Validate(cfg); err != nil {
		t.Fatalf("%v", err)
		return nil
	}
	if err := nbdserver.Available(cfg.Kind); err != nil {
		skipOrFail(t, err, err.Error())
		return nil
	}
	s, err := nbdserver.Start(cfg)
	if err != nil {
		var se *nbdserver.StartError
		if errors.As(err, &se) {
			skipOrFail(t, err, fmt.Sprintf("%s did not start: %s", cfg.Kind, se.Reason))
		} else {
			t.Fatalf("%v", err)
		}
		return nil
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nbdserver: %s at %s, output:\n%s", s.Kind, s.Addr, s.Output())
		}
		if err := s.Stop(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return s
}

func skipOrFail(t testing.TB, err error, line string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%v", err)
		return
	}
	t.Skipf("%s", line)
}
