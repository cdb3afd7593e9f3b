// These tests start NBD servers on the host (qemu/nbdserver), which does
// not build for the image.

//go:build !tamago

package nbd

// The client against real servers (nbdkit memory and file, qemu-nbd,
// nbd-server), started on loopback by yolk/qemu/nbdserver. A server that is
// not installed skips its subtests (or fails them under $CI). Every client
// has a watchdog (watchdog_test.go), so that a bug fails these tests in
// seconds rather than hanging them.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
)

const testExport = "yolk"

// dialServer dials s for t, with a watchdog, and closes the client in t's
// cleanup.
func dialServer(t *testing.T, s *nbdserver.Server, mod func(*Config)) *Client {
	t.Helper()
	if name, ok := stuckOn.Load(s); ok {
		t.Fatalf("not dialling %s again: the client of %s got stuck on it (see there)", s.Kind, name)
	}
	cfg := Config{
		Addr:             s.Addr,
		Export:           s.Export,
		RequestTimeout:   20 * time.Second,
		ConnectTimeout:   5 * time.Second,
		ReconnectTimeout: 20 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	watch(t, s, c, callerLine(1))
	t.Cleanup(func() { c.Close() })
	return c
}

func randBytes(r *rand.Rand, n int64) []byte {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], r.Uint64())
	b := make([]byte, n)
	rand.NewChaCha8(seed).Read(b) // in blocks: cheap under the race detector
	return b
}

// TestServers runs the client suite against each kind of server.
func TestServers(t *testing.T) {
	for _, kind := range nbdserver.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			const size = 64 << 20
			s := nbdservertest.Start(t, nbdserver.Config{Kind: kind, Size: size, Export: testExport})
			serverSuite(t, kind, s, size)
		})
	}
}

func serverSuite(t *testing.T, kind nbdserver.Kind, s *nbdserver.Server, size int64) {
	t.Run("handshake", func(t *testing.T) {
		c := dialServer(t, s, nil)
		info := c.Info()
		t.Logf("%s: %+v features %v", kind, info, c.Features())
		assert.Equal(t, size, c.Size())
		assert.Equal(t, 512, c.BlockSize())
		assert.Equal(t, 1, info.Conns)
		require.NoError(t, c.ReadAt(make([]byte, 4096), 0))

		simple := dialServer(t, s, func(c *Config) { c.NoStructuredReplies = true })
		assert.False(t, simple.Info().Structured)
		require.NoError(t, simple.ReadAt(make([]byte, 4096), 0))

		other, err := Dial(context.Background(), Config{Addr: s.Addr, Export: "no-such-export"})
		switch kind {
		case nbdserver.NbdkitMemory, nbdserver.NbdkitFile:
			// nbdkit's plugins serve any name alike.
			if assert.NoError(t, err) {
				assert.NoError(t, other.Close())
			}
		default:
			assert.ErrorIs(t, err, ErrUnknownExport)
		}
	})

	t.Run("round trips", func(t *testing.T) {
		for _, structured := range []bool{true, false} {
			c := dialServer(t, s, func(c *Config) { c.NoStructuredReplies = !structured })
			r := rand.New(rand.NewPCG(uint64(len(kind)), map[bool]uint64{true: 1, false: 2}[structured]))
			model := make([]byte, size)
			require.NoError(t, c.ReadAt(model, 0), "the device as it is")
			// Larger than the maximum payload: split.
			big := randBytes(r, 40<<20)
			require.NoError(t, c.WriteAt(big, 8<<20, 0))
			copy(model[8<<20:], big)
			for range 300 {
				off := r.Int64N(size/512) * 512
				n := min(r.Int64N(256)*512+512, size-off)
				if r.IntN(2) == 0 {
					b := randBytes(r, n)
					require.NoError(t, c.WriteAt(b, off, 0))
					copy(model[off:], b)
				} else {
					b := make([]byte, n)
					require.NoError(t, c.ReadAt(b, off))
					require.True(t, bytes.Equal(model[off:off+n], b), "read of %d at %d", n, off)
				}
			}
			all := make([]byte, size)
			require.NoError(t, c.ReadAt(all, 0))
			require.True(t, bytes.Equal(model, all), "the whole device")
			st := c.Stats()
			assert.Greater(t, st.Requests[blk.OpRead], uint64(2), "the 64 MiB read was split")
			require.NoError(t, c.Close())
		}
	})

	t.Run("FUA and flush", func(t *testing.T) {
		c := dialServer(t, s, nil)
		r := rand.New(rand.NewPCG(7, 7))
		b := randBytes(r, 64<<10)
		// FUA is honoured whatever the server offers (a flush after the
		// write when it has no FUA).
		require.NoError(t, c.WriteAt(b, 1<<20, blk.FUA))
		b2 := randBytes(r, 64<<10)
		require.NoError(t, c.WriteAt(b2, 2<<20, 0))
		require.NoError(t, c.Flush())
		got := make([]byte, 64<<10)
		require.NoError(t, c.ReadAt(got, 1<<20))
		assert.Equal(t, b, got)
		if s.File != "" && c.Features()&blk.FlushFeature != 0 {
			// Flushed: in the backing file.
			f, err := os.Open(s.File)
			require.NoError(t, err)
			defer f.Close()
			_, err = f.ReadAt(got, 2<<20)
			require.NoError(t, err)
			assert.Equal(t, b2, got, "the backing file after Flush")
		}
	})

	t.Run("trim and write zeroes", func(t *testing.T) {
		c := dialServer(t, s, nil)
		ones := bytes.Repeat([]byte{0xa5}, 1<<20)
		require.NoError(t, c.WriteAt(ones, 4<<20, 0))
		got := make([]byte, 1<<20)
		if c.Features()&blk.WriteZeroesFeature != 0 {
			require.NoError(t, c.WriteZeroes(4<<20, 256<<10, 0))
			require.NoError(t, c.WriteZeroes(4<<20+256<<10, 256<<10, blk.NoHole))
			require.NoError(t, c.ReadAt(got, 4<<20))
			assert.Equal(t, make([]byte, 512<<10), got[:512<<10], "zeroed")
			assert.Equal(t, ones[512<<10:], got[512<<10:], "untouched")
		} else {
			assert.ErrorIs(t, c.WriteZeroes(4<<20, 4096, 0), blk.ErrUnsupported)
		}
		if c.Features()&blk.TrimFeature != 0 {
			require.NoError(t, c.Trim(4<<20+512<<10, 512<<10))
			// Trimmed contents are unspecified until written again.
			require.NoError(t, c.WriteAt(ones[:4096], 4<<20+512<<10, 0))
			require.NoError(t, c.ReadAt(got[:4096], 4<<20+512<<10))
			assert.Equal(t, ones[:4096], got[:4096])
		} else {
			assert.ErrorIs(t, c.Trim(4<<20, 4096), blk.ErrUnsupported)
		}
	})

	t.Run("multi-conn", func(t *testing.T) {
		c := dialServer(t, s, func(c *Config) { c.Conns = 4 })
		if c.Features()&blk.MultiConn == 0 {
			assert.Equal(t, 1, c.Info().Conns, "one connection without CAN_MULTI_CONN")
			t.Skipf("%s does not advertise NBD_FLAG_CAN_MULTI_CONN: one connection used", kind)
		}
		require.Equal(t, 4, c.Info().Conns)
		concurrentRoundTrips(t, c, 32, 40<<20, 8<<20)
		if c.Features()&blk.FlushFeature != 0 {
			require.NoError(t, c.Flush())
		}
	})

	t.Run("pipelined", func(t *testing.T) {
		c := dialServer(t, s, func(c *Config) { c.MaxInFlight = 16 })
		concurrentRoundTrips(t, c, 64, 48<<20, 8<<20)
		st := c.Stats()
		t.Logf("%s: %d requests, peak %d in flight", kind, st.Requests[blk.OpRead]+st.Requests[blk.OpWrite], st.PeakInFlight)
		assert.Greater(t, st.PeakInFlight, uint64(1), "requests were pipelined")
		assert.LessOrEqual(t, st.PeakInFlight, uint64(16))
	})

	t.Run("refused locally", func(t *testing.T) {
		c := dialServer(t, s, nil)
		for _, tc := range []struct {
			err  error
			call func() error
		}{
			{blk.ErrAlign, func() error { return c.ReadAt(make([]byte, 512), 100) }},
			{blk.ErrAlign, func() error { return c.WriteAt(make([]byte, 100), 0, 0) }},
			{blk.ErrRange, func() error { return c.ReadAt(make([]byte, 1024), size-512) }},
			{blk.ErrRange, func() error { return c.WriteAt(make([]byte, 512), size, 0) }},
			{blk.ErrRange, func() error { return c.ReadAt(make([]byte, 512), -512) }},
		} {
			err := tc.call()
			var re *blk.RequestError
			require.ErrorAs(t, err, &re)
			assert.ErrorIs(t, err, tc.err)
		}
		assert.Equal(t, Stats{}.Requests, c.Stats().Requests, "nothing was sent")
	})

	t.Run("close sends DISC", func(t *testing.T) {
		c := dialServer(t, s, func(c *Config) { c.Conns = 2 })
		require.NoError(t, c.ReadAt(make([]byte, 512), 0))
		require.NoError(t, c.Close())
		// A server closes the connection in response to NBD_CMD_DISC
		// only.
		assert.Equal(t, uint64(c.Info().Conns), c.Stats().CleanDisconnect)
		assert.ErrorIs(t, c.ReadAt(make([]byte, 512), 0), blk.ErrClosed)
	})
}

// concurrentRoundTrips runs workers, each writing and reading its own
// region of [base, base+span), many calls in flight at once.
func concurrentRoundTrips(t *testing.T, c *Client, workers int, span, base int64) {
	t.Helper()
	region := span / int64(workers) / 512 * 512
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 99))
			start := base + int64(w)*region
			model := make([]byte, region)
			if !callOK(t, c, c.ReadAt(model, start)) {
				return
			}
			for range 40 {
				off := r.Int64N(region/512) * 512
				n := min(r.Int64N(64)*512+512, region-off)
				b := randBytes(r, n)
				if !callOK(t, c, c.WriteAt(b, start+off, 0)) {
					return
				}
				copy(model[off:], b)
			}
			got := make([]byte, region)
			if callOK(t, c, c.ReadAt(got, start)) {
				assert.True(t, bytes.Equal(model, got), "worker %d's region", w)
			}
		}()
	}
	wg.Wait()
}

// TestErrorFilter: nbdkit's error filter fails some writes with EIO. Those
// reach the caller as *blk.RequestError wrapping ErrIO; every write
// acknowledged OK reads back.
func TestErrorFilter(t *testing.T) {
	const size, bs = 16 << 20, 4096
	s := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: size,
		Filters: []string{"error"}, Params: []string{"error=EIO", "error-pwrite-rate=5%"}})
	c := dialServer(t, s, nil)
	// known[i]: block i's contents as acknowledged; nil after a failed
	// write, whose effect is unspecified.
	known := make([][]byte, size/bs)
	for i := range known {
		known[i] = make([]byte, bs)
	}
	var mu sync.Mutex
	var failed, ok atomic.Int32
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 5))
			for range 250 {
				// Workers own the blocks ≡ w mod 8.
				i := r.Int64N(size/bs/8)*8 + int64(w)
				b := randBytes(r, bs)
				err := c.WriteAt(b, i*bs, 0)
				var se *ServerError
				mu.Lock()
				switch {
				case err == nil:
					known[i] = b
					ok.Add(1)
				case errors.As(err, &se):
					known[i] = nil
					failed.Add(1)
					var re *blk.RequestError
					if assert.ErrorAs(t, err, &re) {
						assert.Equal(t, blk.OpWrite, re.Op)
						assert.Equal(t, i*bs, re.Off)
					}
					assert.Equal(t, EIO, se.Errno)
					assert.ErrorIs(t, err, blk.ErrIO)
				default:
					// Not the filter's: the worker stops, since
					// its next writes would meet the same trouble.
					known[i] = nil
					mu.Unlock()
					callOK(t, c, err)
					return
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("error filter: %d writes failed, %d succeeded; %+v", failed.Load(), ok.Load(), c.Stats())
	assert.NotZero(t, failed.Load(), "the filter injected errors")
	assert.NotZero(t, ok.Load())
	assert.Zero(t, c.Stats().ConnectionsLost, "server errors keep the connection")
	all := make([]byte, size)
	require.NoError(t, c.ReadAt(all, 0), "reads are not failed by the filter")
	for i, b := range known {
		if b != nil && !bytes.Equal(b, all[i*bs:(i+1)*bs]) {
			t.Fatalf("block %d: acknowledged write did not read back", i)
		}
	}
}

// TestDelayFilter: reads that take 300ms complete when the deadline is
// longer, and fail with ErrTimeout when it is shorter, after which the
// client reconnects and goes on.
func TestDelayFilter(t *testing.T) {
	s := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: 1 << 20,
		Filters: []string{"delay"}, Params: []string{"delay-read=300ms"}})

	t.Run("long deadline", func(t *testing.T) {
		c := dialServer(t, s, func(c *Config) { c.RequestTimeout = 5 * time.Second })
		start := time.Now()
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				assert.NoError(t, c.ReadAt(make([]byte, 4096), int64(i)*4096))
			}()
		}
		wg.Wait()
		took := time.Since(start)
		assert.GreaterOrEqual(t, took, 300*time.Millisecond)
		t.Logf("4 delayed reads in parallel took %v", took)
		assert.Zero(t, c.Stats().Timeouts)
	})

	t.Run("short deadline", func(t *testing.T) {
		c := dialServer(t, s, func(c *Config) { c.RequestTimeout = 100 * time.Millisecond })
		start := time.Now()
		err := c.ReadAt(make([]byte, 4096), 0)
		took := time.Since(start)
		var re *blk.RequestError
		require.ErrorAs(t, err, &re)
		assert.ErrorIs(t, err, blk.ErrTimeout)
		assert.GreaterOrEqual(t, took, 100*time.Millisecond)
		assert.Less(t, took, 300*time.Millisecond, "failed at the deadline, not at the reply")
		// Writes are not delayed: they go through on a new connection.
		b := bytes.Repeat([]byte{7}, 4096)
		require.NoError(t, c.WriteAt(b, 8192, 0))
		st := c.Stats()
		assert.Equal(t, uint64(1), st.Timeouts)
		assert.Equal(t, uint64(1), st.Reconnects)
		t.Logf("timed out after %v; %+v", took, st)
	})
}

// TestServerKilledMidStream: writers keep writing while the server is
// killed and restarted on the same address and file. The client
// reconnects and resends what was in flight; every write acknowledged,
// before the kill or after, reads back.
func TestServerKilledMidStream(t *testing.T) {
	for _, kind := range []nbdserver.Kind{nbdserver.NbdkitFile, nbdserver.QemuNBD, nbdserver.NBDServer} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			const size, bs, workers, perWorker = 16 << 20, 4096, 8, 300
			s := nbdservertest.Start(t, nbdserver.Config{Kind: kind, Size: size, Export: testExport})
			c := dialServer(t, s, func(c *Config) { c.MaxInFlight = 8 })
			known := make([][]byte, size/bs)
			var mu sync.Mutex
			var done atomic.Int32
			var failures int
			kill := make(chan struct{})
			var killed atomic.Bool
			var killOnce sync.Once
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(w), 11))
					for range perWorker {
						i := r.Int64N(size/bs/workers)*workers + int64(w)
						b := randBytes(r, bs)
						err := c.WriteAt(b, i*bs, 0)
						mu.Lock()
						if err == nil {
							known[i] = b
						} else {
							known[i] = nil
							failures++
						}
						mu.Unlock()
						// Only a reconnect after the kill that took
						// too long may fail a write; after anything
						// else the worker stops.
						if err != nil && !(killed.Load() && errors.Is(err, blk.ErrDisconnected)) {
							callOK(t, c, err)
							return
						}
						if done.Add(1) == workers*perWorker/3 {
							killOnce.Do(func() { close(kill) })
						}
					}
				}()
			}
			finished := make(chan struct{})
			go func() {
				wg.Wait()
				close(finished)
			}()
			// However the test ends, the writers end first: they
			// report on t.
			defer func() { <-finished }()
			select {
			case <-kill:
			case <-finished:
				t.Fatalf("the writers stopped after %d of their %d writes, before the kill", done.Load(), workers*perWorker)
			}
			killed.Store(true)
			require.NoError(t, s.Kill())
			killedAt := time.Now()
			require.NoError(t, s.Restart())
			t.Logf("%s killed and restarted in %v", kind, time.Since(killedAt))
			<-finished

			st := c.Stats()
			t.Logf("%s: %d calls failed; %+v", kind, failures, st)
			assert.GreaterOrEqual(t, st.Reconnects, uint64(1))
			if c.Features()&blk.FlushFeature != 0 {
				err := c.Flush()
				t.Logf("%s: first Flush after the restart: %v", kind, err)
				if st.LostWriteback > 0 {
					assert.ErrorIs(t, err, blk.ErrDisconnected, "acknowledged writes were on the lost connection")
				}
				require.NoError(t, c.Flush())
			}
			all := make([]byte, size)
			require.NoError(t, c.ReadAt(all, 0))
			for i, b := range known {
				if b != nil && !bytes.Equal(b, all[int64(i)*bs:int64(i+1)*bs]) {
					t.Fatalf("block %d: acknowledged write did not read back", i)
				}
			}
		})
	}
}
