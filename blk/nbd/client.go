package nbd

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"yolk/blk"
)

// Config configures a Client. Only a way to dial is required.
type Config struct {
	// Dial opens a connection to the server; Dial (the function) bounds it
	// and the handshake with ConnectTimeout through ctx. When nil,
	// Network and Addr are dialled with net.Dialer.
	Dial    func(ctx context.Context) (net.Conn, error)
	Network string // default "tcp"
	Addr    string // e.g. "10.0.2.2:10809"

	// Export is the export's name ("" is the server's default export).
	Export string
	// Name names the device in errors; default "nbd:<Addr>/<Export>".
	Name string

	// BlockSize is the smallest request the client sends, a power of two
	// from 512 to 64 KiB (default 512). The device's block size is the
	// larger of this and the server's minimum block size.
	BlockSize int
	// MaxInFlight bounds the requests in flight on one connection
	// (default 16); further calls wait for a slot.
	MaxInFlight int
	// Conns is how many connections to open (default 1). More than one is
	// used only if the server advertises NBD_FLAG_CAN_MULTI_CONN.
	Conns int

	// RequestTimeout bounds one NBD request from when it is handed to a
	// connection until its reply (default 30s; negative: no limit). A
	// request that exceeds it fails with blk.ErrTimeout and its
	// connection is dropped and re-established, since its reply may
	// still come.
	RequestTimeout time.Duration
	// ConnectTimeout bounds one dial plus handshake (default 10s).
	ConnectTimeout time.Duration
	// ReconnectTimeout bounds the attempts to re-establish a lost
	// connection (default 30s; negative: never reconnect).
	// ReconnectAttempts, when positive, also bounds their number. Between
	// attempts the client backs off from 20ms, doubling up to 1s.
	ReconnectTimeout  time.Duration
	ReconnectAttempts int

	// NoStructuredReplies: do not ask for NBD_OPT_STRUCTURED_REPLY, so the
	// server uses simple replies.
	NoStructuredReplies bool

	// Memalloc, when set, marks each connection the client makes as a
	// memalloc socket (Linux's sk_set_memalloc, which the NBD and NFS
	// swap paths call): its received frames may be charged to the
	// reserve, because swap writes complete only when its replies arrive.
	// It is called right after each dial, before the handshake, and the
	// function it returns when that connection is closed. A client that
	// backs swap over the network needs it; net/rx's Registry.RegisterConn
	// is one.
	Memalloc func(net.Conn) (unmark func(), err error)
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Dial == nil {
		if cfg.Addr == "" {
			return cfg, errors.New("nbd: Config needs Dial or Addr")
		}
		if cfg.Network == "" {
			cfg.Network = "tcp"
		}
		network, addr := cfg.Network, cfg.Addr
		cfg.Dial = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	}
	if cfg.Name == "" {
		addr := cfg.Addr
		if addr == "" {
			addr = "dial"
		}
		cfg.Name = "nbd:" + addr + "/" + cfg.Export
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 512
	}
	if cfg.BlockSize < 512 || cfg.BlockSize > maxMinBlock || bits.OnesCount(uint(cfg.BlockSize)) != 1 {
		return cfg, fmt.Errorf("nbd: BlockSize %d is not a power of two from 512 to 64 KiB", cfg.BlockSize)
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 16
	}
	if cfg.Conns <= 0 {
		cfg.Conns = 1
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.ReconnectTimeout == 0 {
		cfg.ReconnectTimeout = 30 * time.Second
	}
	if len(cfg.Export) > maxString {
		return cfg, fmt.Errorf("nbd: export name of %d bytes is longer than the protocol's %d", len(cfg.Export), maxString)
	}
	return cfg, nil
}

// ExportInfo is what the handshake negotiated.
type ExportInfo struct {
	Size              int64  // the device's size (the export's, rounded down to the block size)
	TransmissionFlags uint16 // as the server sent them (Flag*)
	MinBlock          uint32 // server's minimum block size (1 when not advertised)
	PreferredBlock    uint32 // server's preferred block size (4096 when not advertised)
	MaxPayload        uint32 // server's maximum payload (32 MiB when not advertised)
	Structured        bool   // structured replies negotiated
	Conns             int    // connections in use
}

// Stats count what the client did since Dial.
type Stats struct {
	Requests        [blk.OpWriteZeroes + 1]uint64 // NBD requests sent, by operation (resends not included)
	BytesRead       uint64                        // bytes of successful reads
	BytesWritten    uint64                        // bytes of successful writes
	Resent          uint64                        // requests sent again after a connection was lost
	Reconnects      uint64                        // connections re-established
	ConnectionsLost uint64                        // connections dropped (by error, timeout or the server)
	ProtocolErrors  uint64                        // malformed replies
	Timeouts        uint64                        // requests failed with ErrTimeout
	ServerErrors    uint64                        // requests the server failed
	LostWriteback   uint64                        // connections lost with writes acknowledged but not flushed
	CleanDisconnect uint64                        // connections the server closed after NBD_CMD_DISC
	PeakInFlight    uint64                        // most requests in flight on one connection at once
}

type counters struct {
	requests        [blk.OpWriteZeroes + 1]atomic.Uint64
	bytesRead       atomic.Uint64
	bytesWritten    atomic.Uint64
	resent          atomic.Uint64
	reconnects      atomic.Uint64
	connectionsLost atomic.Uint64
	protocolErrors  atomic.Uint64
	timeouts        atomic.Uint64
	serverErrors    atomic.Uint64
	lostWriteback   atomic.Uint64
	cleanDisconnect atomic.Uint64
	peakInFlight    atomic.Uint64
}

// Client is an NBD client: a blk.Device over one or more connections to an
// NBD server. See the package documentation.
type Client struct {
	cfg   Config
	hs    handshakeResult // the first connection's, which reconnects must match
	info  ExportInfo
	bs    int
	size  int64
	feat  blk.Features
	chunk int64 // longest read or write request
	conns []*conn
	rr    atomic.Uint32

	// active counts calls in flight; Close subtracts closedBias, after
	// which calls fail with ErrClosed and the last one out closes
	// drained.
	active    atomic.Int64
	drained   chan struct{}
	drainOnce sync.Once
	closeOnce sync.Once
	closed    atomic.Bool

	// Write-back error tracking, in the manner of Linux's errseq_t:
	// ackSeq numbers the acknowledgements of writes without FUA,
	// flushedSeq is the highest one a successful flush covered, wbErr
	// counts connections lost holding acknowledgements above flushedSeq,
	// and wbSeen is the wbErr a Flush last reported.
	ackSeq     atomic.Uint64
	flushedSeq atomic.Uint64
	wbErr      atomic.Uint64
	wbSeen     atomic.Uint64

	bar   barrier
	pool  sync.Pool
	stats counters

	// testCloseWait, when set, is called as Close starts waiting for the
	// calls in flight.
	testCloseWait func()
}

var _ blk.Device = (*Client)(nil)

const closedBias = 1 << 62

// Dial connects to the server, negotiates the export and returns the
// device. ctx bounds the connecting only; the Client is independent of it.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, drained: make(chan struct{})}
	c.pool.New = func() any {
		r := &request{done: make(chan error, 1), timer: time.NewTimer(time.Hour)}
		r.timer.Stop()
		return r
	}
	nc, hs, err := c.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("nbd: %s: %w", cfg.Name, err)
	}
	if err := c.setup(hs); err != nil {
		nc.Close()
		return nil, fmt.Errorf("nbd: %s: %w", cfg.Name, err)
	}
	ncs := []net.Conn{nc}
	if hs.flags&FlagCanMultiConn != 0 {
		// Extra connections are an optimisation: one the server
		// refuses leaves the device with fewer (Info().Conns).
		for len(ncs) < cfg.Conns {
			nc, hs2, err := c.connect(ctx)
			if err != nil {
				break
			}
			if c.compatible(hs2) != nil {
				nc.Close()
				break
			}
			ncs = append(ncs, nc)
		}
	}
	for i, nc := range ncs {
		c.conns = append(c.conns, newConn(c, i))
		c.conns[i].install(nc)
	}
	c.info.Conns = len(c.conns)
	for i, nc := range ncs {
		go c.conns[i].run(nc)
	}
	return c, nil
}

// setup derives the device's geometry from the first handshake.
func (c *Client) setup(hs handshakeResult) error {
	c.hs = hs
	min, pref, max := hs.minBlock, hs.prefBlock, hs.maxPayload
	if min == 0 {
		min, pref, max = 1, 4096, defaultMaxPayload
	}
	c.bs = c.cfg.BlockSize
	if int(min) > c.bs {
		c.bs = int(min)
	}
	if int64(max) < int64(c.bs) {
		return fmt.Errorf("server's maximum payload %d is below the block size %d", max, c.bs)
	}
	c.chunk = int64(max)
	if c.chunk > maxEffect {
		c.chunk = maxEffect
	}
	c.chunk -= c.chunk % int64(c.bs)
	c.size = int64(hs.size) - int64(hs.size)%int64(c.bs)
	f := hs.flags
	if f&FlagReadOnly != 0 {
		c.feat |= blk.ReadOnly
	}
	if f&FlagSendFlush != 0 {
		c.feat |= blk.FlushFeature
	}
	if f&FlagSendFUA != 0 {
		c.feat |= blk.FUAFeature
	}
	if f&FlagSendTrim != 0 {
		c.feat |= blk.TrimFeature
	}
	if f&FlagSendWriteZeroes != 0 {
		c.feat |= blk.WriteZeroesFeature
	}
	if f&FlagCanMultiConn != 0 {
		c.feat |= blk.MultiConn
	}
	c.info = ExportInfo{
		Size: c.size, TransmissionFlags: f,
		MinBlock: min, PreferredBlock: pref, MaxPayload: max,
		Structured: hs.structured,
	}
	return nil
}

// compatible says whether a later handshake (a reconnect, an extra
// connection) found the export the device was set up for: a server that
// came back with another size or without a feature in use is a different
// device, and requests must not be replayed on it.
func (c *Client) compatible(hs handshakeResult) error {
	const used = FlagReadOnly | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes | FlagCanMultiConn
	o := c.hs
	switch {
	case hs.size != o.size:
		return fmt.Errorf("export changed: size %d, was %d", hs.size, o.size)
	case hs.flags&used != o.flags&used:
		return fmt.Errorf("export changed: transmission flags %#x, were %#x", hs.flags, o.flags)
	case hs.structured != o.structured:
		return fmt.Errorf("export changed: structured replies %v, were %v", hs.structured, o.structured)
	case hs.minBlock != o.minBlock || hs.maxPayload != o.maxPayload:
		return fmt.Errorf("export changed: block sizes %d/%d, were %d/%d", hs.minBlock, hs.maxPayload, o.minBlock, o.maxPayload)
	}
	return nil
}

// connect dials and runs the handshake, both bounded by ConnectTimeout and
// ctx.
func (c *Client) connect(ctx context.Context) (net.Conn, handshakeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	nc, err := c.cfg.Dial(ctx)
	if err != nil {
		return nil, handshakeResult{}, err
	}
	if c.cfg.Memalloc != nil {
		unmark, err := c.cfg.Memalloc(nc)
		if err != nil {
			nc.Close()
			return nil, handshakeResult{}, fmt.Errorf("marking the connection memalloc: %w", err)
		}
		nc = &memallocConn{Conn: nc, unmark: unmark}
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	// Cancelling ctx aborts a handshake blocked on the server.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	hs, err := handshake(nc, c.cfg.Export, c.cfg.NoStructuredReplies)
	if !stop() {
		// ctx ended: whatever the handshake saw, that is why.
		if err == nil {
			err = ctx.Err()
		} else {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
	}
	if err != nil {
		nc.Close()
		return nil, hs, err
	}
	nc.SetDeadline(time.Time{})
	return nc, hs, nil
}

// BlockSize is the logical block size: the larger of Config.BlockSize and
// the server's minimum block size.
func (c *Client) BlockSize() int { return c.bs }

// Size is the export's size rounded down to the block size.
func (c *Client) Size() int64 { return c.size }

// Features maps the transmission flags.
func (c *Client) Features() blk.Features { return c.feat }

// Name is the device's name in errors.
func (c *Client) Name() string { return c.cfg.Name }

// Info is what the handshake negotiated.
func (c *Client) Info() ExportInfo { return c.info }

// Stats returns the counters.
func (c *Client) Stats() Stats {
	var s Stats
	for i := range s.Requests {
		s.Requests[i] = c.stats.requests[i].Load()
	}
	s.BytesRead = c.stats.bytesRead.Load()
	s.BytesWritten = c.stats.bytesWritten.Load()
	s.Resent = c.stats.resent.Load()
	s.Reconnects = c.stats.reconnects.Load()
	s.ConnectionsLost = c.stats.connectionsLost.Load()
	s.ProtocolErrors = c.stats.protocolErrors.Load()
	s.Timeouts = c.stats.timeouts.Load()
	s.ServerErrors = c.stats.serverErrors.Load()
	s.LostWriteback = c.stats.lostWriteback.Load()
	s.CleanDisconnect = c.stats.cleanDisconnect.Load()
	s.PeakInFlight = c.stats.peakInFlight.Load()
	return s
}

func (c *Client) enter() bool {
	if c.active.Add(1) < 0 {
		c.exit()
		return false
	}
	return true
}

func (c *Client) exit() {
	if c.active.Add(-1) == -closedBias {
		c.drainOnce.Do(func() { close(c.drained) })
	}
}

func (c *Client) fail(op blk.Op, off, length int64, err error) error {
	return &blk.RequestError{Device: c.cfg.Name, Op: op, Off: off, Len: length, Err: err}
}

// check validates a call before anything is sent.
func (c *Client) check(op blk.Op, off, length int64, flags blk.WriteFlags) error {
	if op != blk.OpRead && c.feat&blk.ReadOnly != 0 {
		return blk.ErrReadOnly
	}
	switch {
	case op == blk.OpTrim && c.feat&blk.TrimFeature == 0,
		op == blk.OpWriteZeroes && c.feat&blk.WriteZeroesFeature == 0:
		return blk.ErrUnsupported
	}
	return blk.CheckRequest(c.bs, c.size, off, length)
}

// ReadAt reads len(p) bytes at off, in requests of at most the maximum
// payload, pipelined.
func (c *Client) ReadAt(p []byte, off int64) error {
	if !c.enter() {
		return c.fail(blk.OpRead, off, int64(len(p)), blk.ErrClosed)
	}
	defer c.exit()
	if err := c.check(blk.OpRead, off, int64(len(p)), 0); err != nil {
		return c.fail(blk.OpRead, off, int64(len(p)), err)
	}
	if err := c.do(blk.OpRead, cmdRead, 0, p, off, int64(len(p))); err != nil {
		return c.fail(blk.OpRead, off, int64(len(p)), err)
	}
	return nil
}

// WriteAt writes p at off. With blk.FUA every request carries
// NBD_CMD_FLAG_FUA; a server without NBD_FLAG_SEND_FUA gets the write and
// then a flush, and one without NBD_FLAG_SEND_FLUSH either has no cache to
// lose the write from (Linux's blk-flush rules, see Flush). blk.NoHole
// means nothing to a write and is ignored.
func (c *Client) WriteAt(p []byte, off int64, flags blk.WriteFlags) error {
	return c.write(blk.OpWrite, cmdWrite, p, off, int64(len(p)), flags)
}

// Trim sends NBD_CMD_TRIM (ErrUnsupported without NBD_FLAG_SEND_TRIM).
func (c *Client) Trim(off, length int64) error {
	return c.write(blk.OpTrim, cmdTrim, nil, off, length, 0)
}

// WriteZeroes sends NBD_CMD_WRITE_ZEROES (ErrUnsupported without
// NBD_FLAG_SEND_WRITE_ZEROES), with NBD_CMD_FLAG_NO_HOLE for blk.NoHole.
func (c *Client) WriteZeroes(off, length int64, flags blk.WriteFlags) error {
	return c.write(blk.OpWriteZeroes, cmdWriteZeroes, nil, off, length, flags)
}

func (c *Client) write(op blk.Op, cmd uint16, p []byte, off, length int64, flags blk.WriteFlags) error {
	if !c.enter() {
		return c.fail(op, off, length, blk.ErrClosed)
	}
	defer c.exit()
	if err := c.check(op, off, length, flags); err != nil {
		return c.fail(op, off, length, err)
	}
	var cf uint16
	postFlush := false
	if flags&blk.FUA != 0 {
		switch {
		case c.feat&blk.FUAFeature != 0:
			cf |= cmdFlagFUA
		case c.feat&blk.FlushFeature != 0:
			postFlush = true
		}
	}
	if flags&blk.NoHole != 0 && cmd == cmdWriteZeroes {
		cf |= cmdFlagNoHole
	}
	// Flush waits for the writes that entered before it.
	e := c.bar.enter()
	err := c.do(op, cmd, cf, p, off, length)
	c.bar.exit(e)
	if err == nil && postFlush {
		err = c.flush()
	}
	if err != nil {
		return c.fail(op, off, length, err)
	}
	return nil
}

// Flush sends NBD_CMD_FLUSH. A server without NBD_FLAG_SEND_FLUSH has no
// volatile cache (the client may not send the command), so there, as on a
// Linux disk without a write cache, Flush has nothing to do once the writes
// it covers are done.
//
// It covers every write, trim and write-zeroes call that was made before
// Flush was called: those that completed, and those still in flight, whose
// replies Flush waits for (on every connection) before it sends
// NBD_CMD_FLUSH on one of them; with NBD_FLAG_CAN_MULTI_CONN the server
// makes that flush cover the writes acknowledged on all connections. Calls
// made after Flush was called are not covered.
//
// If a connection was lost holding writes that the server had acknowledged
// but no flush had yet covered, Flush fails with an error wrapping
// blk.ErrDisconnected: the server may have lost them with its cache. It
// says so once (errseq), so a Flush after it covers what was written since.
// A flush in flight when its connection is lost fails the same way and is
// not resent.
func (c *Client) Flush() error {
	if !c.enter() {
		return c.fail(blk.OpFlush, 0, 0, blk.ErrClosed)
	}
	defer c.exit()
	if err := c.flush(); err != nil {
		return c.fail(blk.OpFlush, 0, 0, err)
	}
	return nil
}

// flush is Flush without the call's bookkeeping; a write with FUA on a
// server without NBD_FLAG_SEND_FUA calls it after the write.
func (c *Client) flush() error {
	c.bar.drain()
	if c.feat&blk.FlushFeature == 0 {
		return nil
	}
	err := c.do(blk.OpFlush, cmdFlush, 0, nil, 0, 0)
	seen, seq := c.wbSeen.Load(), c.wbErr.Load()
	switch {
	case err == nil && seq != seen && c.wbSeen.CompareAndSwap(seen, seq):
		err = fmt.Errorf("%w: a connection was lost holding acknowledged writes not yet flushed; they may not be durable", blk.ErrDisconnected)
	case errors.Is(err, blk.ErrDisconnected):
		// This error reports the loss; the next Flush need not.
		c.wbSeen.CompareAndSwap(seen, seq)
	}
	return err
}

// Close waits for the calls in flight, then sends NBD_CMD_DISC on every
// connection and waits for the server to close it (at most
// ConnectTimeout). Later calls fail with ErrClosed.
func (c *Client) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.closed.Store(true)
		if c.active.Add(-closedBias) == -closedBias {
			c.drainOnce.Do(func() { close(c.drained) })
		}
		if c.testCloseWait != nil {
			c.testCloseWait()
		}
		<-c.drained
		for _, cn := range c.conns {
			cn.close()
		}
	})
	if !first {
		return blk.ErrClosed
	}
	return nil
}

// do runs one call: it splits [off, off+length) into requests of at most
// c.chunk (1 GiB for trims and zeroing, which carry no payload), sends them
// all, pipelined, then waits for all of them, so no buffer is touched after
// it returns. The first error wins.
func (c *Client) do(op blk.Op, cmd, flags uint16, p []byte, off, length int64) error {
	max := c.chunk
	if cmd == cmdTrim || cmd == cmdWriteZeroes {
		max = maxEffect
	}
	var small [4]*request
	reqs := small[:0]
	var first error
	for pos := int64(0); pos < length || (cmd == cmdFlush && len(reqs) == 0); {
		n := min(length-pos, max)
		r := c.pool.Get().(*request)
		r.op, r.cmd, r.flags = op, cmd, flags
		r.off, r.length = uint64(off+pos), uint32(n)
		r.buf = nil
		if p != nil {
			r.buf = p[pos : pos+n]
		}
		r.firstLoss = time.Time{}
		if err := c.start(r); err != nil {
			first = err
			c.put(r)
			break
		}
		c.stats.requests[op].Add(1)
		reqs = append(reqs, r)
		pos += n
	}
	for _, r := range reqs {
		if err := c.await(r); err != nil {
			if first == nil {
				first = err
			}
		} else if cmd == cmdRead {
			c.stats.bytesRead.Add(uint64(r.length))
		} else if cmd == cmdWrite {
			c.stats.bytesWritten.Add(uint64(r.length))
		} else if cmd == cmdFlush {
			// Every acknowledgement counted before the flush was
			// sent is now on stable storage.
			for {
				f := c.flushedSeq.Load()
				if r.cover <= f || c.flushedSeq.CompareAndSwap(f, r.cover) {
					break
				}
			}
		}
		c.put(r)
	}
	return first
}

func (c *Client) put(r *request) {
	r.buf = nil
	r.cn = nil
	c.pool.Put(r)
}

// await waits for a request's reply, sending it again on a new connection
// when its connection was lost, for as long as ReconnectTimeout allows
// from the first loss.
func (c *Client) await(r *request) error {
	for {
		err := r.cn.wait(r)
		if err != errRetry {
			return err
		}
		if r.firstLoss.IsZero() {
			r.firstLoss = time.Now()
		} else if c.cfg.ReconnectTimeout < 0 || time.Since(r.firstLoss) > c.cfg.ReconnectTimeout {
			return fmt.Errorf("%w: connection lost again and again for %v", blk.ErrDisconnected, time.Since(r.firstLoss).Round(time.Millisecond))
		}
		c.stats.resent.Add(1)
		if err := c.start(r); err != nil {
			return err
		}
	}
}

// pick chooses a connection for a request: round robin over those that are
// up, or any when none is.
func (c *Client) pick() *conn {
	n := uint32(len(c.conns))
	if n == 1 {
		return c.conns[0]
	}
	i := c.rr.Add(1)
	for k := uint32(0); k < n; k++ {
		if cn := c.conns[(i+k)%n]; connState(cn.stateA.Load()) == stateUp {
			return cn
		}
	}
	return c.conns[i%n]
}

// barrier lets Flush wait for the write calls made before it: writes enter
// an epoch, Flush starts a new one and waits for the old one to empty.
// Flushes drain one at a time, so at most two epochs are ever in use.
type barrier struct {
	drainMu sync.Mutex
	mu      sync.Mutex
	epoch   uint64
	active  [2]int
	waiter  [2]chan struct{}
	// testWait, when set, is called as a drain starts waiting.
	testWait func()
}

func (b *barrier) enter() uint64 {
	b.mu.Lock()
	e := b.epoch
	b.active[e&1]++
	b.mu.Unlock()
	return e
}

func (b *barrier) exit(e uint64) {
	b.mu.Lock()
	i := e & 1
	b.active[i]--
	if b.active[i] == 0 && b.waiter[i] != nil {
		close(b.waiter[i])
		b.waiter[i] = nil
	}
	b.mu.Unlock()
}

func (b *barrier) drain() {
	b.drainMu.Lock()
	defer b.drainMu.Unlock()
	b.mu.Lock()
	i := b.epoch & 1
	b.epoch++
	if b.active[i] == 0 {
		b.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	b.waiter[i] = ch
	b.mu.Unlock()
	if b.testWait != nil {
		b.testWait()
	}
	<-ch
}

// memallocConn is a connection marked memalloc: closing it unmarks it.
type memallocConn struct {
	net.Conn
	once   sync.Once
	unmark func()
}

func (m *memallocConn) Close() error {
	m.once.Do(m.unmark)
	return m.Conn.Close()
}
