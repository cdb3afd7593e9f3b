package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
)

// Server side of a handshake, as bytes.

func greeting(hflags uint16) []byte {
	b := binary.BigEndian.AppendUint64(nil, nbdMagic)
	b = binary.BigEndian.AppendUint64(b, optMagic)
	return binary.BigEndian.AppendUint16(b, hflags)
}

func optRep(opt, typ uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, optReplyMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func infoExportRep(size uint64, flags uint16) []byte {
	p := binary.BigEndian.AppendUint16(nil, infoExport)
	p = binary.BigEndian.AppendUint64(p, size)
	p = binary.BigEndian.AppendUint16(p, flags)
	return optRep(optGo, repInfo, p)
}

func infoBlockRep(min, pref, max uint32) []byte {
	p := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	p = binary.BigEndian.AppendUint32(p, min)
	p = binary.BigEndian.AppendUint32(p, pref)
	p = binary.BigEndian.AppendUint32(p, max)
	return optRep(optGo, repInfo, p)
}

func exportNameRep(size uint64, flags uint16, zeroes bool) []byte {
	b := binary.BigEndian.AppendUint64(nil, size)
	b = binary.BigEndian.AppendUint16(b, flags)
	if zeroes {
		b = append(b, make([]byte, 124)...)
	}
	return b
}

const hsFlags = FlagHasFlags | FlagSendFlush

var structuredAck = optRep(optStructuredReply, repAck, nil)

// clientOption is one option the client sent.
type clientOption struct {
	opt  uint32
	data []byte
}

// sentOptions parses what the client wrote: its flags and options.
func sentOptions(t *testing.T, b []byte) (cflags uint32, opts []clientOption) {
	t.Helper()
	require.GreaterOrEqual(t, len(b), 4)
	cflags = binary.BigEndian.Uint32(b)
	b = b[4:]
	for len(b) >= 16 {
		require.Equal(t, uint64(optMagic), binary.BigEndian.Uint64(b))
		n := binary.BigEndian.Uint32(b[12:])
		opts = append(opts, clientOption{binary.BigEndian.Uint32(b[8:]), b[16 : 16+n]})
		b = b[16+n:]
	}
	require.Empty(t, b, "trailing bytes after the options")
	return cflags, opts
}

type rw struct {
	io.Reader
	io.Writer
}

func runHandshake(server []byte, noStructured bool) (handshakeResult, []byte, int, error) {
	var out bytes.Buffer
	r := bytes.NewReader(server)
	res, err := handshake(rw{r, &out}, "exp", noStructured)
	return res, out.Bytes(), r.Len(), err
}

func TestHandshakeVariants(t *testing.T) {
	for _, tc := range []struct {
		name         string
		server       []byte
		noStructured bool
		want         handshakeResult
		cflags       uint32
		opts         []uint32
	}{
		{"fixed newstyle, structured replies, NBD_OPT_GO with block sizes",
			cat(greeting(flagFixedNewstyle|flagNoZeroes), structuredAck,
				infoBlockRep(512, 4096, 1<<20), optRep(optGo, repInfo, []byte{0, 2, 'h', 'i'}), // an info type it ignores
				infoExportRep(1<<30, hsFlags), optRep(optGo, repAck, nil)),
			false,
			handshakeResult{size: 1 << 30, flags: hsFlags, minBlock: 512, prefBlock: 4096, maxPayload: 1 << 20, structured: true, usedGo: true},
			flagCFixedNewstyle | flagCNoZeroes, []uint32{optStructuredReply, optGo}},
		{"structured replies not asked for",
			cat(greeting(flagFixedNewstyle), infoExportRep(4096, hsFlags), optRep(optGo, repAck, nil)),
			true, handshakeResult{size: 4096, flags: hsFlags, usedGo: true},
			flagCFixedNewstyle, []uint32{optGo}},
		{"structured replies refused",
			cat(greeting(flagFixedNewstyle), optRep(optStructuredReply, repErrUnsup, []byte("no")),
				infoExportRep(4096, hsFlags), optRep(optGo, repAck, nil)),
			false, handshakeResult{size: 4096, flags: hsFlags, usedGo: true},
			flagCFixedNewstyle, []uint32{optStructuredReply, optGo}},
		{"NBD_OPT_GO unknown: NBD_OPT_EXPORT_NAME, with zeroes",
			cat(greeting(flagFixedNewstyle), structuredAck, optRep(optGo, repErrUnsup, nil),
				exportNameRep(8192, hsFlags, true)),
			false, handshakeResult{size: 8192, flags: hsFlags, structured: true},
			flagCFixedNewstyle, []uint32{optStructuredReply, optGo, optExportName}},
		{"NBD_OPT_GO unknown: NBD_OPT_EXPORT_NAME, NO_ZEROES",
			cat(greeting(flagFixedNewstyle|flagNoZeroes), optRep(optStructuredReply, repErrUnsup, nil),
				optRep(optGo, repErrUnsup, nil), exportNameRep(8192, hsFlags, false)),
			false, handshakeResult{size: 8192, flags: hsFlags},
			flagCFixedNewstyle | flagCNoZeroes, []uint32{optStructuredReply, optGo, optExportName}},
		{"plain newstyle: NBD_OPT_EXPORT_NAME only",
			cat(greeting(0), exportNameRep(512, hsFlags, true)),
			false, handshakeResult{size: 512, flags: hsFlags},
			0, []uint32{optExportName}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, sent, left, err := runHandshake(tc.server, tc.noStructured)
			require.NoError(t, err)
			assert.Equal(t, tc.want, res)
			assert.Zero(t, left, "the handshake read exactly the server's bytes")
			cflags, opts := sentOptions(t, sent)
			assert.Equal(t, tc.cflags, cflags, "client flags")
			var names []uint32
			for _, o := range opts {
				names = append(names, o.opt)
				switch o.opt {
				case optGo:
					// name length, name, two info requests: EXPORT, BLOCK_SIZE
					assert.Equal(t, []byte{0, 0, 0, 3, 'e', 'x', 'p', 0, 2, 0, infoExport, 0, infoBlockSize}, o.data)
				case optExportName:
					assert.Equal(t, "exp", string(o.data))
				case optStructuredReply:
					assert.Empty(t, o.data)
				}
			}
			assert.Equal(t, tc.opts, names, "options sent")
		})
	}
}

func TestHandshakeOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server []byte
		reply  uint32
	}{
		{"unknown export", cat(greeting(flagFixedNewstyle), structuredAck, optRep(optGo, repErrUnknown, []byte("no such export"))), repErrUnknown},
		{"TLS required", cat(greeting(flagFixedNewstyle), structuredAck, optRep(optGo, repErrTLSReqd, nil)), repErrTLSReqd},
		{"policy", cat(greeting(flagFixedNewstyle), structuredAck, infoExportRep(1, hsFlags), optRep(optGo, repErrPolicy, []byte("go away"))), repErrPolicy},
		{"shutting down", cat(greeting(flagFixedNewstyle), optRep(optStructuredReply, repErrShutdown, nil)), repErrShutdown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, sent, _, err := runHandshake(tc.server, false)
			var oe *OptionError
			require.ErrorAs(t, err, &oe)
			assert.Equal(t, tc.reply, oe.Reply)
			assert.Equal(t, tc.reply == repErrUnknown, errors.Is(err, ErrUnknownExport))
			_, opts := sentOptions(t, sent)
			assert.Equal(t, uint32(optAbort), opts[len(opts)-1].opt, "a soft disconnect ends the handshake")
			t.Log(err)
		})
	}
}

var hostileHandshakes = []struct {
	name   string
	server []byte
}{
	{"bad NBDMAGIC", cat(be64(0x1122334455667788), be64(optMagic), []byte{0, 1})},
	{"oldstyle", cat(be64(nbdMagic), be64(cliservMagic), make([]byte, 8+4+124))},
	{"bad IHAVEOPT", cat(be64(nbdMagic), be64(0x1234), []byte{0, 1})},
	{"option reply magic", cat(greeting(1), be64(0x1234), make([]byte, 12))},
	{"reply to another option", cat(greeting(1), optRep(optGo, repAck, nil))},
	{"option reply of a MiB", cat(greeting(1), func() []byte { b := optRep(optStructuredReply, repAck, nil); b[17] = 0x10; return b }())},
	{"unexpected reply type to STRUCTURED_REPLY", cat(greeting(1), optRep(optStructuredReply, repInfo, []byte{0, 0}))},
	{"unexpected reply type to GO", cat(greeting(1), structuredAck, optRep(optGo, 2, []byte{0, 0, 0, 0}))},
	{"NBD_REP_INFO of 1 byte", cat(greeting(1), structuredAck, optRep(optGo, repInfo, []byte{0}))},
	{"NBD_INFO_EXPORT of 10 bytes", cat(greeting(1), structuredAck, optRep(optGo, repInfo, make([]byte, 10)))},
	{"NBD_INFO_BLOCK_SIZE of 12 bytes", cat(greeting(1), structuredAck, optRep(optGo, repInfo, []byte{0, 3, 0, 0, 2, 0, 0, 0, 16, 0, 0, 1}))},
	{"ACK without NBD_INFO_EXPORT", cat(greeting(1), structuredAck, optRep(optGo, repAck, nil))},
	{"minimum block 0", cat(greeting(1), structuredAck, infoBlockRep(0, 4096, 1<<20))},
	{"minimum block not a power of two", cat(greeting(1), structuredAck, infoBlockRep(768, 4096, 1<<20))},
	{"minimum block of 128 KiB", cat(greeting(1), structuredAck, infoBlockRep(128<<10, 128<<10, 1<<20))},
	{"preferred below 512", cat(greeting(1), structuredAck, infoBlockRep(1, 256, 1<<20))},
	{"preferred below minimum", cat(greeting(1), structuredAck, infoBlockRep(8192, 4096, 1<<20))},
	{"maximum below preferred", cat(greeting(1), structuredAck, infoBlockRep(512, 4096, 2048))},
	{"flags without HAS_FLAGS", cat(greeting(1), structuredAck, infoExportRep(4096, FlagSendFlush), optRep(optGo, repAck, nil))},
	{"size beyond any device", cat(greeting(1), structuredAck, infoExportRep(1<<63, hsFlags), optRep(optGo, repAck, nil))},
	{"EXPORT_NAME reply without HAS_FLAGS", cat(greeting(0), exportNameRep(512, 0, true))},
}

func TestHandshakeRefusesHostileServers(t *testing.T) {
	for _, tc := range hostileHandshakes {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := runHandshake(tc.server, false)
			var pe *ProtocolError
			require.ErrorAs(t, err, &pe)
			assert.ErrorIs(t, err, blk.ErrProtocol)
			t.Log(err)
		})
	}
}

func TestHandshakeTruncated(t *testing.T) {
	full := cat(greeting(flagFixedNewstyle|flagNoZeroes), structuredAck, infoBlockRep(512, 4096, 1<<20),
		infoExportRep(1<<30, hsFlags), optRep(optGo, repAck, nil))
	for n := 0; n < len(full); n++ {
		_, _, _, err := runHandshake(full[:n], false)
		require.Error(t, err, "cut at %d", n)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "cut at %d: %v", n, err)
	}
	// After NBD_OPT_EXPORT_NAME, a close means the server has no such export.
	_, _, _, err := runHandshake(cat(greeting(0), make([]byte, 5)), false)
	assert.ErrorContains(t, err, "no such export?")
}

// FuzzHandshake feeds arbitrary server bytes to the handshake: it must
// never panic, and what it accepts must satisfy the protocol's rules.
func FuzzHandshake(f *testing.F) {
	f.Add(cat(greeting(flagFixedNewstyle|flagNoZeroes), structuredAck, infoBlockRep(512, 4096, 1<<20),
		infoExportRep(1<<30, hsFlags), optRep(optGo, repAck, nil)), false)
	f.Add(cat(greeting(flagFixedNewstyle), optRep(optGo, repErrUnsup, nil), exportNameRep(8192, hsFlags, true)), true)
	f.Add(cat(greeting(0), exportNameRep(512, hsFlags, true)), false)
	for _, tc := range hostileHandshakes {
		f.Add(tc.server, false)
	}
	f.Fuzz(func(t *testing.T, server []byte, noStructured bool) {
		res, err := handshake(rw{bytes.NewReader(server), io.Discard}, "exp", noStructured)
		if err != nil {
			return
		}
		if res.flags&FlagHasFlags == 0 || res.size > 1<<62 {
			t.Fatalf("accepted flags %#x size %d", res.flags, res.size)
		}
		if res.minBlock != 0 && checkBlockSizes(res.minBlock, res.prefBlock, res.maxPayload) != nil {
			t.Fatalf("accepted block sizes %d/%d/%d", res.minBlock, res.prefBlock, res.maxPayload)
		}
		if noStructured && res.structured {
			t.Fatalf("structured replies without asking")
		}
	})
}
