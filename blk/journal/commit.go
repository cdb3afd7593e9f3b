package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sort"

	"yolk/blk"
)

// commitWork writes transaction t to the log and acknowledges it. It runs
// on the journal's queue. Nothing here allocates: t's buffer already holds
// the data in log order, and the descriptors and commit block are built in
// place.
func (j *Journal) commitWork(t *txBuf) {
	blocks := uint64(txBlocks(t.n, j.bs))
	if err := j.place(t, blocks); err != nil {
		j.mu.Lock()
		j.abort(err)
		j.mu.Unlock()
		return
	}
	j.seal(t)
	err := j.writeLog(t)
	j.unescape(t)

	j.mu.Lock()
	defer j.mu.Unlock()
	if err != nil {
		j.abort(fmt.Errorf("commit of transaction %d: %w", t.seq, err))
		return
	}
	j.inLog[len(j.inLog)-1].committed = true
	j.committing = nil
	j.free = append(j.free, t)
	if j.running == nil {
		j.running = j.takeBuffer()
	}
	j.doneSeq, j.doneTid = t.seq, t.tid
	j.mapTransaction(t)
	j.stats.Commits++
	j.stats.Records += uint64(t.n)
	j.stats.LogBlocks += blocks
	j.kick()
	j.cond.Broadcast()
}

// mapTransaction enters t's records in the log map as it is acknowledged:
// from now on ReadBlock reads them from the log until a checkpoint has
// written them home. Records later in t replace earlier ones for the same
// home, as they do when written home. Each transaction in the log counts
// its live records, the homes whose newest copy it holds: a record t
// replaces is no longer live in its older transaction, which the
// checkpoint then need not write home (jbd2 drops a buffer from an older
// transaction's checkpoint list when a newer one journals it). Called
// with mu held, t last in inLog; allocates nothing.
func (j *Journal) mapTransaction(t *txBuf) {
	bs := j.bs
	lt := &j.inLog[len(j.inLog)-1]
	for i := range t.n {
		home := t.homes[i]
		old, had := j.logMap.get(home)
		if !had || old.seq != t.seq {
			lt.live++
			if had {
				j.superseded(old.seq)
			}
		}
		idx := (t.pos + uint64(t.slotOff(i)/bs)) % j.L
		j.logMap.put(home, logLoc{idx: idx, seq: t.seq, crc: t.crcs[i], escaped: t.escaped[i]})
	}
}

// superseded takes one live record from transaction seq, still in inLog
// (the log map only names transactions in it). Called with mu held.
func (j *Journal) superseded(seq uint64) {
	i := sort.Search(len(j.inLog), func(i int) bool { return j.inLog[i].seq >= seq })
	if i < len(j.inLog) && j.inLog[i].seq == seq {
		j.inLog[i].live--
	}
}

// place gives t its log space at the head, checkpointing first while the
// log has too little free.
func (j *Journal) place(t *txBuf, blocks uint64) error {
	waited := false
	for {
		j.mu.Lock()
		if j.err != nil {
			err := j.err
			j.mu.Unlock()
			return err
		}
		if j.L-j.used >= blocks {
			t.pos, t.blocks, t.placed = j.head, blocks, true
			j.head = (j.head + blocks) % j.L
			j.used += blocks
			j.stats.MaxUsed = max(j.stats.MaxUsed, j.used)
			j.inLog = append(j.inLog, logTx{seq: t.seq, pos: t.pos, blocks: blocks})
			if waited {
				j.stats.LogFullWaits++
			}
			j.mu.Unlock()
			return nil
		}
		committed := j.hasCommitted()
		j.mu.Unlock()
		if !committed {
			// Layout.validate makes the log hold the largest
			// transaction: an empty log that cannot is a bug.
			return fmt.Errorf("log of %d blocks has no room for %d with nothing to checkpoint", j.L, blocks)
		}
		waited = true
		if err := j.checkpoint(); err != nil {
			return err
		}
	}
}

// seal builds t's descriptors and commit block and escapes data blocks
// that begin with the magic number.
func (j *Journal) seal(t *txBuf) {
	bs := j.bs
	tpd := tagsPerDescriptor(bs)
	be := binary.BigEndian
	ndesc := descriptors(t.n, bs)
	var descCRC [4]byte
	var sum uint32
	for d := range ndesc {
		first := d * tpd
		count := min(tpd, t.n-first)
		desc := t.mem[d*(tpd+1)*bs:][:bs]
		clear(desc)
		putHeader(desc, blockDescriptor, t.seq)
		be.PutUint32(desc[headerSize:], uint32(count))
		for k := range count {
			i := first + k
			data := t.slot(i)
			var flags uint32
			t.escaped[i] = be.Uint32(data) == Magic
			if t.escaped[i] {
				be.PutUint32(data, 0)
				flags |= flagEscaped
			}
			t.crcs[i] = crc(data)
			putTag(desc, k, tag{home: t.homes[i], flags: flags, crc: t.crcs[i]})
		}
		sealBlock(desc)
		be.PutUint32(descCRC[:], be.Uint32(desc[bs-4:]))
		sum = crc32.Update(sum, castagnoli, descCRC[:])
	}
	c := t.mem[(t.n+ndesc)*bs:][:bs]
	clear(c)
	putHeader(c, blockCommit, t.seq)
	be.PutUint32(c[headerSize:], uint32(t.n))
	be.PutUint32(c[headerSize+4:], uint32(ndesc))
	be.PutUint32(c[headerSize+8:], sum)
	sealBlock(c)
}

// unescape restores the magic number of escaped data blocks, so that a
// checkpoint writes them home as they were added.
func (j *Journal) unescape(t *txBuf) {
	for i := range t.n {
		if t.escaped[i] {
			binary.BigEndian.PutUint32(t.slot(i), Magic)
		}
	}
}

// writeLog writes t's blocks at its log position, durably: one request,
// or two when the transaction wraps the end of the log. Every block of
// it carries a checksum, so a crash that leaves part of the request on the
// device leaves a transaction recovery rejects; it was not acknowledged.
func (j *Journal) writeLog(t *txBuf) error {
	bs := uint64(j.bs)
	b := t.mem[:t.blocks*bs]
	first := min(t.blocks, j.L-t.pos)
	var flags blk.WriteFlags
	if j.fua {
		flags = blk.FUA
	}
	if err := j.dev.WriteAt(b[:first*bs], j.logOff(t.pos), flags); err != nil {
		return err
	}
	if first < t.blocks {
		if err := j.dev.WriteAt(b[first*bs:], j.logOff(0), flags); err != nil {
			return err
		}
	}
	if !j.fua && j.flush {
		return j.dev.Flush()
	}
	return nil
}
