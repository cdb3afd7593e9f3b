package nbdserver

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// The few protocol constants the readiness check needs (NBD protocol,
// "Newstyle negotiation" and "Transmission phase").
const (
	nbdMagic        = "NBDMAGIC"
	optMagic        = 0x49484156454F5054 // "IHAVEOPT"
	optReplyMagic   = 0x0003e889045565a9
	requestMagic    = 0x25609513
	flagFixed       = 1 << 0 // handshake flag NBD_FLAG_FIXED_NEWSTYLE
	flagNoZeroes    = 1 << 1 // handshake flag NBD_FLAG_NO_ZEROES
	optGo           = 7
	repAck          = 1
	repInfo         = 3
	repErrBit       = 1 << 31
	infoExport      = 0
	cmdDisc         = 2
	maxOptReplySize = 64 << 10
)

// Transmission flags, as the export's NBD_INFO_EXPORT reply carries them.
const (
	flagHasFlags     = 1 << 0
	flagReadOnly     = 1 << 1
	flagSendFlush    = 1 << 2
	flagSendFUA      = 1 << 3
	flagRotational   = 1 << 4
	flagSendTrim     = 1 << 5
	flagWriteZeroes  = 1 << 6
	flagSendDF       = 1 << 7
	flagMultiConn    = 1 << 8
	flagSendResize   = 1 << 9
	flagSendCache    = 1 << 10
	flagSendFastZero = 1 << 11
)

// handshake connects to addr, negotiates export with NBD_OPT_GO as any
// fixed-newstyle client would, and disconnects with NBD_CMD_DISC. It
// returns the export's size and transmission flags.
//
// Readiness means this succeeds: a bare TCP connect only shows that the
// socket is bound, and reading the greeting alone would not catch an
// nbd-server that cannot open its file (it opens it only on NBD_OPT_GO). A
// clean NBD_CMD_DISC keeps the servers' logs free of aborted-handshake
// noise.
func handshake(addr, export string, timeout time.Duration) (size int64, flags uint16, err error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, 0, err
	}

	var hello [18]byte
	if _, err := io.ReadFull(c, hello[:]); err != nil {
		return 0, 0, fmt.Errorf("reading the greeting: %w", err)
	}
	if string(hello[:8]) != nbdMagic || binary.BigEndian.Uint64(hello[8:16]) != optMagic {
		return 0, 0, fmt.Errorf("not a newstyle NBD greeting: % x", hello)
	}
	hflags := binary.BigEndian.Uint16(hello[16:])
	if hflags&flagFixed == 0 {
		return 0, 0, fmt.Errorf("server is not fixed-newstyle (handshake flags %#x)", hflags)
	}

	var req bytes.Buffer
	put32 := func(v uint32) { binary.Write(&req, binary.BigEndian, v) }
	put32(uint32(flagFixed | hflags&flagNoZeroes)) // client flags
	binary.Write(&req, binary.BigEndian, uint64(optMagic))
	put32(optGo)
	put32(uint32(4 + len(export) + 2))
	put32(uint32(len(export)))
	req.WriteString(export)
	binary.Write(&req, binary.BigEndian, uint16(0)) // no info requests: NBD_INFO_EXPORT comes anyway
	if _, err := c.Write(req.Bytes()); err != nil {
		return 0, 0, err
	}

	gotExport := false
	for {
		var hdr [20]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return 0, 0, fmt.Errorf("reading the NBD_OPT_GO reply: %w", err)
		}
		if binary.BigEndian.Uint64(hdr[:8]) != optReplyMagic {
			return 0, 0, fmt.Errorf("bad option reply magic: % x", hdr[:8])
		}
		typ := binary.BigEndian.Uint32(hdr[12:16])
		n := binary.BigEndian.Uint32(hdr[16:20])
		if n > maxOptReplySize {
			return 0, 0, fmt.Errorf("option reply of %d bytes", n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c, data); err != nil {
			return 0, 0, fmt.Errorf("reading the NBD_OPT_GO reply: %w", err)
		}
		switch {
		case typ == repAck:
			if !gotExport {
				return 0, 0, fmt.Errorf("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT")
			}
			// Transmission phase: say goodbye properly.
			var disc [28]byte
			binary.BigEndian.PutUint32(disc[0:], requestMagic)
			binary.BigEndian.PutUint16(disc[6:], cmdDisc)
			c.Write(disc[:])
			return size, flags, nil
		case typ == repInfo && len(data) >= 12 && binary.BigEndian.Uint16(data) == infoExport:
			size = int64(binary.BigEndian.Uint64(data[2:10]))
			flags = binary.BigEndian.Uint16(data[10:12])
			gotExport = true
		case typ&repErrBit != 0:
			return 0, 0, fmt.Errorf("server refused export %q: error %#x %q", export, typ, data)
		}
	}
}

// flagNames lists the transmission flags that are set, for messages.
func flagNames(f uint16) []string {
	names := []struct {
		bit  uint16
		name string
	}{
		{flagReadOnly, "read-only"}, {flagSendFlush, "flush"}, {flagSendFUA, "fua"},
		{flagRotational, "rotational"}, {flagSendTrim, "trim"}, {flagWriteZeroes, "write-zeroes"},
		{flagSendDF, "df"}, {flagMultiConn, "multi-conn"}, {flagSendResize, "resize"},
		{flagSendCache, "cache"}, {flagSendFastZero, "fast-zero"},
	}
	var out []string
	for _, n := range names {
		if f&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return out
}
