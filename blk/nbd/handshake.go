package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// handshakeResult is what a handshake negotiated.
type handshakeResult struct {
	size       uint64
	flags      uint16 // transmission flags
	minBlock   uint32 // 0: not advertised
	prefBlock  uint32 // 0: not advertised
	maxPayload uint32 // 0: not advertised
	structured bool   // NBD_OPT_STRUCTURED_REPLY acknowledged
	usedGo     bool   // NBD_OPT_GO (false: NBD_OPT_EXPORT_NAME fallback)
}

// handshake runs the client side of the newstyle handshake on rw and leaves
// it at the start of the transmission phase. With a fixed-newstyle server it
// asks for structured replies (unless noStructured) and then NBD_OPT_GO with
// NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE, falling back to
// NBD_OPT_EXPORT_NAME when the server does not know NBD_OPT_GO. Every length
// the server sends is bounded before anything is read or allocated, so a
// hostile server costs at most maxOptReply bytes per reply.
//
// Errors: *ProtocolError for a malformed handshake, *OptionError for an
// option the server refused, or the I/O error.
func handshake(rw io.ReadWriter, export string, noStructured bool) (handshakeResult, error) {
	var res handshakeResult
	if len(export) > maxString {
		return res, fmt.Errorf("export name of %d bytes is longer than the protocol's %d", len(export), maxString)
	}
	var b [18]byte
	if _, err := io.ReadFull(rw, b[:18]); err != nil {
		return res, readErr("server greeting", err)
	}
	if m := binary.BigEndian.Uint64(b[0:]); m != nbdMagic {
		return res, protoErr("greeting magic %#x is not NBDMAGIC", m)
	}
	switch m := binary.BigEndian.Uint64(b[8:]); m {
	case optMagic:
	case cliservMagic:
		return res, protoErr("server speaks the oldstyle handshake, which this client does not")
	default:
		return res, protoErr("greeting magic %#x is not IHAVEOPT", m)
	}
	hflags := binary.BigEndian.Uint16(b[16:])
	fixed := hflags&flagFixedNewstyle != 0
	noZeroes := hflags&flagNoZeroes != 0
	var cflags uint32
	if fixed {
		cflags |= flagCFixedNewstyle
	}
	if noZeroes {
		cflags |= flagCNoZeroes
	}
	binary.BigEndian.PutUint32(b[:4], cflags)
	if _, err := rw.Write(b[:4]); err != nil {
		return res, err
	}
	if !fixed {
		// Plain newstyle knows only NBD_OPT_EXPORT_NAME.
		return exportName(rw, export, noZeroes)
	}

	if !noStructured {
		if err := sendOption(rw, optStructuredReply, nil); err != nil {
			return res, err
		}
		typ, payload, err := readOptReply(rw, optStructuredReply)
		switch {
		case err != nil:
			return res, err
		case typ == repAck:
			res.structured = true
		case typ == repErrShutdown:
			abort(rw)
			return res, &OptionError{Option: optStructuredReply, Reply: typ, Message: message(payload)}
		case typ&repFlagError != 0:
			// NBD_REP_ERR_UNSUP and the like: simple replies it is.
		default:
			return res, protoErr("reply type %#x to NBD_OPT_STRUCTURED_REPLY", typ)
		}
	}

	// NBD_OPT_GO: name length, name, two information requests.
	opt := make([]byte, 4+len(export)+2+4)
	binary.BigEndian.PutUint32(opt[0:], uint32(len(export)))
	copy(opt[4:], export)
	p := opt[4+len(export):]
	binary.BigEndian.PutUint16(p[0:], 2)
	binary.BigEndian.PutUint16(p[2:], infoExport)
	binary.BigEndian.PutUint16(p[4:], infoBlockSize)
	if err := sendOption(rw, optGo, opt); err != nil {
		return res, err
	}
	haveExport := false
	for {
		typ, payload, err := readOptReply(rw, optGo)
		if err != nil {
			return res, err
		}
		switch {
		case typ == repInfo:
			if len(payload) < 2 {
				return res, protoErr("NBD_REP_INFO of %d bytes", len(payload))
			}
			switch it := binary.BigEndian.Uint16(payload); it {
			case infoExport:
				if len(payload) != 12 {
					return res, protoErr("NBD_INFO_EXPORT of %d bytes, want 12", len(payload))
				}
				res.size = binary.BigEndian.Uint64(payload[2:])
				res.flags = binary.BigEndian.Uint16(payload[10:])
				haveExport = true
			case infoBlockSize:
				if len(payload) != 14 {
					return res, protoErr("NBD_INFO_BLOCK_SIZE of %d bytes, want 14", len(payload))
				}
				res.minBlock = binary.BigEndian.Uint32(payload[2:])
				res.prefBlock = binary.BigEndian.Uint32(payload[6:])
				res.maxPayload = binary.BigEndian.Uint32(payload[10:])
				if err := checkBlockSizes(res.minBlock, res.prefBlock, res.maxPayload); err != nil {
					return res, err
				}
			default:
				// Information we did not ask for and do not know:
				// the spec says ignore it.
			}
		case typ == repAck:
			if !haveExport {
				return res, protoErr("NBD_REP_ACK to NBD_OPT_GO without NBD_INFO_EXPORT")
			}
			res.usedGo = true
			return res, checkExport(res)
		case typ == repErrUnsup:
			// A server from before NBD_OPT_GO: the spec's fallback.
			r, err := exportName(rw, export, noZeroes)
			r.structured = res.structured
			return r, err
		case typ&repFlagError != 0:
			abort(rw)
			return res, &OptionError{Option: optGo, Reply: typ, Message: message(payload)}
		default:
			return res, protoErr("reply type %#x to NBD_OPT_GO", typ)
		}
	}
}

// exportName ends the handshake with NBD_OPT_EXPORT_NAME, which has no error
// reply: a server without the export just closes the connection.
func exportName(rw io.ReadWriter, export string, noZeroes bool) (handshakeResult, error) {
	var res handshakeResult
	if err := sendOption(rw, optExportName, []byte(export)); err != nil {
		return res, err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	var b [134]byte
	if _, err := io.ReadFull(rw, b[:n]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return res, fmt.Errorf("server closed the connection after NBD_OPT_EXPORT_NAME %q (no such export?): %w", export, io.ErrUnexpectedEOF)
		}
		return res, err
	}
	res.size = binary.BigEndian.Uint64(b[0:])
	res.flags = binary.BigEndian.Uint16(b[8:])
	return res, checkExport(res)
}

func checkExport(res handshakeResult) error {
	if res.flags&FlagHasFlags == 0 {
		return protoErr("transmission flags %#x lack NBD_FLAG_HAS_FLAGS", res.flags)
	}
	if res.size > 1<<62 {
		return protoErr("export size %d is beyond any device", res.size)
	}
	return nil
}

// checkBlockSizes enforces the spec's MUSTs on NBD_INFO_BLOCK_SIZE.
func checkBlockSizes(min, pref, max uint32) error {
	if min == 0 || min > maxMinBlock || bits.OnesCount32(min) != 1 {
		return protoErr("minimum block size %d is not a power of two up to 64 KiB", min)
	}
	if bits.OnesCount32(pref) != 1 || pref < min || pref < 512 {
		return protoErr("preferred block size %d is not a power of two at least max(%d, 512)", pref, min)
	}
	if max < pref {
		return protoErr("maximum payload %d is below the preferred block size %d", max, pref)
	}
	return nil
}

func sendOption(w io.Writer, opt uint32, data []byte) error {
	b := make([]byte, 16+len(data))
	binary.BigEndian.PutUint64(b[0:], optMagic)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], uint32(len(data)))
	copy(b[16:], data)
	_, err := w.Write(b)
	return err
}

// readOptReply reads one option reply to opt: its type and payload.
func readOptReply(r io.Reader, opt uint32) (typ uint32, payload []byte, err error) {
	var h [20]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, readErr("option reply", err)
	}
	if m := binary.BigEndian.Uint64(h[0:]); m != optReplyMagic {
		return 0, nil, protoErr("option reply magic %#x", m)
	}
	if o := binary.BigEndian.Uint32(h[8:]); o != opt {
		return 0, nil, protoErr("reply to option %d while option %d was pending", o, opt)
	}
	typ = binary.BigEndian.Uint32(h[12:])
	n := binary.BigEndian.Uint32(h[16:])
	if n > maxOptReply {
		return 0, nil, protoErr("option reply of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, readErr("option reply", err)
	}
	return typ, payload, nil
}

// abort is the soft disconnect of the handshake phase, sent after an error
// reply so the server sees a clean end. Best effort: the caller closes the
// connection anyway.
func abort(w io.Writer) { _ = sendOption(w, optAbort, nil) }

// message is an error reply's text, bounded to the protocol's string limit.
func message(p []byte) string {
	if len(p) > maxString {
		p = p[:maxString]
	}
	return string(p)
}

func readErr(what string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		// The handshake is not over: any close is unexpected.
		return fmt.Errorf("reading %s: server closed the connection: %w", what, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("reading %s: %w", what, err)
}
