package nbd

import (
	"errors"
	"fmt"

	"yolk/blk"
)

// Errno is an NBD error value, as a reply carries it. The spec restricts
// servers to the values below (which are Linux errno values); others are
// treated as EINVAL, as the spec asks.
type Errno uint32

// The NBD error values, plus EROFS, which some servers send for a write to
// a read-only export although the spec says EPERM.
const (
	EPERM     Errno = 1
	EIO       Errno = 5
	ENOMEM    Errno = 12
	EINVAL    Errno = 22
	ENOSPC    Errno = 28
	EROFS     Errno = 30
	EOVERFLOW Errno = 75
	ENOTSUP   Errno = 95
	ESHUTDOWN Errno = 108
)

var errnoNames = map[Errno]string{
	EPERM: "EPERM", EIO: "EIO", ENOMEM: "ENOMEM", EINVAL: "EINVAL",
	ENOSPC: "ENOSPC", EROFS: "EROFS", EOVERFLOW: "EOVERFLOW",
	ENOTSUP: "ENOTSUP", ESHUTDOWN: "ESHUTDOWN",
}

func (e Errno) String() string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", uint32(e))
}

// Sentinel maps the error value to the blk cause a caller tests for:
//
//	EIO                               ErrIO
//	ENOSPC                            ErrNoSpace
//	EPERM, EROFS                      ErrReadOnly
//	ENOTSUP, EOVERFLOW                ErrUnsupported (the operation or its
//	                                  size is beyond what the server offers)
//	EINVAL, ENOMEM, ESHUTDOWN, other  ErrIO (the server refused a request
//	                                  the client had already checked)
func (e Errno) Sentinel() error {
	switch e {
	case ENOSPC:
		return blk.ErrNoSpace
	case EPERM, EROFS:
		return blk.ErrReadOnly
	case ENOTSUP, EOVERFLOW:
		return blk.ErrUnsupported
	}
	return blk.ErrIO
}

// ServerError is an error the server replied with: its error value, the
// message of a structured error chunk (empty with simple replies), and the
// offset an NBD_REPLY_TYPE_ERROR_OFFSET chunk names. It unwraps to the blk
// sentinel of its error value (Errno.Sentinel), so errors.Is(err,
// blk.ErrIO) works through a RequestError.
type ServerError struct {
	Errno     Errno
	Message   string
	HasOffset bool
	Offset    uint64
}

func (e *ServerError) Error() string {
	s := "server replied " + e.Errno.String()
	if e.HasOffset {
		s += fmt.Sprintf(" at offset %d", e.Offset)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func (e *ServerError) Unwrap() error { return e.Errno.Sentinel() }

// ProtocolError is a violation of the protocol by the server: a malformed
// or hostile reply or handshake. It wraps blk.ErrProtocol. The connection
// it came on is dropped.
type ProtocolError struct {
	Msg string
}

func (e *ProtocolError) Error() string { return "protocol error: " + e.Msg }

func (e *ProtocolError) Unwrap() error { return blk.ErrProtocol }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// OptionError is a handshake option the server refused with an
// NBD_REP_ERR_* reply, e.g. NBD_OPT_GO for an export it does not have.
type OptionError struct {
	Option  uint32
	Reply   uint32
	Message string
}

var repErrNames = map[uint32]string{
	repErrUnsup:       "NBD_REP_ERR_UNSUP (option not supported)",
	repErrPolicy:      "NBD_REP_ERR_POLICY (forbidden by server policy)",
	repErrInvalid:     "NBD_REP_ERR_INVALID (invalid option)",
	repErrPlatform:    "NBD_REP_ERR_PLATFORM (not supported on this platform)",
	repErrTLSReqd:     "NBD_REP_ERR_TLS_REQD (server requires TLS)",
	repErrUnknown:     "NBD_REP_ERR_UNKNOWN (no such export)",
	repErrShutdown:    "NBD_REP_ERR_SHUTDOWN (server shutting down)",
	repErrBlockSize:   "NBD_REP_ERR_BLOCK_SIZE_REQD (block size negotiation required)",
	repErrTooBig:      "NBD_REP_ERR_TOO_BIG (request or reply too large)",
	repErrExtHdrsReqd: "NBD_REP_ERR_EXT_HEADER_REQD (extended headers required)",
}

func (e *OptionError) Error() string {
	name, ok := repErrNames[e.Reply]
	if !ok {
		name = fmt.Sprintf("error reply %#x", e.Reply)
	}
	s := fmt.Sprintf("server refused option %d: %s", e.Option, name)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// ErrUnknownExport is what an OptionError for NBD_REP_ERR_UNKNOWN is
// (errors.Is): the export named in Config.Export does not exist.
var ErrUnknownExport = errors.New("unknown export")

func (e *OptionError) Is(target error) bool {
	return target == ErrUnknownExport && e.Reply == repErrUnknown
}

// errRetry completes a request whose connection was lost: its caller sends
// it again on a new connection. It never reaches a caller of the Client.
var errRetry = errors.New("nbd: connection lost, resend")
