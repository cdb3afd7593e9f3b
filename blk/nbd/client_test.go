package nbd

// End-to-end tests of the client against the scripted server: what no real
// server does on demand (crafted replies, a reply held back, a flush
// observed against the writes it must wait for).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
)

// farm serves every connection a client dials, all on one memDisk, with a
// hook that sees each request first (conn is the connection's index in
// dial order).
type farm struct {
	t    *testing.T
	d    *pipeDialer
	opts srvOpts
	mem  *memDisk
	hook func(conn int, s *srvConn, r srvReq) bool

	mu    sync.Mutex
	conns []*srvConn
	seen  map[int][]srvReq // requests per connection, once it ended
	ended chan int         // a connection's index when it ends
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startFarm(t *testing.T, o srvOpts, hook func(conn int, s *srvConn, r srvReq) bool) (*farm, Config) {
	if o.size == 0 {
		o.size = 1 << 20
	}
	f := &farm{t: t, d: newPipeDialer(), opts: o, mem: newMemDisk(int(o.size)), hook: hook,
		seen: map[int][]srvReq{}, ended: make(chan int, 100), stop: make(chan struct{})}
	f.wg.Add(1)
	go f.acceptLoop()
	t.Cleanup(func() {
		close(f.stop)
		f.wg.Wait()
	})
	return f, pipeConfig(f.d)
}

func (f *farm) acceptLoop() {
	defer f.wg.Done()
	for {
		select {
		case <-f.stop:
			return
		case c := <-f.d.conns:
			f.mu.Lock()
			i := len(f.conns)
			s := &srvConn{c: c, br: bufio.NewReader(c), opts: f.opts}
			f.conns = append(f.conns, s)
			o := f.opts
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				s.opts = o
				if err := s.handshake(); err != nil {
					f.ended <- i
					return
				}
				var hook func(*srvConn, srvReq) bool
				if f.hook != nil {
					hook = func(s *srvConn, r srvReq) bool { return f.hook(i, s, r) }
				}
				seen, _ := s.serve(f.mem, hook)
				f.mu.Lock()
				f.seen[i] = seen
				f.mu.Unlock()
				f.ended <- i
			}()
		}
	}
}

// conn returns the server end of connection i.
func (f *farm) conn(i int) *srvConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns[i]
}

// waitEnded waits for connection i to end and returns what it saw.
func (f *farm) waitEnded(i int) []srvReq {
	f.t.Helper()
	for {
		f.mu.Lock()
		seen, ok := f.seen[i]
		f.mu.Unlock()
		if ok {
			return seen
		}
		select {
		case <-f.ended:
		case <-time.After(10 * time.Second):
			f.t.Fatalf("server connection %d did not end", i)
		}
	}
}

// waitConn waits until every slot of c is up on a generation of at least
// gen (1 is the connection Dial made).
func waitConn(t *testing.T, c *Client, gen uint64) {
	t.Helper()
	for _, cn := range c.conns {
		for {
			cn.mu.Lock()
			ok := cn.state == stateUp && cn.gen >= gen
			ch := cn.changed
			cn.mu.Unlock()
			if ok {
				break
			}
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				t.Fatalf("connection %d not up on generation %d", cn.id, gen)
			}
		}
	}
}

// waitLost waits until c's first slot has left generation gen.
func waitLost(t *testing.T, c *Client, gen uint64) {
	t.Helper()
	cn := c.conns[0]
	for {
		cn.mu.Lock()
		ok := cn.gen > gen || cn.state != stateUp
		ch := cn.changed
		cn.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("connection generation %d not lost", gen)
		}
	}
}

func cmds(reqs []srvReq) []uint16 {
	var out []uint16
	for _, r := range reqs {
		out = append(out, r.cmd)
	}
	return out
}

func TestScriptedHandshakeVariants(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    srvOpts
		cfg  func(*Config)
		want ExportInfo
	}{
		{"structured, NBD_OPT_GO, block sizes",
			srvOpts{structured: true, export: "e", flags: FlagSendFlush, blockSizes: [3]uint32{512, 4096, 1 << 20}}, nil,
			ExportInfo{Size: 1 << 20, TransmissionFlags: FlagHasFlags | FlagSendFlush, MinBlock: 512, PreferredBlock: 4096, MaxPayload: 1 << 20, Structured: true, Conns: 1}},
		{"simple replies by choice",
			srvOpts{structured: true, export: "e"}, func(c *Config) { c.NoStructuredReplies = true },
			ExportInfo{Size: 1 << 20, TransmissionFlags: FlagHasFlags, MinBlock: 1, PreferredBlock: 4096, MaxPayload: 32 << 20, Conns: 1}},
		{"NBD_OPT_EXPORT_NAME fallback, NO_ZEROES",
			srvOpts{structured: true, export: "e", noGo: true, noZeroes: true}, nil,
			ExportInfo{Size: 1 << 20, TransmissionFlags: FlagHasFlags, MinBlock: 1, PreferredBlock: 4096, MaxPayload: 32 << 20, Structured: true, Conns: 1}},
		{"NBD_OPT_EXPORT_NAME fallback with zeroes",
			srvOpts{export: "e", noGo: true}, nil,
			ExportInfo{Size: 1 << 20, TransmissionFlags: FlagHasFlags, MinBlock: 1, PreferredBlock: 4096, MaxPayload: 32 << 20, Conns: 1}},
		{"plain newstyle",
			srvOpts{export: "e", noFixed: true}, nil,
			ExportInfo{Size: 1 << 20, TransmissionFlags: FlagHasFlags, MinBlock: 1, PreferredBlock: 4096, MaxPayload: 32 << 20, Conns: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, cfg := startFarm(t, tc.o, nil)
			cfg.Export = "e"
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			c, err := Dial(context.Background(), cfg)
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.Info())
			assert.Equal(t, 512, c.BlockSize())
			p := pattern(8192, 9)
			require.NoError(t, c.WriteAt(p, 4096, 0))
			got := make([]byte, 8192)
			require.NoError(t, c.ReadAt(got, 4096))
			assert.Equal(t, p, got)
			require.NoError(t, c.Close())
			assert.Equal(t, []uint16{cmdWrite, cmdRead, cmdDisc}, cmds(f.waitEnded(0)))
		})
	}

	t.Run("unknown export", func(t *testing.T) {
		_, cfg := startFarm(t, srvOpts{export: "e"}, nil)
		cfg.Export = "nope"
		_, err := Dial(context.Background(), cfg)
		require.ErrorIs(t, err, ErrUnknownExport)
		assert.ErrorContains(t, err, "no export nope")
	})
}

// TestScriptedHostileReplies runs every hostile reply through a client: the
// request it concerns fails with ErrProtocol, the connection is dropped and
// re-established, the other requests in flight are resent (the flush,
// which is not, fails with ErrDisconnected), and the device works on.
func TestScriptedHostileReplies(t *testing.T) {
	for _, tc := range hostileReplies(roles{}) {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan srvReq, 4)
			var k roles
			var armed atomic.Bool
			armed.Store(true)
			f, cfg := startFarm(t, srvOpts{structured: tc.structured, flags: FlagSendFlush}, func(conn int, s *srvConn, r srvReq) bool {
				if conn != 0 {
					return false
				}
				got <- r
				switch {
				case r.cmd == cmdFlush:
					k.flush = r.cookie
				case r.cmd == cmdWrite:
					k.write = r.cookie
				case r.cmd == cmdRead && r.length == 1024:
					k.read = r.cookie
				case r.cmd == cmdRead:
					k.small = r.cookie
				}
				if k.read != 0 && k.write != 0 && k.flush != 0 && k.small != 0 && armed.Swap(false) {
					// Crafted for the cookies the client chose.
					for _, hc := range hostileReplies(k) {
						if hc.name == tc.name {
							s.write(hc.in)
						}
					}
				}
				return true
			})
			c, err := Dial(context.Background(), cfg)
			require.NoError(t, err)
			defer c.Close()

			// One at a time onto the wire, so that all four are in
			// flight together (the flush first: it would wait for a
			// write in flight).
			results := make([]chan error, 4)
			calls := []func() error{
				func() error { return c.Flush() },
				func() error { return c.ReadAt(make([]byte, 1024), 4096) },
				func() error { return c.WriteAt(pattern(512, 1), 0, 0) },
				func() error { return c.ReadAt(make([]byte, 512), 0) },
			}
			for i, call := range calls {
				results[i] = make(chan error, 1)
				go func() { results[i] <- call() }()
				<-got
			}
			errs := make([]error, 4)
			for i := range results {
				errs[i] = <-results[i]
			}
			var affected uint64 // tc's is for cookies 0
			for _, hc := range hostileReplies(k) {
				if hc.name == tc.name {
					affected = hc.affected
				}
			}
			cookies := []uint64{k.flush, k.read, k.write, k.small}
			for i, err := range errs {
				switch {
				case cookies[i] == affected:
					var re *blk.RequestError
					require.ErrorAs(t, err, &re, "call %d", i)
					assert.ErrorIs(t, err, blk.ErrProtocol, "call %d", i)
				case i == 0:
					assert.ErrorIs(t, err, blk.ErrDisconnected, "the flush in flight")
				default:
					assert.NoError(t, err, "call %d, resent", i)
				}
			}
			st := c.Stats()
			assert.Equal(t, uint64(1), st.ProtocolErrors)
			assert.Equal(t, uint64(1), st.ConnectionsLost)
			assert.Equal(t, uint64(1), st.Reconnects)
			f.waitEnded(0) // the client dropped it

			// And the device works on the new connection.
			p := pattern(4096, 5)
			require.NoError(t, c.WriteAt(p, 8192, 0))
			b := make([]byte, 4096)
			require.NoError(t, c.ReadAt(b, 8192))
			assert.Equal(t, p, b)
		})
	}
}

func TestScriptedErrorsKeepTheConnection(t *testing.T) {
	var n atomic.Int32
	_, cfg := startFarm(t, srvOpts{structured: true}, func(_ int, s *srvConn, r srvReq) bool {
		switch n.Add(1) {
		case 1:
			s.write(errorChunk(replyFlagDone, 0x8123, r.cookie, uint32(EIO), "a kind of error from the future", []byte{1, 2}))
		case 2:
			s.write(errorChunk(replyFlagDone, replyTypeError, r.cookie, uint32(ENOSPC), "full", nil))
		case 3:
			s.write(simpleReply(r.cookie, uint32(EPERM), nil))
		default:
			return false
		}
		return true
	})
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	defer c.Close()
	err = c.ReadAt(make([]byte, 512), 1024)
	var re *blk.RequestError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, blk.RequestError{Device: "nbd:scripted", Op: blk.OpRead, Off: 1024, Len: 512, Err: re.Err}, *re)
	assert.ErrorIs(t, err, blk.ErrIO)
	var se *ServerError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "a kind of error from the future", se.Message)
	assert.ErrorIs(t, c.WriteAt(make([]byte, 512), 0, 0), blk.ErrNoSpace)
	assert.ErrorIs(t, c.WriteAt(make([]byte, 512), 0, 0), blk.ErrReadOnly)
	require.NoError(t, c.ReadAt(make([]byte, 512), 0))
	st := c.Stats()
	assert.Zero(t, st.ConnectionsLost)
	assert.Equal(t, uint64(3), st.ServerErrors)
}

func TestScriptedTimeoutDropsTheConnection(t *testing.T) {
	held := make(chan srvReq, 1)
	f, cfg := startFarm(t, srvOpts{structured: true}, func(conn int, s *srvConn, r srvReq) bool {
		if conn == 0 && r.cmd == cmdRead {
			held <- r // and never answered
			return true
		}
		return false
	})
	cfg.RequestTimeout = 200 * time.Millisecond
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	defer c.Close()
	start := time.Now()
	err = c.ReadAt(make([]byte, 512), 0)
	took := time.Since(start)
	assert.ErrorIs(t, err, blk.ErrTimeout)
	var re *blk.RequestError
	assert.ErrorAs(t, err, &re)
	assert.GreaterOrEqual(t, took, 200*time.Millisecond)
	<-held
	// The reply may still come: the connection must go.
	assert.Equal(t, []uint16{cmdRead}, cmds(f.waitEnded(0)))
	require.NoError(t, c.ReadAt(make([]byte, 512), 0), "on the new connection")
	st := c.Stats()
	assert.Equal(t, uint64(1), st.Timeouts)
	assert.Equal(t, uint64(1), st.Reconnects)
	assert.Zero(t, st.Resent)
}

// TestScriptedStuckWriteTimesOut: a server that stops reading leaves the
// client's write blocked; the write deadline ends it with ErrTimeout.
func TestScriptedStuckWriteTimesOut(t *testing.T) {
	stuck := make(chan struct{})
	d := newPipeDialer()
	cfg := pipeConfig(d)
	cfg.RequestTimeout = 200 * time.Millisecond
	go func() {
		s := accept(t, d, srvOpts{structured: true, size: 1 << 20})
		if s == nil {
			return
		}
		go func() {
			<-stuck // reads nothing more
			s.c.Close()
		}()
		// The second connection is served honestly.
		if s2 := accept(t, d, srvOpts{structured: true, size: 1 << 20}); s2 != nil {
			s2.serve(newMemDisk(1<<20), nil)
		}
	}()
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	defer c.Close()
	start := time.Now()
	err = c.WriteAt(make([]byte, 64<<10), 0, 0)
	took := time.Since(start)
	close(stuck)
	assert.ErrorIs(t, err, blk.ErrTimeout)
	assert.GreaterOrEqual(t, took, 200*time.Millisecond)
	assert.Less(t, took, 2*time.Second)
	require.NoError(t, c.WriteAt(make([]byte, 64<<10), 0, 0), "on a new connection")
	assert.Equal(t, uint64(1), c.Stats().Timeouts)
}

func TestScriptedLostConnectionResends(t *testing.T) {
	var held sync.WaitGroup
	held.Add(2)
	f, cfg := startFarm(t, srvOpts{structured: true, flags: FlagSendFlush}, func(conn int, s *srvConn, r srvReq) bool {
		if conn == 0 {
			held.Done() // neither is answered on this connection
			return true
		}
		return false
	})
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	defer c.Close()
	p := pattern(4096, 3)
	f.mem.mu.Lock()
	copy(f.mem.b[65536:], p)
	f.mem.mu.Unlock()

	rerr, werr := make(chan error, 1), make(chan error, 1)
	got := make([]byte, 4096)
	go func() { rerr <- c.ReadAt(got, 65536) }()
	go func() { werr <- c.WriteAt(p, 0, 0) }()
	held.Wait()
	f.conn(0).c.Close() // the server goes away with both in flight
	require.NoError(t, <-rerr)
	require.NoError(t, <-werr)
	assert.Equal(t, p, got)
	f.mem.mu.Lock()
	assert.Equal(t, p, f.mem.b[:4096])
	f.mem.mu.Unlock()
	st := c.Stats()
	assert.Equal(t, uint64(2), st.Resent)
	assert.Equal(t, uint64(1), st.Reconnects)
	assert.Zero(t, st.LostWriteback, "nothing was acknowledged on the lost connection")
	require.NoError(t, c.Flush())
}

func TestScriptedESHUTDOWN(t *testing.T) {
	f, cfg := startFarm(t, srvOpts{structured: true}, func(conn int, s *srvConn, r srvReq) bool {
		if conn == 0 && r.cmd == cmdRead {
			s.write(errorChunk(replyFlagDone, replyTypeError, r.cookie, uint32(ESHUTDOWN), "going down", nil))
			return true
		}
		return false
	})
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.ReadAt(make([]byte, 512), 0), "resent on a new connection")
	// The spec: on NBD_ESHUTDOWN the client initiates a soft disconnect.
	assert.Equal(t, []uint16{cmdRead, cmdDisc}, cmds(f.waitEnded(0)))
	assert.Equal(t, uint64(1), c.Stats().Resent)
}

func TestScriptedFlushReportsLostWriteback(t *testing.T) {
	f, cfg := startFarm(t, srvOpts{structured: true, flags: FlagSendFlush | FlagSendFUA | FlagSendTrim}, nil)
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	defer c.Close()
	gen := uint64(1)
	// crash drops the server's end of the current connection and waits
	// for the client to be back.
	crash := func() {
		t.Helper()
		f.conn(int(gen - 1)).c.Close()
		waitLost(t, c, gen)
		gen++
		waitConn(t, c, gen)
	}

	// Acknowledged, not flushed, connection lost: the next Flush says so,
	// once.
	require.NoError(t, c.WriteAt(make([]byte, 512), 0, 0))
	crash()
	err = c.Flush()
	assert.ErrorIs(t, err, blk.ErrDisconnected)
	var re *blk.RequestError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, blk.OpFlush, re.Op)
	require.NoError(t, c.Flush(), "reported once")

	// A trim counts as well.
	require.NoError(t, c.Trim(0, 512))
	crash()
	assert.ErrorIs(t, c.Flush(), blk.ErrDisconnected)
	require.NoError(t, c.Flush())

	// FUA writes are durable when acknowledged.
	require.NoError(t, c.WriteAt(make([]byte, 512), 0, blk.FUA))
	crash()
	require.NoError(t, c.Flush())

	// Flushed before the loss: nothing to report.
	require.NoError(t, c.WriteAt(make([]byte, 512), 0, 0))
	require.NoError(t, c.Flush())
	crash()
	require.NoError(t, c.Flush())
	assert.Equal(t, uint64(2), c.Stats().LostWriteback)
}

func TestScriptedFlushInFlightWhenTheConnectionIsLost(t *testing.T) {
	got := make(chan struct{}, 1)
	f, cfg := startFarm(t, srvOpts{structured: true, flags: FlagSendFlush}, func(conn int, s *srvConn, r srvReq) bool {
		if conn == 0 && r.cmd == cmdFlush {
			got <- struct{}{}
			return true
		}
		return false
	})
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.WriteAt(make([]byte, 512), 0, 0))
	ferr := make(chan error, 1)
	go func() { ferr <- c.Flush() }()
	<-got
	f.conn(0).c.Close()
	err = <-ferr
	assert.ErrorIs(t, err, blk.ErrDisconnected, "not resent: the server may have lost what it covered")
	require.NoError(t, c.Flush(), "the failed flush reported the loss")
	assert.Equal(t, uint64(1), c.Stats().LostWriteback)
	assert.Zero(t, c.Stats().Resent)
}

// TestScriptedFlushWaitsForWritesInFlight: with two connections, a Flush
// must not send NBD_CMD_FLUSH before the replies of the writes made before
// it, on either connection, and must not wait for writes made after it.
func TestScriptedFlushWaitsForWritesInFlight(t *testing.T) {
	type held struct {
		s *srvConn
		r srvReq
	}
	writes := make(chan held, 2)
	var flushed atomic.Bool
	var wrongOrder atomic.Bool
	var mu sync.Mutex
	replied := map[uint64]bool{} // writes by offset
	f, cfg := startFarm(t, srvOpts{structured: true, flags: FlagSendFlush | FlagCanMultiConn}, func(conn int, s *srvConn, r srvReq) bool {
		switch r.cmd {
		case cmdWrite:
			writes <- held{s, r}
			return true
		case cmdFlush:
			mu.Lock()
			if !replied[0] {
				wrongOrder.Store(true)
			}
			mu.Unlock()
			flushed.Store(true)
		}
		return false
	})
	cfg.Conns = 2
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	defer c.Close()
	require.Equal(t, 2, c.Info().Conns)
	answer := func(h held) {
		mu.Lock()
		replied[h.r.off] = true
		mu.Unlock()
		h.s.write(h.s.reply(f.mem, h.r))
	}

	w1 := make(chan error, 1)
	go func() { w1 <- c.WriteAt(pattern(512, 1), 0, 0) }()
	h1 := <-writes

	waiting := make(chan struct{})
	c.bar.testWait = func() { close(waiting) }
	ferr := make(chan error, 1)
	go func() { ferr <- c.Flush() }()
	select {
	case <-waiting: // Flush is waiting for the write
	case err := <-ferr:
		t.Fatalf("Flush returned (%v) without waiting for the write in flight", err)
	}
	assert.False(t, flushed.Load(), "NBD_CMD_FLUSH sent before the write's reply")

	// A write after Flush was called: not covered, not waited for.
	w2 := make(chan error, 1)
	go func() { w2 <- c.WriteAt(pattern(512, 2), 4096, 0) }()
	h2 := <-writes

	answer(h1)
	require.NoError(t, <-w1)
	require.NoError(t, <-ferr, "the flush completes with the later write still held")
	assert.True(t, flushed.Load())
	assert.False(t, wrongOrder.Load())
	answer(h2)
	require.NoError(t, <-w2)
}

func TestScriptedCloseWaitsAndSendsDisc(t *testing.T) {
	held := make(chan held1, 1)
	f, cfg := startFarm(t, srvOpts{structured: true}, func(conn int, s *srvConn, r srvReq) bool {
		held <- held1{s, r}
		return true
	})
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	rerr := make(chan error, 1)
	go func() { rerr <- c.ReadAt(make([]byte, 512), 0) }()
	h := <-held

	closing := make(chan struct{})
	c.testCloseWait = func() { close(closing) }
	cerr := make(chan error, 1)
	go func() { cerr <- c.Close() }()
	<-closing // Close is waiting for the read
	assert.ErrorIs(t, c.ReadAt(make([]byte, 512), 0), blk.ErrClosed, "calls after Close")
	h.s.write(h.s.reply(f.mem, h.r))
	require.NoError(t, <-rerr, "the read in flight completes")
	require.NoError(t, <-cerr)
	assert.Equal(t, []uint16{cmdRead, cmdDisc}, cmds(f.waitEnded(0)))
	assert.Equal(t, uint64(1), c.Stats().CleanDisconnect)
	assert.ErrorIs(t, c.WriteAt(make([]byte, 512), 0, 0), blk.ErrClosed)
	assert.ErrorIs(t, c.Flush(), blk.ErrClosed)
	assert.ErrorIs(t, c.Close(), blk.ErrClosed)
}

type held1 struct {
	s *srvConn
	r srvReq
}

func TestScriptedNothingSentThatWasNotAdvertised(t *testing.T) {
	t.Run("read-only", func(t *testing.T) {
		f, cfg := startFarm(t, srvOpts{structured: true, flags: FlagReadOnly | FlagSendFlush | FlagSendTrim | FlagSendWriteZeroes | FlagSendFUA}, nil)
		c, err := Dial(context.Background(), cfg)
		require.NoError(t, err)
		assert.Equal(t, blk.ReadOnly|blk.FlushFeature|blk.TrimFeature|blk.WriteZeroesFeature|blk.FUAFeature, c.Features())
		assert.ErrorIs(t, c.WriteAt(make([]byte, 512), 0, 0), blk.ErrReadOnly)
		assert.ErrorIs(t, c.Trim(0, 512), blk.ErrReadOnly)
		assert.ErrorIs(t, c.WriteZeroes(0, 512, 0), blk.ErrReadOnly)
		require.NoError(t, c.Flush())
		require.NoError(t, c.Close())
		assert.Equal(t, []uint16{cmdFlush, cmdDisc}, cmds(f.waitEnded(0)))
	})
	t.Run("no optional features", func(t *testing.T) {
		f, cfg := startFarm(t, srvOpts{structured: true}, nil)
		c, err := Dial(context.Background(), cfg)
		require.NoError(t, err)
		assert.Equal(t, blk.Features(0), c.Features())
		assert.ErrorIs(t, c.Trim(0, 512), blk.ErrUnsupported)
		assert.ErrorIs(t, c.WriteZeroes(0, 512, 0), blk.ErrUnsupported)
		// No volatile cache: FUA adds nothing and Flush has nothing to send.
		require.NoError(t, c.WriteAt(make([]byte, 512), 0, blk.FUA))
		require.NoError(t, c.Flush())
		require.NoError(t, c.WriteAt(make([]byte, 512), 0, blk.NoHole), "NoHole means nothing to a write")
		require.NoError(t, c.Close())
		reqs := f.waitEnded(0)
		assert.Equal(t, []uint16{cmdWrite, cmdWrite, cmdDisc}, cmds(reqs))
		assert.Zero(t, reqs[0].flags, "no command flags")
		assert.Zero(t, reqs[1].flags, "no command flags")
	})
	t.Run("FUA emulated by a flush", func(t *testing.T) {
		f, cfg := startFarm(t, srvOpts{structured: true, flags: FlagSendFlush}, nil)
		c, err := Dial(context.Background(), cfg)
		require.NoError(t, err)
		require.NoError(t, c.WriteAt(make([]byte, 512), 0, blk.FUA))
		require.NoError(t, c.Close())
		reqs := f.waitEnded(0)
		assert.Equal(t, []uint16{cmdWrite, cmdFlush, cmdDisc}, cmds(reqs), "the write, then a flush after its reply")
		assert.Zero(t, reqs[0].flags, "no FUA flag the server did not offer")
	})
	t.Run("one connection without CAN_MULTI_CONN", func(t *testing.T) {
		f, cfg := startFarm(t, srvOpts{structured: true}, nil)
		cfg.Conns = 4
		c, err := Dial(context.Background(), cfg)
		require.NoError(t, err)
		assert.Equal(t, 1, c.Info().Conns)
		assert.Equal(t, int32(1), f.d.dials.Load())
		require.NoError(t, c.Close())
	})
	t.Run("fewer connections when the server refuses more", func(t *testing.T) {
		f, cfg := startFarm(t, srvOpts{structured: true, flags: FlagCanMultiConn}, nil)
		cfg.Conns = 4
		var n atomic.Int32
		cfg.Dial = func(ctx context.Context) (net.Conn, error) {
			if n.Add(1) > 2 {
				return nil, errors.New("too many connections (scripted)")
			}
			return f.d.dial(ctx)
		}
		c, err := Dial(context.Background(), cfg)
		require.NoError(t, err)
		assert.Equal(t, 2, c.Info().Conns)
		require.NoError(t, c.WriteAt(make([]byte, 512), 0, 0))
		require.NoError(t, c.Close())
		assert.Equal(t, uint64(2), c.Stats().CleanDisconnect)
	})
	t.Run("flags", func(t *testing.T) {
		f, cfg := startFarm(t, srvOpts{structured: true, flags: FlagSendFUA | FlagSendWriteZeroes | FlagSendTrim}, nil)
		c, err := Dial(context.Background(), cfg)
		require.NoError(t, err)
		require.NoError(t, c.WriteAt(make([]byte, 512), 0, blk.FUA))
		require.NoError(t, c.WriteZeroes(0, 1024, blk.FUA|blk.NoHole))
		require.NoError(t, c.WriteZeroes(0, 1024, 0))
		require.NoError(t, c.Trim(512, 512))
		require.NoError(t, c.Close())
		reqs := f.waitEnded(0)
		require.Len(t, reqs, 5)
		assert.Equal(t, srvReq{flags: cmdFlagFUA, cmd: cmdWrite, cookie: 1, length: 512}, reqs[0])
		assert.Equal(t, srvReq{flags: cmdFlagFUA | cmdFlagNoHole, cmd: cmdWriteZeroes, cookie: 2, length: 1024}, reqs[1])
		assert.Equal(t, srvReq{cmd: cmdWriteZeroes, cookie: 3, length: 1024}, reqs[2])
		assert.Equal(t, srvReq{cmd: cmdTrim, cookie: 4, off: 512, length: 512}, reqs[3])
	})
}

func TestScriptedBlockSizesAndSplitting(t *testing.T) {
	f, cfg := startFarm(t, srvOpts{structured: true, size: 1<<20 + 1000, blockSizes: [3]uint32{4096, 8192, 64 << 10}}, nil)
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	assert.Equal(t, 4096, c.BlockSize(), "the server's minimum over Config's 512")
	assert.Equal(t, int64(1<<20), c.Size(), "rounded down to the block size")
	assert.Equal(t, uint32(8192), c.Info().PreferredBlock)

	p := pattern(200<<10, 7)
	require.NoError(t, c.WriteAt(p, 64<<10, 0))
	got := make([]byte, 200<<10)
	require.NoError(t, c.ReadAt(got, 64<<10))
	assert.Equal(t, p, got)

	// Refused locally, nothing sent.
	assert.ErrorIs(t, c.ReadAt(make([]byte, 512), 0), blk.ErrAlign)
	assert.ErrorIs(t, c.ReadAt(make([]byte, 4096), 512), blk.ErrAlign)
	assert.ErrorIs(t, c.ReadAt(make([]byte, 8192), 1<<20-4096), blk.ErrRange)
	assert.ErrorIs(t, c.WriteAt(make([]byte, 4096), -4096, 0), blk.ErrRange)
	assert.ErrorIs(t, c.ReadAt(make([]byte, 4096), 1<<20), blk.ErrRange)
	require.NoError(t, c.ReadAt(nil, 1<<20), "an empty read at the end sends nothing")

	require.NoError(t, c.Close())
	reqs := f.waitEnded(0)
	var lens []uint32
	for _, r := range reqs {
		assert.Zero(t, r.off%4096)
		lens = append(lens, r.length)
	}
	k := uint32(64 << 10)
	assert.Equal(t, []uint32{k, k, k, 8 << 10, k, k, k, 8 << 10, 0}, lens, "writes then reads split at the maximum payload, then DISC")

	t.Run("maximum payload below the block size", func(t *testing.T) {
		_, cfg := startFarm(t, srvOpts{blockSizes: [3]uint32{512, 4096, 4096}}, nil)
		cfg.BlockSize = 8192
		_, err := Dial(context.Background(), cfg)
		assert.ErrorContains(t, err, "maximum payload 4096 is below the block size 8192")
	})
}

func TestScriptedPipeliningOutOfOrder(t *testing.T) {
	const inFlight, calls = 4, 16
	type pending struct {
		s *srvConn
		r srvReq
	}
	var mu sync.Mutex
	var batch []pending
	maxOut := 0
	disk := pattern(1<<20, 0)
	_, cfg := startFarm(t, srvOpts{structured: true}, func(conn int, s *srvConn, r srvReq) bool {
		mu.Lock()
		batch = append(batch, pending{s, r})
		maxOut = max(maxOut, len(batch))
		var out []pending
		if len(batch) == inFlight {
			out, batch = batch, nil
		}
		mu.Unlock()
		// A full window: answer it backwards, each read in two
		// chunks, the second half first.
		for i := len(out) - 1; i >= 0; i-- {
			p := out[i]
			h := p.r.length / 2
			data := disk[p.r.off : p.r.off+uint64(p.r.length)]
			p.s.write(cat(dataChunk(0, p.r.cookie, p.r.off+uint64(h), data[h:]),
				dataChunk(replyFlagDone, p.r.cookie, p.r.off, data[:h])))
		}
		return true
	})
	cfg.MaxInFlight = inFlight
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	defer c.Close()
	want := disk
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 4096)
			off := int64(i) * 8192
			if assert.NoError(t, c.ReadAt(b, off)) {
				assert.Equal(t, want[off:off+4096], b, "read %d", i)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, inFlight, maxOut, "requests in flight at once")
}

// startHeldRead dials a scripted server that never answers the first
// connection, with a short ReconnectTimeout, and starts a read that the
// server holds; it returns once the read is held, with the read's result
// to come on the channel.
func startHeldRead(t *testing.T) (*farm, *Client, <-chan error) {
	held := make(chan struct{}, 1)
	f, cfg := startFarm(t, srvOpts{structured: true}, func(conn int, s *srvConn, r srvReq) bool {
		if conn == 0 {
			held <- struct{}{}
			return true
		}
		return false
	})
	cfg.ReconnectTimeout = 300 * time.Millisecond
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	rerr := make(chan error, 1)
	go func() { rerr <- c.ReadAt(make([]byte, 512), 0) }()
	<-held
	return f, c, rerr
}

func TestScriptedReconnectGivesUpThenRecovers(t *testing.T) {
	f, c, rerr := startHeldRead(t)
	f.d.refuse.Store(true)
	f.conn(0).c.Close()
	start := time.Now()
	err := <-rerr
	assert.ErrorIs(t, err, blk.ErrDisconnected)
	assert.ErrorContains(t, err, "connection refused (scripted)")
	assert.Less(t, time.Since(start), 5*time.Second)
	dials := f.d.dials.Load()
	assert.Greater(t, dials, int32(2), "retried with backoff")
	assert.ErrorIs(t, c.ReadAt(make([]byte, 512), 0), blk.ErrDisconnected, "a new call tries again, in vain")
	assert.Greater(t, f.d.dials.Load(), dials)

	f.d.refuse.Store(false)
	require.NoError(t, c.ReadAt(make([]byte, 512), 0), "a new call after the server is back reconnects")
	assert.Equal(t, uint64(1), c.Stats().Reconnects)
}

func TestScriptedReconnectToAChangedExport(t *testing.T) {
	f, _, rerr := startHeldRead(t)
	f.mu.Lock()
	f.opts.size = 2 << 20 // the server comes back with another disk
	f.mu.Unlock()
	f.conn(0).c.Close()
	err := <-rerr
	assert.ErrorIs(t, err, blk.ErrDisconnected)
	assert.ErrorContains(t, err, "export changed: size 2097152, was 1048576")
}

// TestScriptedChaos: many goroutines write and read their own regions while
// the server keeps dropping connections. Every call either succeeds or
// fails with a connection error, and whatever was acknowledged reads back.
func TestScriptedChaos(t *testing.T) {
	var n atomic.Int32
	_, cfg := startFarm(t, srvOpts{structured: true, flags: FlagSendFlush | FlagCanMultiConn, size: 4 << 20}, func(conn int, s *srvConn, r srvReq) bool {
		if n.Add(1)%97 == 0 {
			s.c.Close()
			return true
		}
		return false
	})
	cfg.Conns = 2
	cfg.MaxInFlight = 8
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	defer c.Close()
	const workers, region = 8, 256 << 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			model := make([]byte, region)
			base := int64(w) * region
			for range 150 {
				off := r.Int64N(region/512) * 512
				ln := min(r.Int64N(16)*512+512, region-off)
				switch r.IntN(3) {
				case 0, 1:
					b := make([]byte, ln)
					for i := range b {
						b[i] = byte(r.Uint32())
					}
					if err := c.WriteAt(b, base+off, 0); err != nil {
						t.Errorf("write: %v", err)
						return
					}
					copy(model[off:], b)
				case 2:
					b := make([]byte, ln)
					if err := c.ReadAt(b, base+off); err != nil {
						t.Errorf("read: %v", err)
						return
					}
					if !bytes.Equal(model[off:off+ln], b) {
						t.Errorf("worker %d: read %d at %d differs", w, ln, off)
						return
					}
				}
			}
			b := make([]byte, region)
			if assert.NoError(t, c.ReadAt(b, base)) {
				assert.True(t, bytes.Equal(model, b), "worker %d's region", w)
			}
		}()
	}
	wg.Wait()
	st := c.Stats()
	t.Logf("chaos: %+v", st)
	assert.NotZero(t, st.Reconnects)
	assert.NotZero(t, st.Resent)
	err = c.Flush()
	if err != nil {
		assert.ErrorIs(t, err, blk.ErrDisconnected)
	}
	require.NoError(t, c.Flush())
}

func ExampleDial() {
	c, err := Dial(context.Background(), Config{Addr: "10.0.2.2:10809", Export: "swap"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	buf := make([]byte, c.BlockSize())
	if err := c.ReadAt(buf, 0); errors.Is(err, blk.ErrTimeout) {
		fmt.Println("the server is slow")
	}
}

// A client that backs swap marks every connection it makes memalloc, and
// unmarks it when the connection goes, reconnects included.
func TestScriptedMemallocMarksEachConnection(t *testing.T) {
	f, cfg := startFarm(t, srvOpts{structured: true}, nil)
	var mu sync.Mutex
	marked := map[net.Conn]bool{}
	var marks int
	cfg.Memalloc = func(c net.Conn) (func(), error) {
		mu.Lock()
		defer mu.Unlock()
		marked[c] = true
		marks++
		return func() {
			mu.Lock()
			defer mu.Unlock()
			require.True(t, marked[c], "unmarked once")
			delete(marked, c)
		}, nil
	}
	live := func() int { mu.Lock(); defer mu.Unlock(); return len(marked) }
	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	require.Equal(t, 1, live())
	require.NoError(t, c.ReadAt(make([]byte, 512), 0))

	f.conn(0).c.Close() // lost: the client reconnects on the next request
	require.NoError(t, c.ReadAt(make([]byte, 512), 0))
	require.Eventually(t, func() bool { return live() == 1 }, 5*time.Second, 10*time.Millisecond, "the lost connection is unmarked, the new one marked")
	mu.Lock()
	assert.Equal(t, 2, marks)
	mu.Unlock()
	require.NoError(t, c.Close())
	assert.Zero(t, live(), "closing the device unmarks its connections")

	// A connection that cannot be marked is not used.
	cfg.Memalloc = func(net.Conn) (func(), error) { return nil, errors.New("not TCP") }
	_, err = Dial(context.Background(), cfg)
	assert.ErrorContains(t, err, "marking the connection memalloc: not TCP")
}
