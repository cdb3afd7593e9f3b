package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"yolk/blk"
)

// request is one NBD request and its reply. The caller owns it between
// sends; while it is registered on a connection (conn.reqs), the
// connection's reader owns its reply state and, for a read, its buffer.
// Exactly one value is sent on done per registration, by whoever removes
// it from conn.reqs.
type request struct {
	// The command, set by the caller.
	op     blk.Op
	cmd    uint16
	flags  uint16
	off    uint64
	length uint32
	buf    []byte // read: destination; write: source

	done  chan error  // capacity 1, reused
	timer *time.Timer // the reply deadline, reused

	// Set at registration, under cn.mu; timedOut also later, under
	// cn.mu, while it is registered.
	cn       *conn
	cookie   uint64
	gen      uint64 // connection generation it was sent on
	timedOut bool   // its deadline passed: fail it with ErrTimeout
	cover    uint64 // flush: the acknowledgements it covers

	// The caller's.
	deadline  time.Time // of this send; zero: none
	firstLoss time.Time // when its connection was first lost

	reply replyState // the reader's, while registered
}

type connState int32

const (
	stateUp         connState = iota // transmission phase: callers send
	stateConnecting                  // lost; the supervisor is reconnecting
	stateDown                        // reconnecting failed; a new request starts another try
	stateClosed
)

// conn is one connection slot: the current connection to the server and
// the one goroutine (run) that reads its replies and, when it is lost,
// re-establishes it. Callers send their own requests under wmu.
//
// Lock order: mu before wmu. mu is only ever held briefly; wmu is held
// across a socket write, which the write deadline bounds (when
// RequestTimeout is set). While reading replies, the goroutine never takes
// wmu (teardown does, once the connection is closed), so a writer blocked
// on a server that waits for its replies to be read is always unblocked.
type conn struct {
	cl    *Client
	id    int
	slots chan struct{} // one token per request in flight (MaxInFlight)

	mu      sync.Mutex
	state   connState
	stateA  atomic.Int32 // state, readable without mu (pick)
	gen     uint64       // generation: counts connections established
	nc      net.Conn
	reqs    map[uint64]*request // registered requests by cookie
	cookie  uint64
	changed chan struct{} // closed and replaced at every state change
	period  uint64        // reconnect periods begun
	lastErr error         // why the last reconnect period failed
	lastAck uint64        // highest ackSeq acknowledged on this generation
	failing []*request    // teardown's scratch

	kick chan struct{} // wakes a down supervisor (capacity 1)

	wmu      sync.Mutex
	wgen     uint64    // generation writes may go to; 0: none
	wdl      time.Time // the write deadline set on the connection
	discSent bool
	hdr      [requestSize]byte
	bufs     [2][]byte
	nb       net.Buffers

	ctx    context.Context // cancelled by Close: stops reconnecting
	cancel context.CancelFunc
	exited chan struct{}
}

func newConn(c *Client, id int) *conn {
	cn := &conn{
		cl:      c,
		id:      id,
		slots:   make(chan struct{}, c.cfg.MaxInFlight),
		reqs:    make(map[uint64]*request, c.cfg.MaxInFlight),
		changed: make(chan struct{}),
		kick:    make(chan struct{}, 1),
		exited:  make(chan struct{}),
		state:   stateConnecting,
	}
	cn.stateA.Store(int32(stateConnecting))
	cn.ctx, cn.cancel = context.WithCancel(context.Background())
	return cn
}

// setState changes the state and wakes everyone waiting for a change.
// Called with mu held.
func (cn *conn) setState(s connState) {
	cn.state = s
	cn.stateA.Store(int32(s))
	close(cn.changed)
	cn.changed = make(chan struct{})
}

// install makes nc the connection requests go to. False if the slot was
// closed meanwhile.
func (cn *conn) install(nc net.Conn) bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.state == stateClosed {
		return false
	}
	cn.gen++
	cn.nc = nc
	cn.lastAck = 0
	cn.wmu.Lock()
	cn.wgen = cn.gen
	cn.wdl = time.Time{}
	cn.discSent = false
	cn.wmu.Unlock()
	cn.setState(stateUp)
	return true
}

// run is the connection's goroutine: it reads replies until the connection
// fails, tears it down, and re-establishes it, until Close.
func (cn *conn) run(nc net.Conn) {
	defer close(cn.exited)
	for {
		err := cn.read(nc)
		if cn.teardown(nc, err) {
			return
		}
		for {
			if nc = cn.reconnect(); nc != nil {
				break
			}
			// Down: wait until a request wants the connection.
			select {
			case <-cn.kick:
			case <-cn.ctx.Done():
				return
			}
		}
	}
}

// read runs the reply parser over nc until it fails, completing requests.
func (cn *conn) read(nc net.Conn) error {
	c := cn.cl
	p := replyParser{r: bufio.NewReaderSize(nc, 32<<10), structured: c.hs.structured}
	lookup := cn.lookup
	for {
		r, done, err := p.next(lookup)
		if err != nil {
			var pe *ProtocolError
			if errors.As(err, &pe) {
				c.stats.protocolErrors.Add(1)
				if r != nil {
					cn.complete(r, err)
				}
			}
			return err
		}
		if !done {
			continue
		}
		err = r.reply.err
		if err != nil {
			c.stats.serverErrors.Add(1)
			var se *ServerError
			if errors.As(err, &se) && se.Errno == ESHUTDOWN {
				// The server is going away: the spec wants a soft
				// disconnect. The request was not done; it goes to
				// the next connection like those lost with this one.
				cn.softDisconnect()
				err = errRetry
				if r.cmd == cmdFlush {
					err = fmt.Errorf("%w: server shutting down (%v)", blk.ErrDisconnected, se)
				}
			}
		}
		cn.complete(r, err)
	}
}

func (cn *conn) lookup(cookie uint64) *request {
	cn.mu.Lock()
	r := cn.reqs[cookie]
	cn.mu.Unlock()
	return r
}

// complete ends a registered request's wait with err (nil: success).
func (cn *conn) complete(r *request, err error) {
	cn.mu.Lock()
	if cn.reqs[r.cookie] != r {
		cn.mu.Unlock()
		return
	}
	delete(cn.reqs, r.cookie)
	if err == nil && r.flags&cmdFlagFUA == 0 && (r.cmd == cmdWrite || r.cmd == cmdTrim || r.cmd == cmdWriteZeroes) {
		// Acknowledged but perhaps only in the server's cache.
		cn.lastAck = cn.cl.ackSeq.Add(1)
	}
	cn.mu.Unlock()
	cn.finish(r, err)
}

func (cn *conn) finish(r *request, err error) {
	<-cn.slots
	r.done <- err
}

// teardown closes a failed connection and completes every request on it:
// those past their deadline with ErrTimeout, a flush with ErrDisconnected,
// the rest with errRetry so that their callers send them again once the
// connection is back. It reports whether the slot is closed.
func (cn *conn) teardown(nc net.Conn, err error) (closing bool) {
	c := cn.cl
	nc.Close()
	cn.wmu.Lock()
	cn.wgen = 0
	discSent := cn.discSent
	cn.wmu.Unlock()

	cn.mu.Lock()
	closing = cn.state == stateClosed
	if !closing {
		if cn.state == stateUp {
			cn.period++
		}
		// Before completing anything: a caller sending again must
		// find the slot reconnecting.
		cn.setState(stateConnecting)
	}
	lost := cn.lastAck > c.flushedSeq.Load()
	cn.lastAck = 0
	failing := cn.failing[:0]
	for k, r := range cn.reqs {
		delete(cn.reqs, k)
		failing = append(failing, r)
	}
	cn.mu.Unlock()

	if closing && discSent && errors.Is(err, io.EOF) {
		c.stats.cleanDisconnect.Add(1)
	}
	if !closing {
		c.stats.connectionsLost.Add(1)
	}
	if lost {
		// errseq: the next Flush reports it.
		c.wbErr.Add(1)
		c.stats.lostWriteback.Add(1)
	}
	for i, r := range failing {
		var e error
		switch {
		case r.timedOut:
			c.stats.timeouts.Add(1)
			e = fmt.Errorf("%w after %v", blk.ErrTimeout, c.cfg.RequestTimeout)
		case r.cmd == cmdFlush:
			e = fmt.Errorf("%w: connection lost with the flush in flight (%v)", blk.ErrDisconnected, err)
		case closing:
			e = blk.ErrClosed
		default:
			e = errRetry
		}
		cn.finish(r, e)
		failing[i] = nil
	}
	cn.failing = failing[:0]
	return closing
}

// reconnect re-establishes the connection with backoff, for at most
// ReconnectTimeout and ReconnectAttempts. On failure the slot goes down and
// reconnect returns nil; so it does when the slot was closed.
func (cn *conn) reconnect() net.Conn {
	c := cn.cl
	start := time.Now()
	backoff := 20 * time.Millisecond
	var lastErr error
	for attempt := 1; c.cfg.ReconnectTimeout >= 0; attempt++ {
		remaining := c.cfg.ReconnectTimeout - time.Since(start)
		ctx, cancel := context.WithTimeout(cn.ctx, remaining)
		nc, hs, err := c.connect(ctx)
		cancel()
		if err == nil {
			if err = c.compatible(hs); err != nil {
				nc.Close()
			}
		}
		if err == nil {
			if !cn.install(nc) {
				// Closed meanwhile: a clean goodbye.
				var h [requestSize]byte
				writeDisc(nc, h[:], c.cfg.ConnectTimeout)
				nc.Close()
				return nil
			}
			c.stats.reconnects.Add(1)
			return nc
		}
		lastErr = err
		if cn.ctx.Err() != nil ||
			(c.cfg.ReconnectAttempts > 0 && attempt >= c.cfg.ReconnectAttempts) ||
			time.Since(start)+backoff >= c.cfg.ReconnectTimeout {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-cn.ctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, time.Second)
	}
	if lastErr == nil {
		lastErr = errors.New("reconnecting is disabled")
	}
	cn.mu.Lock()
	if cn.state != stateClosed {
		cn.lastErr = lastErr
		cn.setState(stateDown)
	}
	cn.mu.Unlock()
	return nil
}

// start registers r on a connection and sends it. It waits while the
// chosen connection is being re-established; a request that waited through
// a failed reconnect period fails with ErrDisconnected, while one that
// finds a slot down starts a new period.
func (c *Client) start(r *request) error {
	var waitedOn *conn
	var waited uint64
	for {
		cn := c.pick()
		cn.slots <- struct{}{}
		cn.mu.Lock()
		switch cn.state {
		case stateUp:
			cn.cookie++
			r.cookie = cn.cookie
			r.cn = cn
			r.gen = cn.gen
			r.timedOut = false
			r.reply.reset()
			if r.cmd == cmdFlush {
				r.cover = c.ackSeq.Load()
			}
			cn.reqs[r.cookie] = r
			for n, p := uint64(len(cn.reqs)), c.stats.peakInFlight.Load(); n > p; p = c.stats.peakInFlight.Load() {
				if c.stats.peakInFlight.CompareAndSwap(p, n) {
					break
				}
			}
			gen, nc := cn.gen, cn.nc
			cn.mu.Unlock()
			cn.send(r, gen, nc)
			return nil
		case stateClosed:
			cn.mu.Unlock()
			<-cn.slots
			return blk.ErrClosed
		case stateDown:
			if waitedOn == cn && cn.period == waited {
				err := cn.lastErr
				cn.mu.Unlock()
				<-cn.slots
				return fmt.Errorf("%w: %v", blk.ErrDisconnected, err)
			}
			cn.period++
			cn.setState(stateConnecting)
			select {
			case cn.kick <- struct{}{}:
			default:
			}
		}
		// Connecting: wait for the outcome.
		waitedOn, waited = cn, cn.period
		ch := cn.changed
		cn.mu.Unlock()
		<-cn.slots
		<-ch
	}
}

// send writes r's request (and a write's payload) to nc, unless nc has
// since been torn down, in which case teardown completes r. A failed write
// kills the connection: the stream is broken mid-request.
func (cn *conn) send(r *request, gen uint64, nc net.Conn) {
	c := cn.cl
	r.deadline = time.Time{}
	if c.cfg.RequestTimeout > 0 {
		r.deadline = time.Now().Add(c.cfg.RequestTimeout)
	}
	cn.wmu.Lock()
	if cn.wgen != gen {
		cn.wmu.Unlock()
		return
	}
	h := cn.hdr[:]
	binary.BigEndian.PutUint32(h[0:], requestMagic)
	binary.BigEndian.PutUint16(h[4:], r.flags)
	binary.BigEndian.PutUint16(h[6:], r.cmd)
	binary.BigEndian.PutUint64(h[8:], r.cookie)
	binary.BigEndian.PutUint64(h[16:], r.off)
	binary.BigEndian.PutUint32(h[24:], r.length)
	if !r.deadline.IsZero() && r.deadline.After(cn.wdl) {
		// The write deadline only unblocks a writer stuck on a server
		// that stopped reading; setting it costs a timer on some
		// stacks (gVisor's gonet), so it is set with slack, for this
		// request and those of the next quarter timeout.
		cn.wdl = r.deadline.Add(c.cfg.RequestTimeout / 4)
		nc.SetWriteDeadline(cn.wdl)
	}
	var err error
	if r.cmd == cmdWrite {
		cn.bufs[0], cn.bufs[1] = h, r.buf[:r.length]
		cn.nb = cn.bufs[:]
		_, err = cn.nb.WriteTo(nc)
		cn.bufs[1] = nil
	} else {
		_, err = nc.Write(h)
	}
	if err != nil {
		cn.wgen = 0
	}
	cn.wmu.Unlock()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			cn.mu.Lock()
			if cn.reqs[r.cookie] == r {
				r.timedOut = true
			}
			cn.mu.Unlock()
		}
		nc.Close() // the reader fails and tears down
	}
}

// wait waits for r's completion; past its deadline it fails the request
// (and so drops the connection: the reply may still come).
func (cn *conn) wait(r *request) error {
	if r.deadline.IsZero() {
		return <-r.done
	}
	r.timer.Reset(time.Until(r.deadline))
	select {
	case err := <-r.done:
		r.timer.Stop()
		return err
	case <-r.timer.C:
		cn.expire(r)
		return <-r.done
	}
}

// expire marks r timed out and closes its connection; teardown completes
// it. If r completed meanwhile, nothing happens.
func (cn *conn) expire(r *request) {
	var nc net.Conn
	cn.mu.Lock()
	if cn.reqs[r.cookie] == r && r.gen == cn.gen {
		r.timedOut = true
		nc = cn.nc
	}
	cn.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
}

// softDisconnect answers NBD_ESHUTDOWN: no new requests go to this
// connection, NBD_CMD_DISC is sent after those already written, and the
// reader goes on until the server closes (bounded, in case it does not).
// The reader calls it, and must not wait behind a writer blocked on a
// server that waits for the reader: the DISC goes from a goroutine.
func (cn *conn) softDisconnect() {
	cn.mu.Lock()
	if cn.state == stateUp {
		cn.period++
		cn.setState(stateConnecting)
	}
	gen, nc := cn.gen, cn.nc
	cn.mu.Unlock()
	go cn.disc(gen, nc)
}

// disc sends NBD_CMD_DISC on nc, generation gen, if requests may still be
// written to it (nothing is, afterwards), and bounds the wait for the
// server to close it. Without a DISC sent, it closes the connection.
func (cn *conn) disc(gen uint64, nc net.Conn) {
	if nc == nil {
		return
	}
	cn.wmu.Lock()
	sent := false
	if cn.wgen == gen {
		cn.wgen = 0
		sent = writeDisc(nc, cn.hdr[:], cn.cl.cfg.ConnectTimeout) == nil
		cn.discSent = sent
		cn.wdl = time.Time{}
	}
	cn.wmu.Unlock()
	if !sent {
		nc.Close()
		return
	}
	d := max(cn.cl.cfg.ConnectTimeout, cn.cl.cfg.RequestTimeout)
	nc.SetReadDeadline(time.Now().Add(d))
}

func writeDisc(nc net.Conn, h []byte, timeout time.Duration) error {
	clear(h)
	binary.BigEndian.PutUint32(h[0:], requestMagic)
	binary.BigEndian.PutUint16(h[6:], cmdDisc)
	nc.SetWriteDeadline(time.Now().Add(timeout))
	_, err := nc.Write(h)
	return err
}

// close is Client.Close for this slot, once no call is in flight: it sends
// NBD_CMD_DISC, waits for the server to close (bounded), and stops the
// goroutine.
func (cn *conn) close() {
	cn.mu.Lock()
	prev := cn.state
	gen, nc := cn.gen, cn.nc
	cn.setState(stateClosed)
	cn.mu.Unlock()
	cn.cancel()
	if prev == stateUp {
		cn.disc(gen, nc)
	}
	<-cn.exited
}
