package journal

import "fmt"

// checkpointWork is the background checkpoint, queued when every buffer
// holds a committed transaction and a new one cannot start.
func (j *Journal) checkpointWork() {
	err := j.checkpoint()
	j.mu.Lock()
	defer j.mu.Unlock()
	j.ckptBusy = false
	if err != nil {
		j.abort(err)
		return
	}
	j.maybeCheckpoint()
}

// Checkpoint writes every committed transaction's records to their home
// blocks and frees their log space and buffers (jbd2_log_do_checkpoint).
// It runs on the journal's queue.
func (j *Journal) Checkpoint() error {
	err := j.runOnQueue(j.checkpoint)
	if err != nil {
		j.mu.Lock()
		j.abort(err)
		j.mu.Unlock()
	}
	return err
}

// checkpoint writes home the committed transactions in the log, makes
// those writes durable, and only then moves the superblock's tail past
// them: until the new tail is durable, recovery replays them again, which
// is harmless because home blocks are written only from the journal, in
// log order. Their log space is reused only after that.
func (j *Journal) checkpoint() error {
	j.ckptMu.Lock()
	defer j.ckptMu.Unlock()

	j.mu.Lock()
	if j.err != nil {
		err := j.err
		j.mu.Unlock()
		return err
	}
	n := 0
	for n < len(j.inLog) && j.inLog[n].committed {
		n++
	}
	j.mu.Unlock()
	if n == 0 {
		return nil
	}

	// Only this function removes entries, under ckptMu: the first n stay
	// put while mu is dropped (commits only append).
	records := 0
	t := j.ckbuf
	j.ckHomes = j.ckHomes[:0]
	var lastSeq uint64
	for i := range n {
		j.mu.Lock()
		lt := j.inLog[i]
		j.mu.Unlock()
		if lt.live == 0 {
			// Every record is in a later acknowledged transaction,
			// which this pass writes home or the log keeps for
			// recovery to replay: nothing to read or write.
			j.mu.Lock()
			j.stats.CheckpointTxSkipped++
			j.mu.Unlock()
			lastSeq = lt.seq
			continue
		}
		blocks, stop, err := j.readTransaction(t, lt.pos, lt.seq, lt.blocks)
		if err != nil {
			return fmt.Errorf("checkpoint of transaction %d: reading the log: %w", lt.seq, err)
		}
		if stop != "" || blocks != lt.blocks {
			// The device lost a block it acknowledged.
			return fmt.Errorf("checkpoint of transaction %d: the log no longer holds it: %s", lt.seq, stop)
		}
		j.unescape(t)
		if err := j.writeHome(t, lt.seq); err != nil {
			return fmt.Errorf("checkpoint of transaction %d: %w", lt.seq, err)
		}
		records += t.n
		j.ckHomes = append(j.ckHomes, t.homes[:t.n]...)
		lastSeq = lt.seq
	}
	if j.flush {
		if err := j.dev.Flush(); err != nil {
			return fmt.Errorf("checkpoint flush: %w", err)
		}
	}

	// The new tail: the oldest transaction still in the log (the one
	// being written), or the head.
	j.mu.Lock()
	var start, seq uint64
	if len(j.inLog) > n {
		lt := j.inLog[n]
		start, seq = lt.pos+1, lt.seq
	} else {
		start, seq = j.head+1, j.nextSeq
		if j.committing != nil {
			// Sequenced but not yet placed: it will go at the head.
			seq = j.committing.seq
		}
	}
	j.mu.Unlock()
	if err := j.writeSuperblock(start, seq); err != nil {
		return fmt.Errorf("checkpoint: superblock: %w", err)
	}

	// Free the space, and drop the log map entries of what is now home,
	// with no ReadBlock reading the log: logMu.
	j.logMu.Lock()
	j.mu.Lock()
	for _, home := range j.ckHomes {
		j.logMap.removeUpTo(home, lastSeq)
	}
	for _, lt := range j.inLog[:n] {
		j.used -= lt.blocks
	}
	j.inLog = append(j.inLog[:0], j.inLog[n:]...)
	j.stats.Checkpoints++
	j.stats.CheckpointRecords += uint64(records)
	j.cond.Broadcast()
	j.mu.Unlock()
	j.logMu.Unlock()
	return nil
}

// writeHome writes the records of t, transaction seq, to their home
// blocks, one request for each run of records that are adjacent both in
// the buffer and on the device, leaving out the records a later
// acknowledged transaction has replaced (the log map names it): their
// newer copy goes home in this pass, or stays in the log for recovery.
func (j *Journal) writeHome(t *txBuf, seq uint64) error {
	bs := j.bs
	current := func(i int) bool {
		j.mu.Lock()
		loc, ok := j.logMap.get(t.homes[i])
		j.mu.Unlock()
		return !ok || loc.seq <= seq
	}
	for i := 0; i < t.n; {
		if !current(i) {
			j.mu.Lock()
			j.stats.CheckpointSkipped++
			j.mu.Unlock()
			i++
			continue
		}
		k := i + 1
		for k < t.n && t.homes[k] == t.homes[k-1]+1 && t.slotOff(k) == t.slotOff(k-1)+bs && current(k) {
			k++
		}
		b := t.mem[t.slotOff(i) : t.slotOff(k-1)+bs]
		if err := j.dev.WriteAt(b, int64(t.homes[i])*int64(bs), 0); err != nil {
			return err
		}
		i = k
	}
	return nil
}
