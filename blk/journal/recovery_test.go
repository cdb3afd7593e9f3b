package journal

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Recovery's two defences against a rolled-back transaction coming back,
// each on its own: TestCrashStatesTwoRounds shows the harm when both are
// gone, and each of them alone prevents it there.

// TestRecoveryRejectsACommitBlockOfAnotherTransaction puts in the log, where
// a transaction's commit block belongs, the commit block of another
// transaction with the same sequence number, position and size: what a
// sequence number used twice leaves when the second transaction's commit
// block lands without its descriptor. Its own checksum, sequence and counts
// hold; only its checksum over the descriptors tells it from the genuine one.
// Recovery must stop there, with the transactions before it replayed.
func TestRecoveryRejectsACommitBlockOfAnotherTransaction(t *testing.T) {
	pool := newPool(t, 16)
	// Two journals in step: the same transactions, then a third that
	// differs only in its homes.
	devA, _ := newDevice(t, 128, 32, 8)
	devB, _ := newDevice(t, 128, 32, 8)
	jA, jB := open(t, devA, pool), open(t, devB, pool)
	for v := 1; v <= 2; v++ {
		homes := []uint64{38 + 2*uint64(v), 39 + 2*uint64(v)}
		commit(t, jA, v, homes...)
		commit(t, jB, v, homes...)
	}
	commit(t, jA, 3, 44, 45)
	commit(t, jB, 3, 46, 47)
	crashed, control := image(t, devA), image(t, devA)
	// Each transaction is a descriptor, two records and a commit block;
	// the log starts at block 1.
	at := int64(1+3*txBlocks(2, testBS)-1) * testBS
	forged := make([]byte, testBS)
	require.NoError(t, devB.ReadAt(forged, at))
	require.NoError(t, jA.Close())
	require.NoError(t, jB.Close())

	genuine := make([]byte, testBS)
	require.NoError(t, crashed.ReadAt(genuine, at))
	typ, seq, ok := header(genuine)
	require.True(t, ok)
	require.Equal(t, uint32(blockCommit), typ)
	ftyp, fseq, fok := header(forged)
	require.True(t, fok, "the forged commit block's own checksum holds")
	require.Equal(t, uint32(blockCommit), ftyp)
	require.Equal(t, seq, fseq, "same sequence number")
	require.Equal(t, genuine[headerSize:headerSize+8], forged[headerSize:headerSize+8], "same counts of records and descriptors")
	require.NotEqual(t, genuine, forged)
	require.NoError(t, crashed.WriteAt(forged, at, 0))

	j := open(t, crashed, pool)
	r := j.Recovery()
	require.NoError(t, j.Close())
	assert.Equal(t, 2, r.Transactions, "recovery: %+v", r)
	assert.Equal(t, seq-1, r.LastSeq)
	assert.Contains(t, r.Stop, "does not match the descriptors' checksums")
	for v := 1; v <= 2; v++ {
		assert.Equal(t, block(38+2*uint64(v), v), readBlock(t, crashed, 38+2*uint64(v)))
		assert.Equal(t, block(39+2*uint64(v), v), readBlock(t, crashed, 39+2*uint64(v)))
	}
	zero := make([]byte, testBS)
	for h := uint64(44); h <= 47; h++ {
		assert.Equal(t, zero, readBlock(t, crashed, h), "home %d: the third transaction was not replayed", h)
	}

	// The genuine commit block is replayed: the forgery alone stopped it.
	j = open(t, control, pool)
	assert.Equal(t, 3, j.Recovery().Transactions)
	require.NoError(t, j.Close())
	assert.Equal(t, block(44, 3), readBlock(t, control, 44))
}

// TestRecoverySkipsTheRolledBackSequence crashes with a transaction whose
// descriptor and records are in the log but whose commit block is not.
// Recovery rolls it back and must give the next transaction a sequence
// number two past the last one it replayed: the rolled-back one's number
// stays on blocks in the log, and a transaction that reused it at the same
// place could be completed by them.
func TestRecoverySkipsTheRolledBackSequence(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 128, 32, 8)
	j := open(t, dev, pool)
	for v := 1; v <= 3; v++ {
		commit(t, j, v, 40+uint64(v))
	}
	commit(t, j, 4, 50, 51)
	crashed := image(t, dev)
	require.NoError(t, j.Close())
	// Three transactions of three blocks, then the fourth's descriptor,
	// two records and commit block: the crash lost the commit block.
	desc := 1 + 3*txBlocks(1, testBS)
	commitAt := int64(desc+txBlocks(2, testBS)-1) * testBS
	require.NoError(t, crashed.WriteAt(make([]byte, testBS), commitAt, 0))

	j = open(t, crashed, pool)
	r := j.Recovery()
	require.Equal(t, 3, r.Transactions, "recovery: %+v", r)
	typ, rolledBack, ok := header(readBlock(t, crashed, uint64(desc)))
	require.True(t, ok)
	require.Equal(t, uint32(blockDescriptor), typ)
	require.Equal(t, r.LastSeq+1, rolledBack, "the rolled-back transaction's descriptor is still in the log")
	sb, err := decodeSuperblock(readBlock(t, crashed, 0), 0)
	require.NoError(t, err)
	assert.Zero(t, sb.start, "recovery leaves the log empty")
	assert.Equal(t, r.LastSeq+2, sb.sequence, "and the next sequence number past the rolled-back one")

	commit(t, j, 5, 60)
	again := image(t, crashed)
	require.NoError(t, j.Close())
	j = open(t, again, pool)
	r2 := j.Recovery()
	require.NoError(t, j.Close())
	assert.Equal(t, 1, r2.Transactions)
	assert.Equal(t, r.LastSeq+2, r2.FirstSeq, "the first transaction after recovery")
	assert.Equal(t, block(60, 5), readBlock(t, again, 60))
	assert.Equal(t, make([]byte, testBS), readBlock(t, again, 50), "the rolled-back transaction stays rolled back")
}

// TestEscapedDataCannotForgeATransaction commits records that are
// themselves a transaction, a descriptor, a block and a commit block that
// check out (a journal image kept in the journaled store, say), and gets
// recovery to scan them: after a crash, a transaction that ends just where
// they begin is the last in the log, and recovery reads the next block as
// the next descriptor. Because a record that begins with Magic goes to the
// log with its magic zeroed (as jbd2 escapes), they are not headers there,
// and recovery stops instead of replaying the forgery.
func TestEscapedDataCannotForgeATransaction(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 128, 32, 8)
	j := open(t, dev, pool)
	sb, err := decodeSuperblock(readBlock(t, dev, 0), 0)
	require.NoError(t, err)
	// Sequence numbers from here: the first transaction sb.sequence
	// and the second one more; recovery skips one past the next, so the
	// first transaction after it is sb.sequence+3, and the block after it
	// is read as sb.sequence+4's descriptor.
	forgedSeq := sb.sequence + 4
	const target = 70 // the home the forgery writes
	payload := block(target, 99)
	desc := make([]byte, testBS)
	putHeader(desc, blockDescriptor, forgedSeq)
	binary.BigEndian.PutUint32(desc[headerSize:], 1)
	putTag(desc, 0, tag{home: target, crc: crc(payload)})
	sealBlock(desc)
	cmt := make([]byte, testBS)
	putHeader(cmt, blockCommit, forgedSeq)
	binary.BigEndian.PutUint32(cmt[headerSize:], 1)
	binary.BigEndian.PutUint32(cmt[headerSize+4:], 1)
	binary.BigEndian.PutUint32(cmt[headerSize+8:], crc(desc[testBS-4:]))
	sealBlock(cmt)

	// Log index 0-3: two records; 4-8: the forgery's three blocks as
	// records, at index 5-7.
	commit(t, j, 1, 40, 41)
	h, err := j.Begin(3)
	require.NoError(t, err)
	for i, b := range [][]byte{desc, payload, cmt} {
		require.NoError(t, h.Add(60+uint64(i), b))
	}
	require.NoError(t, h.Commit())
	crashed := image(t, dev)
	require.NoError(t, j.Close())

	// Recovery starts the log again at index 0, where three records take
	// index 0-4: the block after them is the forged descriptor.
	j = open(t, crashed, pool)
	require.Equal(t, 2, j.Recovery().Transactions)
	commit(t, j, 2, 50, 51, 52)
	again := image(t, crashed)
	require.NoError(t, j.Close())

	j = open(t, again, pool)
	r := j.Recovery()
	require.NoError(t, j.Close())
	assert.Equal(t, forgedSeq-1, r.FirstSeq, "the forgery's sequence number is the next one recovery looks for")
	assert.Equal(t, 1, r.Transactions, "recovery: %+v", r)
	assert.Contains(t, r.Stop, fmt.Sprintf("log index 5, sequence %d: block 0 is not a valid header", forgedSeq))
	assert.Equal(t, make([]byte, testBS), readBlock(t, again, target), "the forged transaction was not replayed")
	assert.Equal(t, desc, readBlock(t, again, 60), "the records come home as they were added")
	assert.Equal(t, cmt, readBlock(t, again, 62))
}
