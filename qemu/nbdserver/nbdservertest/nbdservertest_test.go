package nbdservertest

import (
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"

	"yolk/qemu/nbdserver"
)

// fakeTB records Start's verdicts instead of acting on them.
type fakeTB struct {
	testing.TB
	skipped, fatal string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skipf(format string, a ...any) {
	f.skipped = fmt.Sprintf(format, a...)
}
func (f *fakeTB) Fatalf(format string, a ...any) {
	f.fatal = fmt.Sprintf(format, a...)
}

func TestStartSkipsOrFails(t *testing.T) {
	start := func(t *testing.T, ci string, cfg nbdserver.Config) *fakeTB {
		t.Setenv("CI", ci)
		f := &fakeTB{TB: t}
		assert.Nil(t, Start(f, cfg))
		return f
	}

	t.Run("missing", func(t *testing.T) {
		// qemu-nbd is looked for on PATH only (nbd-server also in
		// /usr/sbin), so an empty PATH makes it missing.
		t.Setenv("PATH", t.TempDir())
		f := start(t, "", nbdserver.Config{Kind: nbdserver.QemuNBD})
		assert.Equal(t, "qemu-nbd not installed (Debian package qemu-utils)", f.skipped)
		assert.Empty(t, f.fatal)
		f = start(t, "true", nbdserver.Config{Kind: nbdserver.QemuNBD})
		assert.Empty(t, f.skipped)
		assert.Equal(t, "qemu-nbd not installed (Debian package qemu-utils)", f.fatal)
	})
	t.Run("broken", func(t *testing.T) {
		if err := nbdserver.Available(nbdserver.NbdkitMemory); err != nil {
			t.Skip(err)
		}
		cfg := nbdserver.Config{Kind: nbdserver.NbdkitMemory, Params: []string{"no-such-param=1"}}
		f := start(t, "", cfg)
		assert.Equal(t, "nbdkit-memory did not start: exited before serving (exit status 1)", f.skipped)
		f = start(t, "1", cfg)
		assert.Contains(t, f.fatal, "nbdkit-memory: exited before serving (exit status 1)\nserver output:\n")
		assert.Contains(t, f.fatal, "unknown parameter 'no-such-param'")
	})
	t.Run("bad config", func(t *testing.T) {
		f := start(t, "", nbdserver.Config{Kind: nbdserver.QemuNBD, Filters: []string{"delay"}})
		assert.Contains(t, f.fatal, "takes no filters")
		assert.Empty(t, f.skipped)
	})
}

// A server that starts is stopped in the test's cleanup: nothing listens
// on its address afterwards.
func TestStartStopsInCleanup(t *testing.T) {
	var s *nbdserver.Server
	t.Run("run", func(t *testing.T) {
		s = Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: 1 << 20})
		assert.EqualValues(t, 1<<20, s.Size)
	})
	if s == nil {
		t.Skip("nbdkit did not start (see above)")
	}
	_, err := net.Dial("tcp", s.Addr)
	assert.Error(t, err, "something still listens on %s after the cleanup", s.Addr)
}
