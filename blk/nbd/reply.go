package nbd

import (
	"encoding/binary"
	"io"
)

// maxExtents bounds the disjoint pieces a structured read reply may arrive
// in at one time (pieces that touch are merged, so a server sending its
// chunks in order, as every server does, uses one). More is a protocol
// error: the bound keeps the overlap check allocation-free.
const maxExtents = 16

// extent is a piece [start, end) of a read request already covered by
// content chunks, relative to the request's offset.
type extent struct{ start, end uint32 }

// replyState is a request's reply as parsed so far. It is reset each time
// the request is sent, and only the connection's reader touches it while
// the request is outstanding.
type replyState struct {
	err     error // the request's error, from the first error chunk or simple reply
	chunks  bool  // a structured chunk arrived
	covered uint32
	nExt    int
	ext     [maxExtents]extent
}

func (s *replyState) reset() { *s = replyState{} }

// addExtent records content [start, end) of the request, refusing overlap
// with content already received, as the spec requires.
func (s *replyState) addExtent(start, end uint32) error {
	i := 0
	for i < s.nExt && s.ext[i].end <= start {
		i++
	}
	if i < s.nExt && s.ext[i].start < end {
		return protoErr("content chunk [%d, %d) of the request overlaps [%d, %d) already received",
			start, end, s.ext[i].start, s.ext[i].end)
	}
	s.covered += end - start
	// Merge with the neighbours it touches.
	left := i > 0 && s.ext[i-1].end == start
	right := i < s.nExt && s.ext[i].start == end
	switch {
	case left && right:
		s.ext[i-1].end = s.ext[i].end
		copy(s.ext[i:], s.ext[i+1:s.nExt])
		s.nExt--
	case left:
		s.ext[i-1].end = end
	case right:
		s.ext[i].start = start
	default:
		if s.nExt == maxExtents {
			return protoErr("read reply in more than %d disjoint pieces", maxExtents)
		}
		copy(s.ext[i+1:], s.ext[i:s.nExt])
		s.ext[i] = extent{start, end}
		s.nExt++
	}
	return nil
}

// replyParser reads the server's side of the transmission phase: simple
// replies and structured reply chunks, in any order and interleaved among
// requests. It is separate from the connection so that it can be tested
// and fuzzed over any io.Reader.
//
// It never allocates on the success path and never allocates or reads a
// length the server chooses before checking it against the request it
// belongs to: data lands in the request's own buffer; the only allocation
// is an error message, bounded by the protocol's 4096-byte string limit.
type replyParser struct {
	r          io.Reader
	structured bool
	b          [structuredReplySize]byte
}

// next reads one reply message: a simple reply, or one chunk of a
// structured reply. lookup returns the outstanding request with a cookie,
// or nil.
//
// It returns the request the message belongs to and whether that request's
// reply is complete (its outcome is then req.reply.err). A non-nil error is
// fatal to the connection: a *ProtocolError, returned with the request it
// affects when that is known, or the reader's error (the stream is then
// mid-message and cannot be resynchronised).
func (p *replyParser) next(lookup func(cookie uint64) *request) (req *request, done bool, err error) {
	b := p.b[:]
	if _, err := io.ReadFull(p.r, b[:4]); err != nil {
		return nil, false, err
	}
	switch m := binary.BigEndian.Uint32(b); m {
	case simpleMagic:
		if _, err := io.ReadFull(p.r, b[4:simpleReplySize]); err != nil {
			return nil, false, unexpected(err)
		}
		return p.simple(lookup)
	case structuredMagic:
		if _, err := io.ReadFull(p.r, b[4:structuredReplySize]); err != nil {
			return nil, false, unexpected(err)
		}
		return p.chunk(lookup)
	default:
		return nil, false, protoErr("reply magic %#08x", m)
	}
}

func (p *replyParser) simple(lookup func(uint64) *request) (*request, bool, error) {
	errno := Errno(binary.BigEndian.Uint32(p.b[4:]))
	cookie := binary.BigEndian.Uint64(p.b[8:])
	req := lookup(cookie)
	if req == nil {
		return nil, false, protoErr("simple reply for cookie %#x, which is not outstanding", cookie)
	}
	if p.structured && req.cmd == cmdRead {
		return req, false, protoErr("simple reply to NBD_CMD_READ after structured replies were negotiated")
	}
	if req.reply.chunks {
		return req, false, protoErr("simple reply to %s after structured chunks", cmdName(req.cmd))
	}
	if errno != 0 {
		req.reply.err = &ServerError{Errno: errno}
		return req, true, nil
	}
	if req.cmd == cmdRead {
		// No length in a simple reply: the request's is what follows.
		if _, err := io.ReadFull(p.r, req.buf[:req.length]); err != nil {
			return nil, false, unexpected(err)
		}
		req.reply.covered = req.length
	}
	return req, true, nil
}

func (p *replyParser) chunk(lookup func(uint64) *request) (*request, bool, error) {
	flags := binary.BigEndian.Uint16(p.b[4:])
	typ := binary.BigEndian.Uint16(p.b[6:])
	cookie := binary.BigEndian.Uint64(p.b[8:])
	length := binary.BigEndian.Uint32(p.b[16:])
	done := flags&replyFlagDone != 0 // other flags: the spec says ignore
	if !p.structured {
		return nil, false, protoErr("structured reply chunk without NBD_OPT_STRUCTURED_REPLY")
	}
	req := lookup(cookie)
	if req == nil {
		return nil, false, protoErr("reply chunk for cookie %#x, which is not outstanding", cookie)
	}
	st := &req.reply
	st.chunks = true
	b := p.b[:]

	switch {
	case typ == replyTypeNone:
		if length != 0 {
			return req, false, protoErr("NBD_REPLY_TYPE_NONE with %d bytes of payload", length)
		}
		if !done {
			return req, false, protoErr("NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE")
		}

	case typ == replyTypeOffsetData || typ == replyTypeOffsetHole:
		if req.cmd != cmdRead {
			return req, false, protoErr("content chunk type %d in the reply to %s", typ, cmdName(req.cmd))
		}
		var off uint64
		var n uint32
		if typ == replyTypeOffsetData {
			if length < 9 {
				return req, false, protoErr("NBD_REPLY_TYPE_OFFSET_DATA of %d bytes", length)
			}
			n = length - 8
			if _, err := io.ReadFull(p.r, b[:8]); err != nil {
				return nil, false, unexpected(err)
			}
			off = binary.BigEndian.Uint64(b)
		} else {
			if length != 12 {
				return req, false, protoErr("NBD_REPLY_TYPE_OFFSET_HOLE of %d bytes, want 12", length)
			}
			if _, err := io.ReadFull(p.r, b[:12]); err != nil {
				return nil, false, unexpected(err)
			}
			off = binary.BigEndian.Uint64(b)
			n = binary.BigEndian.Uint32(b[8:])
			if n == 0 {
				return req, false, protoErr("NBD_REPLY_TYPE_OFFSET_HOLE of size 0")
			}
		}
		// Within [req.off, req.off+req.length), without overflow.
		if off < req.off || off-req.off > uint64(req.length) || uint64(n) > uint64(req.length)-(off-req.off) {
			return req, false, protoErr("content chunk [%d, +%d) outside the request [%d, +%d)", off, n, req.off, req.length)
		}
		start := uint32(off - req.off)
		if err := st.addExtent(start, start+n); err != nil {
			return req, false, err
		}
		dst := req.buf[start : start+n]
		if typ == replyTypeOffsetData {
			if _, err := io.ReadFull(p.r, dst); err != nil {
				return nil, false, unexpected(err)
			}
		} else {
			clear(dst)
		}

	case typ&replyTypeErrorBit != 0:
		// Every error chunk starts with error, message length, message;
		// the header's length also covers fields after the message.
		var fixed uint32 // bytes after the message
		switch typ {
		case replyTypeError:
		case replyTypeErrorOff:
			fixed = 8
		default:
			fixed = 0 // unknown: whatever follows is skipped
		}
		if length < 6+fixed {
			return req, false, protoErr("error chunk type %#x of %d bytes", typ, length)
		}
		if _, err := io.ReadFull(p.r, b[:6]); err != nil {
			return nil, false, unexpected(err)
		}
		errno := Errno(binary.BigEndian.Uint32(b))
		mlen := uint32(binary.BigEndian.Uint16(b[4:]))
		if errno == 0 {
			return req, false, protoErr("error chunk with error value 0")
		}
		if mlen > length-6-fixed {
			return req, false, protoErr("error message of %d bytes in an error chunk of %d", mlen, length)
		}
		if mlen > maxString {
			return req, false, protoErr("error message of %d bytes, over the protocol's %d", mlen, maxString)
		}
		known := typ == replyTypeError || typ == replyTypeErrorOff
		if known && length != 6+fixed+mlen {
			return req, false, protoErr("error chunk type %#x of %d bytes with a %d-byte message", typ, length, mlen)
		}
		if !known && length-6-mlen > 64 {
			return req, false, protoErr("unknown error chunk type %#x of %d bytes", typ, length)
		}
		se := &ServerError{Errno: errno}
		if mlen > 0 {
			msg := make([]byte, mlen)
			if _, err := io.ReadFull(p.r, msg); err != nil {
				return nil, false, unexpected(err)
			}
			se.Message = string(msg)
		}
		rest := length - 6 - mlen
		if typ == replyTypeErrorOff {
			if _, err := io.ReadFull(p.r, b[:8]); err != nil {
				return nil, false, unexpected(err)
			}
			off := binary.BigEndian.Uint64(b)
			if req.cmd == cmdFlush || off < req.off || off-req.off >= uint64(req.length) {
				return req, false, protoErr("NBD_REPLY_TYPE_ERROR_OFFSET at %d outside the request [%d, +%d) to %s",
					off, req.off, req.length, cmdName(req.cmd))
			}
			se.HasOffset, se.Offset = true, off
		} else {
			// Fields of an unknown error type, at most 64 bytes.
			for rest > 0 {
				k := min(rest, uint32(len(b)))
				if _, err := io.ReadFull(p.r, b[:k]); err != nil {
					return nil, false, unexpected(err)
				}
				rest -= k
			}
		}
		if st.err == nil {
			st.err = se
		}

	default:
		return req, false, protoErr("unexpected reply chunk type %d to %s", typ, cmdName(req.cmd))
	}

	if !done {
		return req, false, nil
	}
	if st.err == nil && req.cmd == cmdRead && st.covered != req.length {
		return req, false, protoErr("read reply done with %d of %d bytes", st.covered, req.length)
	}
	return req, true, nil
}

// unexpected turns an EOF in the middle of a message into
// io.ErrUnexpectedEOF, so that a clean close is told from a cut-off reply.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
