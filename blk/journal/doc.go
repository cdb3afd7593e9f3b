// Package journal is a physical write-ahead journal on a block device, in
// the manner of Linux's jbd2: an update is a set of whole blocks, each with
// the block number it belongs at (its home); the blocks are first written to
// a circular log with a descriptor and a commit block, and only after the
// commit is durable are they written home (checkpointed). After a crash,
// recovery writes home every transaction whose commit reached the log, so
// each update is on the device entirely or not at all.
//
// # Use
//
//	h, err := j.Begin(3)     // a handle for up to 3 blocks (jbd2_journal_start)
//	h.Add(home, data)        // copied into the running transaction
//	err = h.Commit()         // returns when the transaction is durable
//
// Handles that commit while another transaction is being written join the
// next one, which is written as soon as the first is acknowledged: one log
// write and one FUA (or flush) for all of them (group commit). Transactions
// are written strictly one after another, because recovery stops at the
// first transaction it cannot read whole: acknowledging one before every
// earlier one is durable could lose it behind a torn predecessor.
//
// # Durability
//
// A transaction goes to the log as one request (two when it wraps the end
// of the log) with FUA, or followed by a flush on a device without FUA: the
// commit block is not written after the data, it is written with it. That
// is safe because every block of the transaction carries a crc32c (data
// blocks in their descriptor's tags, descriptors and the commit block in
// themselves, and the commit block over the descriptors): if the crash
// leaves only part of the request on the device, recovery finds a checksum
// that fails and discards the transaction, which had not been acknowledged.
// This is jbd2's async_commit with checksums, and it saves the flush that a
// commit block written after its data needs.
//
// Checkpointing happens when the log fills (a handle cannot be admitted),
// at Close and on request. It reads each committed transaction back from
// the log, checking every checksum again, writes its blocks home, flushes,
// and only then writes the superblock with the new tail; log space is
// reused after that write is durable. Until then recovery replays the
// transactions again, which is harmless: home blocks are written only by
// the journal, in log order. jbd2 checkpoints from buffers it keeps pinned
// in the page cache; yolk reads the log back instead, so the journal's
// memory is two transaction buffers and one to read into, whatever the
// size of the log, and a commit frees its buffer as soon as it is durable.
//
// # Memory
//
// The commit path never waits for memory. Open allocates everything the
// journal needs from the phys pool (Config.Buffers transaction buffers,
// each laid out like a transaction in the log, one more for checkpoint and
// recovery, and the superblock block);
// afterwards a commit copies data into a buffer, builds descriptors in place
// and writes. Every journal I/O — commit, checkpoint, recovery — runs on a
// work queue created with MemReclaim, whose rescuer runs the work when no
// new worker can be had: reclaim waits on commits, so a commit that waited
// for a worker that waited for memory would deadlock (Linux's bcache fix
// "add separate workqueue for journal_write to avoid deadlock", 2018).
//
// # Reading
//
// ReadBlock returns a block's latest committed contents. A transaction's
// blocks stay in the log until a checkpoint writes them home, which may be
// long after their commit was acknowledged; the journal keeps a log map,
// home block to the log index, checksum, escaping and sequence of its
// newest acknowledged copy, and ReadBlock reads from there (checking the
// crc32c of the tag and restoring an escaped magic number) when the block
// is in it, from home otherwise. An entry is added when its transaction is
// acknowledged, in the same critical section that advances doneSeq, so a
// read sees exactly the acknowledged transactions, never one still running
// or being written. It is dropped once a checkpoint has written its
// transaction home and is moving the tail past it, unless a later
// transaction has replaced it. Recovery writes everything home, so the map
// starts empty at Open. A cache may therefore drop a block as soon as the
// commit that wrote it back is durable, where jbd2 pins it in memory until
// the checkpoint.
//
// The map is a fixed table sized at Open for one entry per log block (the
// most it can hold): filling and emptying it allocates nothing.
//
// A reader holds logMu shared from its lookup to the end of its I/O, and
// the checkpoint holds it exclusively, doing no I/O, while it frees log
// space and drops entries: log space is never reused under a read. A
// reader that found nothing and read home looks again, and reads the log
// copy if a transaction was acknowledged meanwhile, whose checkpoint may
// have been writing home under the read.
//
// # Space
//
// Records never take the last reserveBlocks of the log: that slice is held
// for the control blocks (descriptors and commit) of the transaction being
// committed, and Layout.validate makes the log hold the largest transaction
// beside it. A commit that finds the log full checkpoints first, which
// writes nothing to the log; recovery writes nothing to the log either. So a
// full log always drains and every admitted transaction can be written.
//
// # Recovery
//
// Recovery starts at the superblock's tail with the sequence number it
// records, and reads transactions in order: descriptor blocks with the
// expected sequence and a valid checksum, the data blocks their tags
// describe (each checked against its tag), and a commit block with the same
// sequence that counts the same records and descriptors. It stops at the
// first block that breaks any of this: a stale block from an older pass over
// the log, a torn block, a missing commit. Each complete transaction is
// written home as soon as it has been read. The superblock is then
// rewritten with an empty log and a sequence two past the last transaction
// found, so that blocks of a half-written transaction can never be taken for
// a later one's. A crash during recovery leaves the old superblock and the
// same log, so recovery runs again to the same result.
//
// A superblock that is not valid (magic, checksum, version, geometry) is an
// error wrapping ErrCorrupt, and nothing is written.
//
// # Locks
//
// ckptMu (one checkpoint at a time) is taken before logMu (readers shared,
// the tail move exclusive), which is taken before mu, which protects the
// transaction states, log accounting, the log map and counters. No I/O is
// done with mu held, nor with logMu held exclusively; ReadBlock does its
// I/O with logMu shared. A handle's slot in the running transaction is its own to fill
// without the lock; the transaction is not written until every handle has
// committed.
//
// # Invariants
//
//   - at most one transaction is being written; its sequence is one more
//     than the last acknowledged one
//   - inLog holds the placed transactions in log order, and their blocks add
//     up to used; the superblock's tail is at or before the first of them
//   - a buffer is free, running, committing or in inLog, exactly one of them
//   - the log map holds, for each home written by a committed transaction
//     in inLog, the location of the last record for it in the newest such
//     transaction, and nothing else
package journal
