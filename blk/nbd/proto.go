package nbd

// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md),
// in the spec's names. Everything on the wire is big-endian.

const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic        = 0x49484156454f5054 // "IHAVEOPT"
	cliservMagic    = 0x00420281861253   // oldstyle negotiation
	optReplyMagic   = 0x3e889045565a9
	requestMagic    = 0x25609513
	simpleMagic     = 0x67446698
	structuredMagic = 0x668e33ef
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle  = 1 << 0
	flagNoZeroes       = 1 << 1
	flagCFixedNewstyle = 1 << 0
	flagCNoZeroes      = 1 << 1
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optGo              = 7
	optStructuredReply = 8
)

// Option reply types. Errors have bit 31 set.
const (
	repAck            = 1
	repInfo           = 3
	repFlagError      = 1 << 31
	repErrUnsup       = repFlagError | 1
	repErrPolicy      = repFlagError | 2
	repErrInvalid     = repFlagError | 3
	repErrPlatform    = repFlagError | 4
	repErrTLSReqd     = repFlagError | 5
	repErrUnknown     = repFlagError | 6
	repErrShutdown    = repFlagError | 7
	repErrBlockSize   = repFlagError | 8
	repErrTooBig      = repFlagError | 9
	repErrExtHdrsReqd = repFlagError | 10
)

// Information types in NBD_REP_INFO.
const (
	infoExport    = 0
	infoBlockSize = 3
)

// Transmission flags.
const (
	FlagHasFlags        = 1 << 0
	FlagReadOnly        = 1 << 1
	FlagSendFlush       = 1 << 2
	FlagSendFUA         = 1 << 3
	FlagRotational      = 1 << 4
	FlagSendTrim        = 1 << 5
	FlagSendWriteZeroes = 1 << 6
	FlagSendDF          = 1 << 7
	FlagCanMultiConn    = 1 << 8
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6
)

// Command flags.
const (
	cmdFlagFUA    = 1 << 0
	cmdFlagNoHole = 1 << 1
)

// Structured reply flags and chunk types. Error chunks have bit 15 set.
const (
	replyFlagDone       = 1 << 0
	replyTypeNone       = 0
	replyTypeOffsetData = 1
	replyTypeOffsetHole = 2
	replyTypeBlockStat  = 5
	replyTypeError      = 1<<15 | 1
	replyTypeErrorOff   = 1<<15 | 2
	replyTypeErrorBit   = 1 << 15
)

// Sizes of fixed wire records.
const (
	requestSize         = 28 // magic, flags, type, cookie, offset, length
	simpleReplySize     = 16 // magic, error, cookie
	structuredReplySize = 20 // magic, flags, type, cookie, length
)

// Protocol limits.
const (
	// maxString bounds a string on the wire (export names, messages):
	// the spec's MUST.
	maxString = 4096
	// maxOptReply bounds an option reply we read whole (NBD_REP_INFO and
	// error messages); a larger reply is a protocol error rather than an
	// allocation the server chooses.
	maxOptReply = 64 << 10
	// defaultMaxPayload is the spec's default maximum payload, 32 MiB,
	// used when the server advertises none.
	defaultMaxPayload = 32 << 20
	// maxMinBlock is the largest minimum block size the spec allows.
	maxMinBlock = 64 << 10
	// maxEffect bounds the length of one NBD_CMD_TRIM or
	// NBD_CMD_WRITE_ZEROES: they carry no payload, so the maximum payload
	// does not bind them, but a 32-bit length does, and servers may
	// refuse huge ones with EOVERFLOW; 1 GiB is a multiple of every legal
	// block size.
	maxEffect = 1 << 30
)

// cmdName names a command for errors.
func cmdName(cmd uint16) string {
	switch cmd {
	case cmdRead:
		return "NBD_CMD_READ"
	case cmdWrite:
		return "NBD_CMD_WRITE"
	case cmdDisc:
		return "NBD_CMD_DISC"
	case cmdFlush:
		return "NBD_CMD_FLUSH"
	case cmdTrim:
		return "NBD_CMD_TRIM"
	case cmdWriteZeroes:
		return "NBD_CMD_WRITE_ZEROES"
	}
	return "NBD_CMD_?"
}
