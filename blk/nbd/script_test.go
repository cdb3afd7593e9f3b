package nbd

// The scripted server: the server side of the protocol over net.Pipe, for
// the tests that need what no real server sends (crafted, hostile replies)
// or exact control of timing (a reply held back). Its handshake and its
// honest replies follow doc/proto.md; hooks replace a request's reply.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// srvOpts shapes the scripted server's handshake.
type srvOpts struct {
	flags      uint16    // transmission flags; NBD_FLAG_HAS_FLAGS is added
	size       uint64    // export size
	export     string    // the one export it has
	structured bool      // acknowledge NBD_OPT_STRUCTURED_REPLY
	blockSizes [3]uint32 // min, preferred, max for NBD_INFO_BLOCK_SIZE; zero: none
	noGo       bool      // answer NBD_OPT_GO with NBD_REP_ERR_UNSUP
	noFixed    bool      // plain newstyle: no NBD_FLAG_FIXED_NEWSTYLE
	noZeroes   bool      // offer NBD_FLAG_NO_ZEROES
}

// pipeDialer is a Config.Dial whose connections are net.Pipes; the server
// ends go to conns for the test to serve. refuse makes dials fail.
type pipeDialer struct {
	conns  chan net.Conn
	refuse atomic.Bool
	dials  atomic.Int32
}

func newPipeDialer() *pipeDialer { return &pipeDialer{conns: make(chan net.Conn)} }

func (d *pipeDialer) dial(ctx context.Context) (net.Conn, error) {
	d.dials.Add(1)
	if d.refuse.Load() {
		return nil, errors.New("connection refused (scripted)")
	}
	c, s := net.Pipe()
	select {
	case d.conns <- s:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// srvReq is one request as the server read it.
type srvReq struct {
	flags, cmd uint16
	cookie     uint64
	off        uint64
	length     uint32
	data       []byte // a write's payload
}

// srvConn is the server end of one connection.
type srvConn struct {
	c          net.Conn
	br         *bufio.Reader
	opts       srvOpts
	structured bool // negotiated
	wmu        sync.Mutex
}

// accept takes the next connection the client dials and runs the
// handshake on it.
func accept(t testing.TB, d *pipeDialer, o srvOpts) *srvConn {
	t.Helper()
	select {
	case c := <-d.conns:
		s := &srvConn{c: c, br: bufio.NewReader(c), opts: o}
		if err := s.handshake(); err != nil {
			t.Errorf("scripted server handshake: %v", err)
		}
		return s
	case <-time.After(10 * time.Second):
		t.Errorf("the client did not connect") // not Fatal: called off the test goroutine
		return nil
	}
}

func (s *srvConn) write(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err := s.c.Write(b)
	return err
}

func (s *srvConn) optReply(opt, typ uint32, data []byte) error {
	b := make([]byte, 20+len(data))
	binary.BigEndian.PutUint64(b, optReplyMagic)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], typ)
	binary.BigEndian.PutUint32(b[16:], uint32(len(data)))
	copy(b[20:], data)
	return s.write(b)
}

func (s *srvConn) handshake() error {
	o := s.opts
	var g [18]byte
	binary.BigEndian.PutUint64(g[0:], nbdMagic)
	binary.BigEndian.PutUint64(g[8:], optMagic)
	var hf uint16
	if !o.noFixed {
		hf |= flagFixedNewstyle
	}
	if o.noZeroes {
		hf |= flagNoZeroes
	}
	binary.BigEndian.PutUint16(g[16:], hf)
	if err := s.write(g[:]); err != nil {
		return err
	}
	var cf [4]byte
	if _, err := io.ReadFull(s.br, cf[:]); err != nil {
		return err
	}
	cflags := binary.BigEndian.Uint32(cf[:])
	if cflags&^uint32(hf) != 0 {
		return fmt.Errorf("client flags %#x beyond the offered %#x", cflags, hf)
	}
	tflags := o.flags | FlagHasFlags
	for {
		var h [16]byte
		if _, err := io.ReadFull(s.br, h[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint64(h[:]) != optMagic {
			return fmt.Errorf("option magic %#x", h[:8])
		}
		opt := binary.BigEndian.Uint32(h[8:])
		data := make([]byte, binary.BigEndian.Uint32(h[12:]))
		if _, err := io.ReadFull(s.br, data); err != nil {
			return err
		}
		switch opt {
		case optStructuredReply:
			if o.structured {
				s.structured = true
				s.optReply(opt, repAck, nil)
			} else {
				s.optReply(opt, repErrUnsup, nil)
			}
		case optGo:
			if o.noGo {
				s.optReply(opt, repErrUnsup, nil)
				continue
			}
			n := binary.BigEndian.Uint32(data)
			name := string(data[4 : 4+n])
			if name != o.export {
				s.optReply(opt, repErrUnknown, []byte("no export "+name))
				continue
			}
			info := make([]byte, 12)
			binary.BigEndian.PutUint16(info[0:], infoExport)
			binary.BigEndian.PutUint64(info[2:], o.size)
			binary.BigEndian.PutUint16(info[10:], tflags)
			s.optReply(opt, repInfo, info)
			if o.blockSizes[0] != 0 {
				bs := make([]byte, 14)
				binary.BigEndian.PutUint16(bs[0:], infoBlockSize)
				binary.BigEndian.PutUint32(bs[2:], o.blockSizes[0])
				binary.BigEndian.PutUint32(bs[6:], o.blockSizes[1])
				binary.BigEndian.PutUint32(bs[10:], o.blockSizes[2])
				s.optReply(opt, repInfo, bs)
			}
			return s.optReply(opt, repAck, nil)
		case optExportName:
			if string(data) != o.export {
				s.c.Close()
				return fmt.Errorf("unknown export %q", data)
			}
			b := make([]byte, 10+124)
			binary.BigEndian.PutUint64(b[0:], o.size)
			binary.BigEndian.PutUint16(b[8:], tflags)
			if cflags&flagCNoZeroes != 0 {
				b = b[:10]
			}
			return s.write(b)
		case optAbort:
			s.optReply(opt, repAck, nil)
			s.c.Close()
			return errors.New("client aborted")
		default:
			s.optReply(opt, repErrUnsup, nil)
		}
	}
}

// next reads one request (and a write's payload).
func (s *srvConn) next() (srvReq, error) {
	var h [requestSize]byte
	if _, err := io.ReadFull(s.br, h[:]); err != nil {
		return srvReq{}, err
	}
	if m := binary.BigEndian.Uint32(h[:]); m != requestMagic {
		return srvReq{}, fmt.Errorf("request magic %#x", m)
	}
	r := srvReq{
		flags:  binary.BigEndian.Uint16(h[4:]),
		cmd:    binary.BigEndian.Uint16(h[6:]),
		cookie: binary.BigEndian.Uint64(h[8:]),
		off:    binary.BigEndian.Uint64(h[16:]),
		length: binary.BigEndian.Uint32(h[24:]),
	}
	if r.cmd == cmdWrite {
		r.data = make([]byte, r.length)
		if _, err := io.ReadFull(s.br, r.data); err != nil {
			return r, err
		}
	}
	return r, nil
}

func simpleReply(cookie uint64, errno uint32, data []byte) []byte {
	b := make([]byte, 16+len(data))
	binary.BigEndian.PutUint32(b[0:], simpleMagic)
	binary.BigEndian.PutUint32(b[4:], errno)
	binary.BigEndian.PutUint64(b[8:], cookie)
	copy(b[16:], data)
	return b
}

func chunk(flags, typ uint16, cookie uint64, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint32(b[0:], structuredMagic)
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], typ)
	binary.BigEndian.PutUint64(b[8:], cookie)
	binary.BigEndian.PutUint32(b[16:], uint32(len(payload)))
	copy(b[20:], payload)
	return b
}

func dataChunk(flags uint16, cookie, off uint64, data []byte) []byte {
	p := make([]byte, 8+len(data))
	binary.BigEndian.PutUint64(p, off)
	copy(p[8:], data)
	return chunk(flags, replyTypeOffsetData, cookie, p)
}

func holeChunk(flags uint16, cookie, off uint64, n uint32) []byte {
	p := make([]byte, 12)
	binary.BigEndian.PutUint64(p, off)
	binary.BigEndian.PutUint32(p[8:], n)
	return chunk(flags, replyTypeOffsetHole, cookie, p)
}

func errorChunk(flags, typ uint16, cookie uint64, errno uint32, msg string, tail []byte) []byte {
	p := make([]byte, 6+len(msg)+len(tail))
	binary.BigEndian.PutUint32(p, errno)
	binary.BigEndian.PutUint16(p[4:], uint16(len(msg)))
	copy(p[6:], msg)
	copy(p[6+len(msg):], tail)
	return chunk(flags, typ, cookie, p)
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// memDisk is the scripted server's storage, shared by its connections.
type memDisk struct {
	mu  sync.Mutex
	b   []byte
	log []uint16 // commands executed, in order
}

func newMemDisk(size int) *memDisk { return &memDisk{b: make([]byte, size)} }

// reply is the honest reply to r, executing it on m.
func (s *srvConn) reply(m *memDisk, r srvReq) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, r.cmd)
	end := r.off + uint64(r.length)
	if end > uint64(len(m.b)) {
		return simpleReply(r.cookie, uint32(EINVAL), nil)
	}
	switch r.cmd {
	case cmdRead:
		data := append([]byte(nil), m.b[r.off:end]...)
		if s.structured {
			return dataChunk(replyFlagDone, r.cookie, r.off, data)
		}
		return simpleReply(r.cookie, 0, data)
	case cmdWrite:
		copy(m.b[r.off:], r.data)
	case cmdTrim, cmdWriteZeroes:
		clear(m.b[r.off:end])
	case cmdFlush:
	default:
		return simpleReply(r.cookie, uint32(EINVAL), nil)
	}
	return simpleReply(r.cookie, 0, nil)
}

// serve answers requests honestly from m until the client disconnects,
// letting hook answer (or hold) any request first: a hook returning true
// has dealt with it. It returns the requests seen, NBD_CMD_DISC included.
func (s *srvConn) serve(m *memDisk, hook func(s *srvConn, r srvReq) bool) ([]srvReq, error) {
	var seen []srvReq
	for {
		r, err := s.next()
		if err != nil {
			return seen, err
		}
		seen = append(seen, srvReq{flags: r.flags, cmd: r.cmd, cookie: r.cookie, off: r.off, length: r.length})
		if r.cmd == cmdDisc {
			s.c.Close()
			return seen, nil
		}
		if hook != nil && hook(s, r) {
			continue
		}
		if err := s.write(s.reply(m, r)); err != nil {
			return seen, err
		}
	}
}

// pipeConfig is a client Config over d with short, test-sized timeouts.
func pipeConfig(d *pipeDialer) Config {
	return Config{
		Dial:             d.dial,
		Name:             "nbd:scripted",
		RequestTimeout:   5 * time.Second,
		ConnectTimeout:   5 * time.Second,
		ReconnectTimeout: 5 * time.Second,
	}
}
