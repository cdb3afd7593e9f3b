package nbd

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
)

// The parser's outstanding requests in these tests.
const (
	ckRead  = 1 // read of 1024 bytes at 4096
	ckWrite = 2 // write of 512 bytes at 0
	ckFlush = 3
	ckSmall = 4 // read of 64 bytes at 0
)

func parserRequests() map[uint64]*request {
	return map[uint64]*request{
		ckRead:  {cmd: cmdRead, cookie: ckRead, off: 4096, length: 1024, buf: guarded(1024)},
		ckWrite: {cmd: cmdWrite, cookie: ckWrite, off: 0, length: 512},
		ckFlush: {cmd: cmdFlush, cookie: ckFlush},
		ckSmall: {cmd: cmdRead, cookie: ckSmall, off: 0, length: 64, buf: make([]byte, 64)},
	}
}

// guardLen is the length of the guard that follows a read's buffer (guarded).
const guardLen = 4096

// guarded returns a buffer of n bytes of 0xff followed, within its
// capacity, by guardLen more. In the client a request's buffer is a piece
// of the caller's, with the next request's piece after it: a parser that
// wrote past a request's length would corrupt that, silently, rather than
// panic.
func guarded(n int) []byte {
	return bytes.Repeat([]byte{0xff}, n+guardLen)[:n]
}

// assertGuardIntact checks that nothing was written past b's length.
func assertGuardIntact(t *testing.T, b []byte) {
	t.Helper()
	assert.Equal(t, bytes.Repeat([]byte{0xff}, guardLen), b[len(b):cap(b)], "the bytes past the read's buffer")
}

type parsed struct {
	cookie uint64
	err    error // the request's outcome
}

// parseAll runs the parser over in until it fails: the completed requests
// in order, the request the failure concerned (0: none), and the failure.
func parseAll(structured bool, in []byte, reqs map[uint64]*request) (done []parsed, affected uint64, err error) {
	p := replyParser{r: bytes.NewReader(in), structured: structured}
	lookup := func(c uint64) *request { return reqs[c] }
	for {
		r, ok, err := p.next(lookup)
		if err != nil {
			if r != nil {
				affected = r.cookie
			}
			return done, affected, err
		}
		if ok {
			done = append(done, parsed{r.cookie, r.reply.err})
			delete(reqs, r.cookie)
		}
	}
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func TestReplyParserAccepts(t *testing.T) {
	data := pattern(1024, 3)
	for _, tc := range []struct {
		name       string
		structured bool
		in         []byte
		want       []parsed
		hole       int // leading bytes of the big read that are a hole
	}{
		{"simple read", false, simpleReply(ckRead, 0, data),
			[]parsed{{ckRead, nil}}, 0},
		{"simple write and flush, out of order", false,
			cat(simpleReply(ckFlush, 0, nil), simpleReply(ckWrite, 0, nil)),
			[]parsed{{ckFlush, nil}, {ckWrite, nil}}, 0},
		{"structured read in pieces out of order, then NONE", true,
			cat(dataChunk(0, ckRead, 4096+512, data[512:]), dataChunk(0, ckRead, 4096, data[:256]),
				dataChunk(0, ckRead, 4096+256, data[256:512]), chunk(replyFlagDone, replyTypeNone, ckRead, nil)),
			[]parsed{{ckRead, nil}}, 0},
		{"hole and data, the data chunk done", true,
			cat(holeChunk(0, ckRead, 4096, 512), dataChunk(replyFlagDone, ckRead, 4096+512, data[512:])),
			[]parsed{{ckRead, nil}}, 512},
		{"interleaved replies of two reads", true,
			cat(dataChunk(0, ckRead, 4096, data[:512]), dataChunk(replyFlagDone, ckSmall, 0, data[:64]),
				dataChunk(replyFlagDone, ckRead, 4096+512, data[512:])),
			[]parsed{{ckSmall, nil}, {ckRead, nil}}, 0},
		{"simple reply to a write after structured replies", true, simpleReply(ckWrite, 0, nil),
			[]parsed{{ckWrite, nil}}, 0},
		{"unknown reply flags are ignored", true, chunk(replyFlagDone|0x8000, replyTypeNone, ckFlush, nil),
			[]parsed{{ckFlush, nil}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reqs := parserRequests()
			read := reqs[ckRead]
			done, _, err := parseAll(tc.structured, tc.in, reqs)
			assert.ErrorIs(t, err, io.EOF, "the stream ends cleanly after the replies")
			assert.Equal(t, tc.want, done)
			assertGuardIntact(t, read.buf)
			if len(done) > 0 && done[len(done)-1].cookie == ckRead {
				// The buffer held 0xff: a hole must zero it.
				want := append(make([]byte, tc.hole), data[tc.hole:]...)
				assert.Equal(t, want, read.buf, "the read's buffer")
			}
		})
	}
}

func TestReplyParserServerErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		structured bool
		in         []byte
		cookie     uint64
		sentinel   error
		want       ServerError
	}{
		{"simple ENOSPC", false, simpleReply(ckWrite, uint32(ENOSPC), nil), ckWrite, blk.ErrNoSpace,
			ServerError{Errno: ENOSPC}},
		{"simple EIO to a read: no payload follows", false, simpleReply(ckRead, uint32(EIO), nil), ckRead, blk.ErrIO,
			ServerError{Errno: EIO}},
		{"EPERM", true, simpleReply(ckWrite, uint32(EPERM), nil), ckWrite, blk.ErrReadOnly, ServerError{Errno: EPERM}},
		{"ENOTSUP", true, simpleReply(ckWrite, uint32(ENOTSUP), nil), ckWrite, blk.ErrUnsupported, ServerError{Errno: ENOTSUP}},
		{"an unlisted value", true, simpleReply(ckWrite, 1234, nil), ckWrite, blk.ErrIO, ServerError{Errno: 1234}},
		{"ERROR with a message", true,
			errorChunk(replyFlagDone, replyTypeError, ckRead, uint32(EIO), "disk on fire", nil), ckRead, blk.ErrIO,
			ServerError{Errno: EIO, Message: "disk on fire"}},
		{"ERROR_OFFSET inside the read, after data, then NONE", true,
			cat(dataChunk(0, ckRead, 4096, make([]byte, 512)),
				errorChunk(0, replyTypeErrorOff, ckRead, uint32(EIO), "bad sector", be64(4096+600)),
				chunk(replyFlagDone, replyTypeNone, ckRead, nil)), ckRead, blk.ErrIO,
			ServerError{Errno: EIO, Message: "bad sector", HasOffset: true, Offset: 4096 + 600}},
		{"an unknown error chunk type fails the request only", true,
			errorChunk(replyFlagDone, 0x8007, ckWrite, uint32(EIO), "new kind", []byte{1, 2, 3, 4}), ckWrite, blk.ErrIO,
			ServerError{Errno: EIO, Message: "new kind"}},
		{"the first of two errors wins", true,
			cat(errorChunk(0, replyTypeErrorOff, ckWrite, uint32(ENOSPC), "", be64(8)),
				errorChunk(replyFlagDone, replyTypeError, ckWrite, uint32(EIO), "", nil)), ckWrite, blk.ErrNoSpace,
			ServerError{Errno: ENOSPC, HasOffset: true, Offset: 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A flush's success follows, to show the stream stays in step.
			in := cat(tc.in, simpleReply(ckFlush, 0, nil))
			done, _, err := parseAll(tc.structured, in, parserRequests())
			require.ErrorIs(t, err, io.EOF)
			require.Len(t, done, 2)
			assert.Equal(t, tc.cookie, done[0].cookie)
			var se *ServerError
			require.ErrorAs(t, done[0].err, &se)
			assert.Equal(t, tc.want, *se)
			assert.ErrorIs(t, done[0].err, tc.sentinel)
			assert.Equal(t, parsed{ckFlush, nil}, done[1])
		})
	}
}

// roles are the cookies of the outstanding requests a reply is crafted
// for: the parser tests' constants, or what a client actually sent.
type roles struct{ read, write, flush, small uint64 }

var parserRoles = roles{ckRead, ckWrite, ckFlush, ckSmall}

type hostileCase struct {
	name       string
	structured bool
	in         []byte
	affected   uint64 // the cookie of the request it concerns (0: none can be named)
}

// hostileReplies are replies no correct server sends, crafted for the
// requests k: a read of 1024 bytes at 4096, a write of 512 at 0, a flush,
// a read of 64 at 0. Each is a protocol error.
func hostileReplies(k roles) []hostileCase {
	return []hostileCase{
		{"bad magic", true, cat(be64(0xdeadbeef00000000), make([]byte, 12)), 0},
		{"a magic from the handshake", true, be64(optReplyMagic), 0},
		{"simple reply, unknown cookie", false, simpleReply(99, 0, nil), 0},
		{"chunk, unknown cookie", true, chunk(replyFlagDone, replyTypeNone, 99, nil), 0},
		{"DONE duplicated", true,
			cat(chunk(replyFlagDone, replyTypeNone, k.write, nil), chunk(replyFlagDone, replyTypeNone, k.write, nil)), 0},
		{"simple reply to a read after structured replies", true, simpleReply(k.read, 0, make([]byte, 1024)), k.read},
		{"simple error to a read after structured replies", true, simpleReply(k.read, uint32(EIO), nil), k.read},
		{"simple reply after a chunk", true,
			cat(errorChunk(0, replyTypeError, k.write, uint32(EIO), "", nil), simpleReply(k.write, 0, nil)), k.write},
		{"structured chunk without negotiation", false, chunk(replyFlagDone, replyTypeNone, k.write, nil), 0},
		{"NONE with a payload", true, chunk(replyFlagDone, replyTypeNone, k.write, []byte{0, 0, 0, 0}), k.write},
		{"NONE without DONE", true, chunk(0, replyTypeNone, k.write, nil), k.write},
		{"OFFSET_DATA of 8 bytes", true, chunk(replyFlagDone, replyTypeOffsetData, k.read, be64(4096)), k.read},
		{"OFFSET_HOLE of 11 bytes", true, chunk(replyFlagDone, replyTypeOffsetHole, k.read, make([]byte, 11)), k.read},
		{"OFFSET_HOLE of size 0", true, holeChunk(replyFlagDone, k.read, 4096, 0), k.read},
		{"data before the request", true, dataChunk(replyFlagDone, k.read, 4095, make([]byte, 1)), k.read},
		{"data past the request", true, dataChunk(replyFlagDone, k.read, 4096+1000, make([]byte, 25)), k.read},
		{"data offset wrapping around", true, dataChunk(replyFlagDone, k.read, 1<<64-8, make([]byte, 16)), k.read},
		{"hole past the request", true, holeChunk(replyFlagDone, k.read, 4096, 1025), k.read},
		{"hole offset wrapping around", true, holeChunk(replyFlagDone, k.read, 1<<64-1, 2), k.read},
		// Only the header and offset are there: a parser that trusted the
		// length would block or fail reading 4 GiB, not report this.
		{"huge data length", true,
			cat(func() []byte {
				b := chunk(replyFlagDone, replyTypeOffsetData, k.read, nil)
				b[16], b[17], b[18], b[19] = 0xff, 0xff, 0xff, 0xff
				return b
			}(),
				be64(4096)), k.read},
		{"overlapping data", true,
			cat(dataChunk(0, k.read, 4096, make([]byte, 512)), dataChunk(replyFlagDone, k.read, 4096+511, make([]byte, 513))), k.read},
		{"data overlapping a hole", true,
			cat(holeChunk(0, k.read, 4096+512, 512), dataChunk(replyFlagDone, k.read, 4096, make([]byte, 1024))), k.read},
		{"the same data twice, adding up to the length", true,
			cat(dataChunk(0, k.read, 4096, make([]byte, 512)), dataChunk(replyFlagDone, k.read, 4096, make([]byte, 512))), k.read},
		{"data for a write", true, dataChunk(replyFlagDone, k.write, 0, make([]byte, 512)), k.write},
		{"hole for a flush", true, holeChunk(replyFlagDone, k.flush, 0, 512), k.flush},
		{"read done with data missing", true, dataChunk(replyFlagDone, k.read, 4096, make([]byte, 1000)), k.read},
		{"read done with nothing", true, chunk(replyFlagDone, replyTypeNone, k.read, nil), k.read},
		{"error value 0", true, errorChunk(replyFlagDone, replyTypeError, k.write, 0, "", nil), k.write},
		{"error chunk of 5 bytes", true, chunk(replyFlagDone, replyTypeError, k.write, make([]byte, 5)), k.write},
		{"error message longer than the chunk", true,
			func() []byte {
				b := errorChunk(replyFlagDone, replyTypeError, k.write, 5, "abc", nil)
				b[25] = 200
				return b
			}(), k.write},
		{"oversized error message", true,
			errorChunk(replyFlagDone, replyTypeError, k.write, uint32(EIO), string(make([]byte, 5000)), nil), k.write},
		{"ERROR with bytes after the message", true,
			errorChunk(replyFlagDone, replyTypeError, k.write, uint32(EIO), "m", []byte{0}), k.write},
		{"ERROR_OFFSET without its offset", true,
			errorChunk(replyFlagDone, replyTypeErrorOff, k.write, uint32(EIO), "m", []byte{0, 0}), k.write},
		{"ERROR_OFFSET outside the request", true,
			errorChunk(replyFlagDone, replyTypeErrorOff, k.read, uint32(EIO), "", be64(4096+1024)), k.read},
		{"ERROR_OFFSET to a flush", true,
			errorChunk(replyFlagDone, replyTypeErrorOff, k.flush, uint32(EIO), "", be64(0)), k.flush},
		{"unknown error chunk of a MiB", true,
			func() []byte { b := errorChunk(replyFlagDone, 0x8009, k.write, 5, "", nil); b[17] = 0x10; return b }(), k.write},
		{"BLOCK_STATUS, never negotiated", true, chunk(replyFlagDone, replyTypeBlockStat, k.read, make([]byte, 12)), k.read},
		{"unknown chunk type", true, chunk(replyFlagDone, 77, k.write, nil), k.write},
		{"a read in too many pieces", true, func() []byte {
			var b []byte
			for i := range maxExtents + 1 {
				b = append(b, dataChunk(0, k.read, 4096+uint64(i)*32, make([]byte, 16))...)
			}
			return b
		}(), k.read},
	}
}

func TestReplyParserRefusesHostileReplies(t *testing.T) {
	for _, tc := range hostileReplies(parserRoles) {
		t.Run(tc.name, func(t *testing.T) {
			reqs := parserRequests()
			read := reqs[ckRead]
			_, affected, err := parseAll(tc.structured, tc.in, reqs)
			var pe *ProtocolError
			require.ErrorAs(t, err, &pe)
			assert.ErrorIs(t, err, blk.ErrProtocol)
			assert.Equal(t, tc.affected, affected, "the request the error concerns")
			assertGuardIntact(t, read.buf)
			t.Log(err)
		})
	}
}

func TestReplyParserTruncatedStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"DONE missing", dataChunk(0, ckRead, 4096, make([]byte, 512))},
		{"cut in a header", chunk(replyFlagDone, replyTypeNone, ckWrite, nil)[:10]},
		{"cut in a payload", dataChunk(replyFlagDone, ckRead, 4096, make([]byte, 1024))[:300]},
		{"cut in an error message", errorChunk(replyFlagDone, replyTypeError, ckWrite, 5, "abcdef", nil)[:28]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done, _, err := parseAll(true, tc.in, parserRequests())
			assert.Empty(t, done, "nothing completes")
			assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF), "%v", err)
		})
	}
	// A clean end between messages is io.EOF; inside one, not.
	_, _, err := parseAll(true, chunk(replyFlagDone, replyTypeNone, ckWrite, nil)[:10], parserRequests())
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestReplyParserSteadyStateAllocatesNothing(t *testing.T) {
	data := pattern(1024, 1)
	in := cat(dataChunk(0, ckRead, 4096+512, data[512:]), dataChunk(replyFlagDone, ckRead, 4096, data[:512]),
		simpleReply(ckWrite, 0, nil))
	reqs := parserRequests()
	rd := bytes.NewReader(in)
	p := replyParser{r: rd, structured: true}
	lookup := func(c uint64) *request { return reqs[c] }
	allocs := testing.AllocsPerRun(100, func() {
		rd.Reset(in)
		reqs[ckRead].reply.reset()
		for range 3 {
			if _, _, err := p.next(lookup); err != nil {
				panic(err)
			}
		}
	})
	assert.Zero(t, allocs)
}

// FuzzReplyParser feeds arbitrary server output to the parser with a few
// requests outstanding. It must never panic, complete a request twice,
// claim a read succeeded without every byte, or fail with anything but a
// protocol error or the reader's end.
func FuzzReplyParser(f *testing.F) {
	f.Add(true, cat(dataChunk(replyFlagDone, ckRead, 4096, make([]byte, 1024)), simpleReply(ckWrite, 0, nil)))
	f.Add(false, cat(simpleReply(ckRead, 0, make([]byte, 1024)), simpleReply(ckFlush, 5, nil)))
	f.Add(true, cat(holeChunk(0, ckSmall, 0, 32), dataChunk(replyFlagDone, ckSmall, 32, make([]byte, 32))))
	f.Add(true, errorChunk(replyFlagDone, replyTypeErrorOff, ckRead, 5, "x", be64(4100)))
	for _, tc := range hostileReplies(parserRoles) {
		f.Add(tc.structured, tc.in)
	}
	f.Fuzz(func(t *testing.T, structured bool, in []byte) {
		reqs := parserRequests()
		p := replyParser{r: bytes.NewReader(in), structured: structured}
		lookup := func(c uint64) *request { return reqs[c] }
		for {
			r, done, err := p.next(lookup)
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if r == nil || reqs[r.cookie] != r {
				t.Fatalf("a message for a request that is not outstanding")
			}
			if done {
				if r.reply.err == nil && r.cmd == cmdRead && r.reply.covered != r.length {
					t.Fatalf("read done with %d of %d bytes", r.reply.covered, r.length)
				}
				delete(reqs, r.cookie)
			}
		}
	})
}
