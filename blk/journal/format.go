package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// On-disk format. Every integer is big-endian, as jbd2 stores them, so a
// hexdump reads left to right. A journal block is BlockSize bytes; block
// numbers are in those units from the start of the device.
//
// The journal region is LogStart .. LogStart+LogBlocks-1: the superblock at
// LogStart, then the circular log of LogBlocks-1 blocks, addressed by log
// index 0 .. L-1. A transaction in the log is
//
//	[descriptor][data]...[data][descriptor][data]...[commit]
//
// with one descriptor before every TagsPerDescriptor data blocks; it may wrap
// from the end of the log to its start at any block.
//
// Header of every log block that is not data (16 bytes):
//
//	0  magic     u32  Magic
//	4  type      u32  blockDescriptor or blockCommit
//	8  sequence  u64  the transaction's sequence number
//
// Descriptor: header, count u32 (tags in this descriptor), then count tags
// of 16 bytes (home block u64, flags u32, crc32c u32 of the data block as
// written to the log), and the block's own crc32c in its last 4 bytes.
//
// Commit: header, records u32 (data blocks in the transaction),
// descriptors u32, crc32c u32 over the descriptors' own checksums in order
// (which ties the commit to exactly those descriptors), and the block's own
// crc32c in its last 4 bytes. The rest of both blocks is zero.
//
// A data block whose first four bytes equal Magic is written with them
// zeroed and the tag flag flagEscaped, as jbd2 escapes, so that no data
// block can be taken for a header when a scan lands on it.
//
// The superblock keeps everything it says, and its checksum, in its first
// 512 bytes: a write torn at a sector boundary leaves either the old or the
// new superblock, never a mix that checks out.
//
//	0  magic      u32  Magic
//	4  type       u32  blockSuperblock
//	8  version    u32  Version
//	12 blocksize  u32
//	16 logStart   u64  block number of the superblock
//	24 logBlocks  u64  blocks in the journal region, superblock included
//	32 maxTx      u32  most data blocks in one transaction
//	36 reserved   u32
//	40 start      u64  log index of the oldest live transaction + 1; 0 = empty (clean)
//	48 sequence   u64  sequence number expected at start (or of the next transaction when clean)
//	56 crc32c     u32  of bytes 0..511 with this field zero

const (
	// Magic marks every journal header block ("YJNL").
	Magic   = 0x594a4e4c
	Version = 1

	blockDescriptor = 1
	blockCommit     = 2
	blockSuperblock = 3

	flagEscaped = 1

	headerSize = 16
	tagSize    = 16
	sbCRCOff   = 56
	sector     = 512
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// ErrCorrupt is wrapped by errors about a superblock that is not a valid
// journal superblock: recovery refuses it and writes nothing.
var ErrCorrupt = errors.New("journal: corrupt superblock")

// Layout is the geometry of a journal, fixed when it is formatted.
type Layout struct {
	BlockSize int    // bytes per journal block: a power of two, 512..4096
	LogStart  uint64 // block number of the superblock
	LogBlocks uint64 // blocks in the journal region, superblock included
	// MaxTransaction is the most data blocks one transaction may carry;
	// it sizes the commit buffers. Default 62: with its descriptor and
	// commit block, a transaction of 4 KiB blocks is 256 KiB, an order-6
	// buffer with nothing wasted.
	MaxTransaction int
}

// tagsPerDescriptor is how many tags fit in one descriptor block.
func tagsPerDescriptor(bs int) int { return (bs - headerSize - 4 - 4) / tagSize }

// descriptors is how many descriptor blocks n data blocks need.
func descriptors(n, bs int) int {
	t := tagsPerDescriptor(bs)
	return (n + t - 1) / t
}

// txBlocks is the log length of a transaction of n data blocks.
func txBlocks(n, bs int) int {
	if n == 0 {
		return 0
	}
	return n + descriptors(n, bs) + 1
}

// logLen is the number of blocks in the circular log.
func (l Layout) logLen() uint64 { return l.LogBlocks - 1 }

func (l *Layout) validate(devBlockSize int, devSize int64) error {
	if l.MaxTransaction == 0 {
		l.MaxTransaction = 62
	}
	bs := l.BlockSize
	if bs < sector || bs > 4096 || bs&(bs-1) != 0 {
		return fmt.Errorf("journal: block size %d: want a power of two from 512 to 4096", bs)
	}
	if bs%devBlockSize != 0 {
		return fmt.Errorf("journal: block size %d is not a multiple of the device's %d", bs, devBlockSize)
	}
	devBlocks := uint64(devSize) / uint64(bs)
	if l.LogBlocks < 4 || l.LogStart+l.LogBlocks > devBlocks || l.LogStart+l.LogBlocks < l.LogStart {
		return fmt.Errorf("journal: region %d+%d blocks does not fit a device of %d blocks", l.LogStart, l.LogBlocks, devBlocks)
	}
	if l.MaxTransaction < 1 {
		return fmt.Errorf("journal: max transaction %d", l.MaxTransaction)
	}
	// The largest transaction, its control blocks being the reserve, must
	// fit in the log, or a full log could never take it.
	if need := uint64(l.MaxTransaction + reserveBlocks(*l)); need > l.logLen() {
		return fmt.Errorf("journal: a log of %d blocks cannot hold a %d-block transaction and its reserve (%d blocks)", l.logLen(), l.MaxTransaction, need)
	}
	return nil
}

// reserveBlocks is the slice of the log that records never take: room for
// the control blocks (descriptors and commit) of the largest transaction.
// Admission counts a transaction's records against the log less this slice,
// so a transaction admitted into a nearly full log can always be written
// whole once checkpointing has made room for its records: it never waits
// for log space half written.
func reserveBlocks(l Layout) int { return descriptors(l.MaxTransaction, l.BlockSize) + 1 }

// superblock is the decoded superblock.
type superblock struct {
	Layout
	start    uint64 // log index + 1 of the tail; 0 = clean
	sequence uint64
}

func (sb *superblock) encode(b []byte) {
	clear(b)
	be := binary.BigEndian
	be.PutUint32(b[0:], Magic)
	be.PutUint32(b[4:], blockSuperblock)
	be.PutUint32(b[8:], Version)
	be.PutUint32(b[12:], uint32(sb.BlockSize))
	be.PutUint64(b[16:], sb.LogStart)
	be.PutUint64(b[24:], sb.LogBlocks)
	be.PutUint32(b[32:], uint32(sb.MaxTransaction))
	be.PutUint64(b[40:], sb.start)
	be.PutUint64(b[48:], sb.sequence)
	be.PutUint32(b[sbCRCOff:], crc(b[:sector]))
}

// decodeSuperblock checks and decodes a superblock read from block
// logStart. Any inconsistency is ErrCorrupt with the reason.
func decodeSuperblock(b []byte, logStart uint64) (superblock, error) {
	var sb superblock
	if len(b) < sector {
		return sb, fmt.Errorf("%w: short block", ErrCorrupt)
	}
	be := binary.BigEndian
	if m := be.Uint32(b[0:]); m != Magic {
		return sb, fmt.Errorf("%w: bad magic %#08x at block %d", ErrCorrupt, m, logStart)
	}
	var s [sector]byte
	copy(s[:], b[:sector])
	want := be.Uint32(s[sbCRCOff:])
	be.PutUint32(s[sbCRCOff:], 0)
	if got := crc(s[:]); got != want {
		return sb, fmt.Errorf("%w: checksum %#08x, want %#08x", ErrCorrupt, got, want)
	}
	if t := be.Uint32(b[4:]); t != blockSuperblock {
		return sb, fmt.Errorf("%w: block type %d", ErrCorrupt, t)
	}
	if v := be.Uint32(b[8:]); v != Version {
		return sb, fmt.Errorf("%w: version %d, this journal reads %d", ErrCorrupt, v, Version)
	}
	sb.BlockSize = int(be.Uint32(b[12:]))
	sb.LogStart = be.Uint64(b[16:])
	sb.LogBlocks = be.Uint64(b[24:])
	sb.MaxTransaction = int(be.Uint32(b[32:]))
	sb.start = be.Uint64(b[40:])
	sb.sequence = be.Uint64(b[48:])
	if sb.LogStart != logStart {
		return sb, fmt.Errorf("%w: superblock at block %d says it is at %d", ErrCorrupt, logStart, sb.LogStart)
	}
	if sb.LogBlocks < 4 || sb.start > sb.LogBlocks-1 {
		return sb, fmt.Errorf("%w: start %d outside a log of %d blocks", ErrCorrupt, sb.start, sb.LogBlocks)
	}
	return sb, nil
}

func putHeader(b []byte, typ uint32, seq uint64) {
	be := binary.BigEndian
	be.PutUint32(b[0:], Magic)
	be.PutUint32(b[4:], typ)
	be.PutUint64(b[8:], seq)
}

// header reads a header block's type and sequence, and whether its own
// checksum (in the last 4 bytes) holds.
func header(b []byte) (typ uint32, seq uint64, ok bool) {
	be := binary.BigEndian
	if be.Uint32(b[0:]) != Magic {
		return 0, 0, false
	}
	n := len(b) - 4
	if crc(b[:n]) != be.Uint32(b[n:]) {
		return 0, 0, false
	}
	return be.Uint32(b[4:]), be.Uint64(b[8:]), true
}

func sealBlock(b []byte) {
	n := len(b) - 4
	binary.BigEndian.PutUint32(b[n:], crc(b[:n]))
}

// tag is one descriptor entry.
type tag struct {
	home  uint64
	flags uint32
	crc   uint32
}

func putTag(d []byte, i int, t tag) {
	b := d[headerSize+4+i*tagSize:]
	be := binary.BigEndian
	be.PutUint64(b[0:], t.home)
	be.PutUint32(b[8:], t.flags)
	be.PutUint32(b[12:], t.crc)
}

func getTag(d []byte, i int) tag {
	b := d[headerSize+4+i*tagSize:]
	be := binary.BigEndian
	return tag{home: be.Uint64(b[0:]), flags: be.Uint32(b[8:]), crc: be.Uint32(b[12:])}
}
