package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Recovery reports what Open found in the log and replayed.
type Recovery struct {
	Clean        bool   // the superblock said nothing before its start needed replay
	Transactions int    // committed transactions replayed
	Records      int    // blocks written to their home
	FirstSeq     uint64 // sequence of the first replayed transaction
	LastSeq      uint64 // and of the last
	Scanned      uint64 // log blocks read
	// Stop says why the scan ended after the last committed transaction:
	// the first block that is not the next transaction's descriptor, a
	// checksum that fails, a missing commit. It is the normal end of a log
	// (the blocks after the last commit are stale or torn).
	Stop string
}

// recover replays the committed transactions from the superblock's tail,
// in order, stopping at the first block that does not continue the log,
// then marks the journal clean with a sequence number above anything the
// log may hold. A crash during recovery leaves the old superblock, so the
// next recovery replays the same transactions again: replay only writes
// whole blocks with the contents they get anyway.
//
// One pass suffices: a transaction is replayed only once its commit block
// has been read and every checksum in it holds, and this journal has no
// revoke records that a later transaction could use to cancel an earlier
// one's blocks.
func (j *Journal) recover(sb superblock) (Recovery, error) {
	// A clean superblock (start 0) still names where the next transaction
	// goes, index 0 with its sequence: transactions committed since
	// are found by the same scan.
	r := Recovery{Clean: sb.start == 0}
	pos, seq := uint64(0), sb.sequence
	if sb.start != 0 {
		pos = sb.start - 1
	}
	t := j.ckbuf
	for r.Scanned < j.L {
		n, stop, err := j.readTransaction(t, pos, seq, j.L-r.Scanned)
		if err != nil {
			return r, fmt.Errorf("journal: recovery: reading the log: %w", err)
		}
		if stop != "" {
			r.Stop = fmt.Sprintf("log index %d, sequence %d: %s", pos, seq, stop)
			break
		}
		j.unescape(t)
		if err := j.writeHome(t, t.seq); err != nil { // the log map is empty: every record goes home
			return r, fmt.Errorf("journal: recovery: replaying transaction %d: %w", seq, err)
		}
		if r.Transactions == 0 {
			r.FirstSeq = seq
		}
		r.Transactions++
		r.Records += t.n
		r.LastSeq = seq
		r.Scanned += n
		pos = (pos + n) % j.L
		seq++
	}
	if r.Stop == "" {
		r.Stop = "scanned the whole log"
	}
	if r.Transactions > 0 && j.flush {
		if err := j.dev.Flush(); err != nil {
			return r, fmt.Errorf("journal: recovery: flush: %w", err)
		}
	}
	// The transaction after the last committed one may be half written
	// anywhere in the log: skip its sequence number so that none of its
	// blocks can ever pass for a later transaction's.
	next := seq + 1
	if err := j.writeSuperblock(0, next); err != nil {
		return r, fmt.Errorf("journal: recovery: superblock: %w", err)
	}
	j.nextSeq, j.doneSeq, j.head = next, next-1, 0
	return r, nil
}

// readTransaction reads the transaction expected at log index pos with
// sequence seq into t, checking every checksum. It returns the blocks it
// spans, or a non-empty stop reason when the log does not hold a whole,
// committed transaction there. err is for the device failing.
func (j *Journal) readTransaction(t *txBuf, pos, seq, room uint64) (uint64, string, error) {
	bs := j.bs
	tpd := tagsPerDescriptor(bs)
	maxBlocks := uint64(txBlocks(j.layout.MaxTransaction, bs))
	be := binary.BigEndian
	t.n, t.seq = 0, seq
	var k uint64 // blocks of the transaction read so far
	var sum uint32
	ndesc := 0
	for {
		if k >= room || k >= maxBlocks {
			return 0, "transaction longer than the log or the largest transaction", nil
		}
		b := t.mem[k*uint64(bs):][:bs]
		if err := j.readLog(b, (pos+k)%j.L); err != nil {
			return 0, "", err
		}
		typ, s, ok := header(b)
		switch {
		case !ok:
			return 0, fmt.Sprintf("block %d is not a valid header (torn, stale or data)", k), nil
		case s != seq:
			return 0, fmt.Sprintf("block %d has sequence %d (stale)", k, s), nil
		case typ == blockCommit:
			if ndesc == 0 {
				return 0, "commit block without a descriptor", nil
			}
			if got := be.Uint32(b[headerSize:]); got != uint32(t.n) {
				return 0, fmt.Sprintf("commit block counts %d records, the descriptors %d", got, t.n), nil
			}
			if got := be.Uint32(b[headerSize+4:]); got != uint32(ndesc) {
				return 0, fmt.Sprintf("commit block counts %d descriptors, read %d", got, ndesc), nil
			}
			if got := be.Uint32(b[headerSize+8:]); got != sum {
				return 0, "commit block does not match the descriptors' checksums", nil
			}
			return k + 1, "", nil
		case typ != blockDescriptor:
			return 0, fmt.Sprintf("block %d has type %d", k, typ), nil
		}
		// A descriptor: it must sit where the buffer's layout puts the
		// next one, and every descriptor but the last is full.
		if k != uint64(ndesc*(tpd+1)) || (ndesc > 0 && t.n != ndesc*tpd) {
			return 0, "descriptor out of place", nil
		}
		count := int(be.Uint32(b[headerSize:]))
		if count < 1 || count > tpd || t.n+count > j.layout.MaxTransaction {
			return 0, fmt.Sprintf("descriptor with %d tags", count), nil
		}
		ndesc++
		var dc [4]byte
		be.PutUint32(dc[:], be.Uint32(b[bs-4:]))
		sum = crc32.Update(sum, castagnoli, dc[:])
		if k+1+uint64(count) > room {
			return 0, "transaction longer than the log", nil
		}
		if err := j.readLogRange(t.mem[(k+1)*uint64(bs):][:count*bs], (pos+k+1)%j.L, uint64(count)); err != nil {
			return 0, "", err
		}
		for c := range count {
			tg := getTag(b, c)
			data := t.slot(t.n)
			if crc(data) != tg.crc {
				return 0, fmt.Sprintf("data block %d fails its checksum (torn or stale)", t.n), nil
			}
			if tg.flags&^flagEscaped != 0 {
				return 0, fmt.Sprintf("data block %d has unknown flags %#x", t.n, tg.flags), nil
			}
			if err := j.checkHome(tg.home); err != nil {
				return 0, fmt.Sprintf("data block %d: %v", t.n, err), nil
			}
			t.homes[t.n] = tg.home
			t.escaped[t.n] = tg.flags&flagEscaped != 0
			t.n++
		}
		k += 1 + uint64(count)
	}
}

func (j *Journal) readLog(b []byte, i uint64) error {
	return j.dev.ReadAt(b, j.logOff(i))
}

// readLogRange reads n blocks from log index i, wrapping at the end.
func (j *Journal) readLogRange(b []byte, i, n uint64) error {
	bs := uint64(j.bs)
	first := min(n, j.L-i)
	if err := j.dev.ReadAt(b[:first*bs], j.logOff(i)); err != nil {
		return err
	}
	if first < n {
		return j.dev.ReadAt(b[first*bs:n*bs], j.logOff(0))
	}
	return nil
}
