package journal

import (
	"encoding/binary"
	"fmt"
)

// ReadBlock fills b (one journal block, BlockSize bytes) with the latest
// committed contents of block home (a device block number in journal
// blocks, as for Handle.Add). When an acknowledged transaction (its Commit
// has returned, or would) that has not yet been checkpointed holds the
// block, the data is that of the newest such transaction, read from its
// copy in the log and checked against the crc32c of its tag; otherwise it is
// the home block's. Blocks of a transaction still running or being written
// are not seen: until it is acknowledged, ReadBlock returns the version
// before it.
//
// This lets a cache drop a block as soon as the commit that wrote it back
// is durable, without waiting for the checkpoint to write it home.
//
// ReadBlock may be called from any goroutine, concurrently with commits,
// checkpoints and Close. A log copy that fails its checksum is an error
// wrapping ErrBadLogBlock (b then holds what was read); the journal is left
// running, and its next checkpoint, which checks the log again, aborts it.
// After an abort, ReadBlock goes on working: what was acknowledged stays in
// the log, whose space is never reused once the journal has aborted, and
// comes from there, the rest from home; that is what the next Open will
// recover. After Close it returns ErrClosed.
func (j *Journal) ReadBlock(home uint64, b []byte) error {
	if len(b) != j.bs {
		return fmt.Errorf("%w: a buffer of %d bytes, the block size is %d", ErrBadRecord, len(b), j.bs)
	}
	if err := j.checkHome(home); err != nil {
		return err
	}
	// Shared logMu for the whole read: no checkpoint moves the tail, so
	// no log space is reused and no log map entry is dropped, until it
	// is done.
	j.logMu.RLock()
	defer j.logMu.RUnlock()
	for {
		j.mu.Lock()
		if j.closed {
			j.mu.Unlock()
			return fmt.Errorf("%s: %w", j.name, ErrClosed)
		}
		loc, inLog := j.logMap.get(home)
		j.mu.Unlock()
		if inLog {
			return j.readLogCopy(home, loc, b)
		}
		if err := j.dev.ReadAt(b, int64(home)*int64(j.bs)); err != nil {
			return fmt.Errorf("journal: %s: reading block %d: %w", j.name, home, err)
		}
		// A transaction writing home may have been acknowledged during
		// the read, and a checkpoint may have been writing it home under
		// the read: then b may hold a mix, and the log copy, which stays
		// put while we hold logMu, is the one to read. If the block is
		// still not in the map, nothing wrote it: entries are dropped
		// only after their block is home, and not while we hold logMu.
		j.mu.Lock()
		if _, inLog = j.logMap.get(home); !inLog {
			j.stats.HomeReads++
			j.mu.Unlock()
			return nil
		}
		j.mu.Unlock()
	}
}

// readLogCopy reads home's log copy at loc into b, checks it against its
// tag's checksum and undoes its escaping. Called with logMu shared.
func (j *Journal) readLogCopy(home uint64, loc logLoc, b []byte) error {
	if err := j.readLog(b, loc.idx); err != nil {
		return fmt.Errorf("journal: %s: reading block %d from log index %d: %w", j.name, home, loc.idx, err)
	}
	if got := crc(b); got != loc.crc {
		return fmt.Errorf("%w: %s: block %d at log index %d (transaction %d): crc32c %#08x, its tag says %#08x",
			ErrBadLogBlock, j.name, home, loc.idx, loc.seq, got, loc.crc)
	}
	if loc.escaped {
		binary.BigEndian.PutUint32(b, Magic)
	}
	j.mu.Lock()
	j.stats.LogReads++
	j.mu.Unlock()
	return nil
}
