package journal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
)

// readJ reads home through the journal.
func readJ(t testing.TB, j *Journal, home uint64) []byte {
	t.Helper()
	b := make([]byte, j.BlockSize())
	require.NoError(t, j.ReadBlock(home, b))
	return b
}

// mapLen is the number of log map entries.
func mapLen(j *Journal) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.logMap.len()
}

func TestReadBlockFromTheLogThenHome(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 256, 64, 16)
	j := open(t, dev, pool)
	assert.Equal(t, testBS, j.BlockSize())
	assert.Equal(t, make([]byte, testBS), readJ(t, j, 100), "never written: home's zeroes")

	commit(t, j, 1, 100, 101)
	require.NoError(t, j.Checkpoint())
	assert.Zero(t, mapLen(j), "a checkpoint empties the map")
	commit(t, j, 2, 100)
	assert.Equal(t, block(100, 1), readBlock(t, dev, 100), "not yet home")
	assert.Equal(t, block(100, 2), readJ(t, j, 100), "read from the log")
	assert.Equal(t, block(101, 1), readJ(t, j, 101), "read from home")
	s := j.Stats()
	assert.EqualValues(t, 1, s.LogReads)
	assert.EqualValues(t, 2, s.HomeReads)

	require.NoError(t, j.Checkpoint())
	assert.Zero(t, mapLen(j))
	assert.Equal(t, block(100, 2), readBlock(t, dev, 100))
	assert.Equal(t, block(100, 2), readJ(t, j, 100))
	s = j.Stats()
	assert.EqualValues(t, 1, s.LogReads)
	assert.EqualValues(t, 3, s.HomeReads)
	require.NoError(t, j.Close())
}

func TestReadBlockEscaped(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 128, 32, 8)
	j := open(t, dev, pool)
	b := block(50, 1)
	binary.BigEndian.PutUint32(b, Magic)
	h, err := j.Begin(2)
	require.NoError(t, err)
	require.NoError(t, h.Add(50, b))
	require.NoError(t, h.Add(51, block(51, 1)))
	require.NoError(t, h.Commit())
	assert.Equal(t, make([]byte, testBS), readBlock(t, dev, 50))
	assert.Equal(t, b, readJ(t, j, 50), "an escaped block reads back with its magic")
	assert.Equal(t, block(51, 1), readJ(t, j, 51))
	assert.EqualValues(t, 2, j.Stats().LogReads)
	require.NoError(t, j.Close())
	assert.Equal(t, b, readBlock(t, dev, 50))
}

func TestReadBlockNewestCommittedWins(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 256, 64, 8)
	j := open(t, dev, pool)
	for v := 1; v <= 4; v++ {
		commit(t, j, v, 100, 101+uint64(v))
		assert.Equal(t, block(100, v), readJ(t, j, 100), "after commit %d", v)
	}
	// Twice in one transaction: the later record, as a checkpoint writes.
	h, err := j.Begin(2)
	require.NoError(t, err)
	require.NoError(t, h.Add(100, block(100, 5)))
	require.NoError(t, h.Add(100, block(100, 6)))
	require.NoError(t, h.Commit())
	assert.Equal(t, block(100, 6), readJ(t, j, 100))
	assert.Equal(t, 5, mapLen(j), "one entry per home")

	// A checkpoint of the first transactions leaves the newer entries.
	require.NoError(t, j.Checkpoint())
	commit(t, j, 7, 100)
	assert.Equal(t, block(100, 7), readJ(t, j, 100))
	require.NoError(t, j.Close())
	assert.Equal(t, block(100, 7), readBlock(t, dev, 100))
}

func TestReadBlockDoesNotSeeUncommitted(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 128, 32, 8)
	j := open(t, dev, pool)
	commit(t, j, 1, 40)
	h, err := j.Begin(2)
	require.NoError(t, err)
	require.NoError(t, h.Add(40, block(40, 2)))
	require.NoError(t, h.Add(41, block(41, 2)))
	assert.Equal(t, block(40, 1), readJ(t, j, 40), "a running transaction is invisible")
	assert.Equal(t, make([]byte, testBS), readJ(t, j, 41))
	require.NoError(t, h.Commit())
	assert.Equal(t, block(40, 2), readJ(t, j, 40))
	assert.Equal(t, block(41, 2), readJ(t, j, 41))
	require.NoError(t, j.Close())
}

// gateDevice holds writes to the log while armed, until released.
type gateDevice struct {
	blk.Device
	logEnd  int64
	armed   atomic.Bool
	blocked chan struct{}
	release chan struct{}
}

func (d *gateDevice) WriteAt(p []byte, off int64, f blk.WriteFlags) error {
	if off >= testBS && off < d.logEnd && d.armed.CompareAndSwap(true, false) {
		d.blocked <- struct{}{}
		<-d.release
	}
	return d.Device.WriteAt(p, off, f)
}

// TestReadBlockDoesNotSeeACommitUnderWay holds a transaction's log write:
// it is in the log, or about to be, but not acknowledged.
func TestReadBlockDoesNotSeeACommitUnderWay(t *testing.T) {
	pool := newPool(t, 16)
	ram, l := newDevice(t, 128, 32, 8)
	dev := &gateDevice{Device: ram, logEnd: int64(l.LogBlocks) * testBS, blocked: make(chan struct{}), release: make(chan struct{})}
	j := open(t, dev, pool)
	commit(t, j, 1, 40)
	dev.armed.Store(true)
	done := make(chan error)
	go func() {
		h, err := j.Begin(1)
		if err == nil {
			err = h.Add(40, block(40, 2))
		}
		if err == nil {
			err = h.Commit()
		}
		done <- err
	}()
	<-dev.blocked
	assert.Equal(t, block(40, 1), readJ(t, j, 40), "being written: invisible")
	close(dev.release)
	require.NoError(t, <-done)
	assert.Equal(t, block(40, 2), readJ(t, j, 40))
	require.NoError(t, j.Close())
}

func TestReadBlockArguments(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 128, 32, 8)
	j := open(t, dev, pool)
	assert.ErrorIs(t, j.ReadBlock(40, make([]byte, 512)), ErrBadRecord, "short buffer")
	assert.ErrorIs(t, j.ReadBlock(5, make([]byte, testBS)), ErrBadRecord, "inside the journal")
	assert.ErrorIs(t, j.ReadBlock(128, make([]byte, testBS)), ErrBadRecord, "beyond the device")
	commit(t, j, 1, 40)
	require.NoError(t, j.Close())
	assert.ErrorIs(t, j.ReadBlock(40, make([]byte, testBS)), ErrClosed)
}

// TestReadBlockAfterAbort: what was acknowledged is still read from the
// log, the rest from home; Close then makes it ErrClosed.
func TestReadBlockAfterAbort(t *testing.T) {
	pool := newPool(t, 16)
	ram, _ := newDevice(t, 128, 32, 8)
	require.NoError(t, ram.WriteAt(block(43, 0), 43*testBS, 0))
	dev := &failingDevice{Device: ram, writes: 3}
	j := open(t, dev, pool)
	commit(t, j, 1, 40)
	commit(t, j, 2, 41)
	h, err := j.Begin(1)
	require.NoError(t, err)
	require.NoError(t, h.Add(42, block(42, 3)))
	require.ErrorIs(t, h.Commit(), ErrAborted)
	assert.Equal(t, block(40, 1), readJ(t, j, 40))
	assert.Equal(t, block(41, 2), readJ(t, j, 41))
	assert.Equal(t, make([]byte, testBS), readJ(t, j, 42), "never acknowledged")
	assert.Equal(t, block(43, 0), readJ(t, j, 43))
	s := j.Stats()
	assert.EqualValues(t, 2, s.LogReads)
	assert.EqualValues(t, 2, s.HomeReads)
	assert.ErrorIs(t, j.Close(), ErrAborted)
	assert.ErrorIs(t, j.ReadBlock(40, make([]byte, testBS)), ErrClosed)
}

// TestReadBlockAfterRecovery crashes after each commit and reads every
// block back through the recovered journal: all of it is home, the map is
// empty.
func TestReadBlockAfterRecovery(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 256, 32, 8)
	j := open(t, dev, pool)
	defer j.Close()
	want := map[uint64][]byte{}
	for v := range 20 {
		homes := []uint64{40 + uint64(v%7), 60 + uint64(v%5)}
		commit(t, j, v, homes...)
		for _, h := range homes {
			want[h] = block(h, v)
		}
		crashed := image(t, dev)
		j2 := open(t, crashed, pool)
		assert.Zero(t, mapLen(j2))
		for h, b := range want {
			require.Equal(t, b, readJ(t, j2, h), "block %d after commit %d", h, v)
		}
		s := j2.Stats()
		assert.Zero(t, s.LogReads)
		assert.EqualValues(t, len(want), s.HomeReads)
		require.NoError(t, j2.Close())
	}
}

// TestReadBlockCorruptLogCopy damages a block's log copy behind the
// journal's back: ReadBlock reports it, and the next checkpoint aborts.
func TestReadBlockCorruptLogCopy(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 128, 32, 8)
	j := open(t, dev, pool)
	commit(t, j, 1, 40, 41)
	j.mu.Lock()
	loc, ok := j.logMap.get(40)
	j.mu.Unlock()
	require.True(t, ok)
	off := j.logOff(loc.idx)
	b := make([]byte, testBS)
	require.NoError(t, dev.ReadAt(b, off))
	require.Equal(t, block(40, 1), b, "the log copy")
	b[1000] ^= 0x40
	require.NoError(t, dev.WriteAt(b, off, 0))

	err := j.ReadBlock(40, make([]byte, testBS))
	require.ErrorIs(t, err, ErrBadLogBlock)
	t.Logf("corrupt: %v", err)
	assert.Equal(t, block(41, 1), readJ(t, j, 41), "the other block is intact")
	assert.Error(t, j.Close(), "the checkpoint finds the damage too")
}

// vblock is version v of home for the concurrent test: block, with the
// magic number in front of every third version, to be escaped.
func vblock(home uint64, v int) []byte {
	b := block(home, v)
	if v%3 == 0 {
		binary.BigEndian.PutUint32(b, Magic)
	}
	return b
}

// TestReadBlockConcurrent commits random blocks on a small log, so that
// checkpoints and wrap-arounds are frequent, while readers check that
// every read returns a version that was committed, and none older than the
// last one acknowledged before the read began.
func TestReadBlockConcurrent(t *testing.T) {
	pool := newPool(t, 32)
	dev, l := newDevice(t, 256, 24, 4)
	j := open(t, dev, pool)
	const writers, readers, per = 4, 4, 8
	each := 300
	if raceEnabled {
		each = 150
	}
	var started, acked [writers * per]atomic.Int64 // by home - 100
	var stop atomic.Bool
	var failed atomic.Bool
	fail := func(format string, args ...any) {
		if failed.CompareAndSwap(false, true) {
			t.Errorf(format, args...)
		}
		stop.Store(true)
	}

	var wg, rg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range each {
				if stop.Load() {
					return
				}
				n := 1 + r.IntN(3)
				idx := r.Perm(per)[:n]
				h, err := j.Begin(n)
				if err != nil {
					fail("begin: %v", err)
					return
				}
				vs := make([]int, n)
				for k, i := range idx {
					slot := w*per + i
					vs[k] = int(started[slot].Add(1))
					if err := h.Add(100+uint64(slot), vblock(100+uint64(slot), vs[k])); err != nil {
						fail("add: %v", err)
						return
					}
				}
				if err := h.Commit(); err != nil {
					fail("commit: %v", err)
					return
				}
				for k, i := range idx {
					acked[w*per+i].Store(int64(vs[k]))
				}
			}
		}()
	}
	var reads atomic.Int64
	for r := range readers {
		rg.Add(1)
		go func() {
			defer rg.Done()
			rnd := rand.New(rand.NewPCG(uint64(r), 2))
			b := make([]byte, testBS)
			for !stop.Load() {
				slot := rnd.IntN(writers * per)
				home := 100 + uint64(slot)
				lo := acked[slot].Load()
				if err := j.ReadBlock(home, b); err != nil {
					fail("read %d: %v", home, err)
					return
				}
				hi := started[slot].Load()
				reads.Add(1)
				if bytes.Equal(b, make([]byte, testBS)) {
					if lo != 0 {
						fail("block %d: never-written zeroes after version %d was acknowledged", home, lo)
					}
					continue
				}
				v := int64(binary.BigEndian.Uint64(b[16:]))
				if v < 1 || v > hi || !bytes.Equal(b, vblock(home, int(v))) {
					fail("block %d: not a committed version (read version %d, at most %d issued)", home, v, hi)
					return
				}
				if v < lo {
					fail("block %d: version %d read after version %d was acknowledged", home, v, lo)
					return
				}
			}
		}()
	}
	wg.Wait()
	stop.Store(true)
	rg.Wait()

	s := j.Stats()
	for slot := range writers * per {
		home := 100 + uint64(slot)
		if v := acked[slot].Load(); v > 0 {
			assert.Equal(t, vblock(home, int(v)), readJ(t, j, home), "block %d at the end", home)
		}
	}
	require.NoError(t, j.Close())
	for slot := range writers * per {
		home := 100 + uint64(slot)
		if v := acked[slot].Load(); v > 0 {
			assert.Equal(t, vblock(home, int(v)), readBlock(t, dev, home), "block %d home", home)
		}
	}
	t.Logf("%d reads: %d from the log, %d from home; %d commits, %d checkpoints in a %d-block log",
		reads.Load(), s.LogReads, s.HomeReads, s.Commits, s.Checkpoints, l.logLen())
	assert.Positive(t, s.Checkpoints)
	assert.Positive(t, s.LogReads)
	assert.Positive(t, s.HomeReads)
}

// TestLogMap checks the table against a Go map through a long churn of
// puts and removals, at its full size, and that it never allocates.
func TestLogMap(t *testing.T) {
	for _, max := range []uint64{1, 7, 23, 100, 1000} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			m := newLogMap(max)
			size := len(m.slots)
			ref := map[uint64]logLoc{}
			r := rand.New(rand.NewPCG(max, 3))
			keys := make([]uint64, 0, max)
			for step := range 20000 {
				home := uint64(r.IntN(int(3 * max)))
				if step%7 == 0 {
					home = 1<<40 + home*4096 // far apart and aligned
				}
				_, have := ref[home]
				if have || uint64(len(ref)) < max && r.IntN(2) == 0 {
					loc := logLoc{idx: uint64(step), seq: uint64(step), crc: r.Uint32(), escaped: r.IntN(2) == 0}
					m.put(home, loc)
					ref[home] = loc
					if !have {
						keys = append(keys, home)
					}
				} else if len(keys) > 0 {
					k := r.IntN(len(keys))
					home = keys[k]
					seq := ref[home].seq
					if seq > 0 {
						// Not yet: a later transaction's entry stays.
						m.removeUpTo(home, seq-1)
						got, ok := m.get(home)
						require.True(t, ok)
						require.Equal(t, ref[home], got)
					}
					m.removeUpTo(home, seq)
					delete(ref, home)
					keys[k] = keys[len(keys)-1]
					keys = keys[:len(keys)-1]
				}
				require.Equal(t, len(ref), m.len())
				if step%97 == 0 {
					for k, want := range ref {
						got, ok := m.get(k)
						require.True(t, ok, "step %d: %d missing", step, k)
						require.Equal(t, want, got)
					}
					_, ok := m.get(1<<50 + uint64(step))
					require.False(t, ok)
				}
			}
			require.Equal(t, size, len(m.slots), "never resized")
			allocs := testing.AllocsPerRun(100, func() {
				m.removeUpTo(7, 1<<62)
				m.put(7, logLoc{seq: 1})
				m.removeUpTo(7, 1)
			})
			assert.Zero(t, allocs)
		})
	}
}

// A block rewritten by transaction after transaction goes home once per
// checkpoint: the older copies are left in the log, which is then reused.
func TestCheckpointSkipsReplacedRecords(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 256, 64, 8)
	j := open(t, dev, pool)
	for v := 1; v <= 10; v++ {
		commit(t, j, v, 100)
	}
	commit(t, j, 11, 100, 101)
	require.NoError(t, j.Checkpoint())
	s := j.Stats()
	assert.Equal(t, uint64(10), s.CheckpointTxSkipped, "transactions 1 to 10 hold nothing current")
	assert.Equal(t, uint64(2), s.CheckpointRecords)
	assert.Equal(t, block(100, 11), readBlock(t, dev, 100))
	assert.Equal(t, block(101, 11), readBlock(t, dev, 101))
	require.NoError(t, j.Close())
}
