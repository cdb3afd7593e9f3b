package scenarios

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/board"
	"yolk/mm/phys"
	"yolk/runtime/result"
	"yolk/runtime/scenario"
)

// echoServer is a loopback echo server (one connection at a time is
// enough) that stops with the test.
func echoServer(t *testing.T, mangle bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if mangle {
					buf := make([]byte, 8)
					io.ReadFull(c, buf)
					c.Write([]byte("not-the-nonce-at-all-xxxxxxxxxxxxx"))
					return
				}
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func runSelftest(t *testing.T, pool []byte, b board.Info, append string) (int, map[string]result.Line) {
	t.Helper()
	code, out := runLine(t, "scenario=selftest "+append, func(env *scenario.Env) {
		env.Board = b
		env.Pool = pool
		if pool != nil {
			env.Phys, env.PhysErr = phys.New(phys.Config{Mem: pool, Base: b.Memory.Pool.Start})
		}
		env.Net = &net.Dialer{}
	})
	checks := map[string]result.Line{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l, err := result.Parse(sc.Text())
		require.NoError(t, err)
		if l.Event == "check" || l.Event == "result" {
			checks[l.Event+":"+l.Value("name")] = l
		}
	}
	return code, checks
}

func TestSelftestPasses(t *testing.T) {
	pool := make([]byte, smallBoard.Memory.Pool.Size)
	code, checks := runSelftest(t, pool, smallBoard, "scenario=selftest host="+echoServer(t, false))
	assert.Equal(t, scenario.ExitPass, code)
	for _, c := range []string{"memmap", "pool-size", "pool-rw", "phys-orders", "echo"} {
		assert.Equal(t, "true", checks["check:"+c].Value("ok"), c)
	}
	// The pattern really went to both ends of the pool.
	assert.NotEqual(t, make([]byte, board.PageSize), pool[:board.PageSize])
	assert.NotEqual(t, make([]byte, board.PageSize), pool[len(pool)-board.PageSize:])
}

func TestSelftestFailures(t *testing.T) {
	pool := make([]byte, smallBoard.Memory.Pool.Size)
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		a := ln.Addr().String()
		ln.Close()
		return a
	}()

	t.Run("refused", func(t *testing.T) {
		code, checks := runSelftest(t, pool, smallBoard, "host="+closed)
		assert.Equal(t, scenario.ExitFail, code)
		assert.Equal(t, "false", checks["check:echo"].Value("ok"))
		assert.Contains(t, checks["check:echo"].Value("err"), "dial")
	})
	t.Run("mangled echo", func(t *testing.T) {
		code, checks := runSelftest(t, pool, smallBoard, "timeout=2s host="+echoServer(t, true))
		assert.Equal(t, scenario.ExitFail, code)
		assert.Contains(t, checks["check:echo"].Value("err"), "mismatch")
	})
	t.Run("no host", func(t *testing.T) {
		code, checks := runSelftest(t, pool, smallBoard, "")
		assert.Equal(t, scenario.ExitFail, code)
		assert.Contains(t, checks["check:echo"].Value("err"), "no host")
	})
	t.Run("pool missing", func(t *testing.T) {
		code, checks := runSelftest(t, nil, smallBoard, "host="+echoServer(t, false))
		assert.Equal(t, scenario.ExitFail, code)
		assert.Equal(t, "false", checks["check:pool-rw"].Value("ok"))
		assert.Contains(t, checks["check:phys-orders"].Value("err"), "no page allocator")
	})
	t.Run("pool too short", func(t *testing.T) {
		code, checks := runSelftest(t, pool[:len(pool)-board.PageSize], smallBoard, "host="+echoServer(t, false))
		assert.Equal(t, scenario.ExitFail, code)
		assert.Contains(t, checks["check:pool-rw"].Value("err"), "memory map says")
	})
	t.Run("bad map", func(t *testing.T) {
		b := smallBoard
		b.Memory.DMA.Start = b.Memory.Pool.Start
		code, checks := runSelftest(t, pool, b, "host="+echoServer(t, false))
		assert.Equal(t, scenario.ExitFail, code)
		assert.Contains(t, checks["check:memmap"].Value("err"), "overlap")
	})
	t.Run("bad timeout param", func(t *testing.T) {
		code, _ := runSelftest(t, pool, smallBoard, "timeout=soon host="+echoServer(t, false))
		assert.Equal(t, scenario.ExitUsage, code)
	})
}

// If the pool's two ends aliased the same memory, the second fill would
// overwrite the first and the read-back would catch it: that only works when
// the patterns differ, which they must for every board's pool.
func TestPoolPatternsDistinguishEnds(t *testing.T) {
	for _, r := range []board.Region{smallBoard.Memory.Pool, {Start: 0x88000000, Size: 380 << 20}} {
		a, b := make([]byte, board.PageSize), make([]byte, board.PageSize)
		fill(a, r.Start)
		fill(b, r.End()-board.PageSize)
		assert.GreaterOrEqual(t, mismatch(a, b), 0, "patterns at both ends of %v are identical", r)
	}
}
