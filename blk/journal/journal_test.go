package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/mm/phys"
)

const testBS = 4096

func newPool(t testing.TB, mib int) *phys.Pool {
	t.Helper()
	p, err := phys.New(phys.Config{Mem: make([]byte, mib<<20), Base: 0x80000000})
	require.NoError(t, err)
	return p
}

// newDevice makes a RAM device of blocks journal blocks with a journal of
// logBlocks at block 0, and returns it with the layout.
func newDevice(t testing.TB, blocks, logBlocks uint64, maxTx int) (*blk.RAM, Layout) {
	t.Helper()
	dev, err := blk.NewRAM(blk.RAMConfig{Size: int64(blocks) * testBS, BlockSize: 512})
	require.NoError(t, err)
	l := Layout{BlockSize: testBS, LogStart: 0, LogBlocks: logBlocks, MaxTransaction: maxTx}
	require.NoError(t, Format(dev, l))
	return dev, l
}

func open(t testing.TB, dev blk.Device, pool *phys.Pool) *Journal {
	t.Helper()
	j, err := Open(dev, 0, testBS, Config{Pool: pool})
	require.NoError(t, err)
	return j
}

// block makes a recognisable block: home, version, and seeded noise.
func block(home uint64, version int) []byte {
	b := make([]byte, testBS)
	r := rand.New(rand.NewPCG(home, uint64(version)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	binary.BigEndian.PutUint64(b[8:], home)
	binary.BigEndian.PutUint64(b[16:], uint64(version))
	return b
}

func readBlock(t testing.TB, dev blk.Device, home uint64) []byte {
	t.Helper()
	b := make([]byte, testBS)
	require.NoError(t, dev.ReadAt(b, int64(home)*testBS))
	return b
}

// commit writes one transaction of the given homes at version v.
func commit(t testing.TB, j *Journal, v int, homes ...uint64) {
	t.Helper()
	h, err := j.Begin(len(homes))
	require.NoError(t, err)
	for _, home := range homes {
		require.NoError(t, h.Add(home, block(home, v)))
	}
	require.NoError(t, h.Commit())
}

// image copies a whole device: a crash that loses nothing the device holds.
func image(t testing.TB, dev blk.Device) *blk.RAM {
	t.Helper()
	b := make([]byte, dev.Size())
	require.NoError(t, dev.ReadAt(b, 0))
	ram, err := blk.NewRAM(blk.RAMConfig{Size: dev.Size(), BlockSize: dev.BlockSize()})
	require.NoError(t, err)
	require.NoError(t, ram.WriteAt(b, 0, 0))
	return ram
}

func TestCommitCloseReopen(t *testing.T) {
	pool := newPool(t, 16)
	free := pool.FreeFrames()
	dev, _ := newDevice(t, 256, 64, 16)
	j := open(t, dev, pool)
	assert.True(t, j.Recovery().Clean)
	for v := range 10 {
		commit(t, j, v, 100+uint64(v), 200, 201)
	}
	require.NoError(t, j.Close())
	assert.Equal(t, free, pool.FreeFrames(), "Close gives every buffer back")
	require.NoError(t, pool.Check())

	for v := range 10 {
		assert.Equal(t, block(100+uint64(v), v), readBlock(t, dev, 100+uint64(v)))
	}
	assert.Equal(t, block(200, 9), readBlock(t, dev, 200), "the last version is home")

	j = open(t, dev, pool)
	r := j.Recovery()
	assert.True(t, r.Clean)
	assert.Zero(t, r.Transactions, "a clean close leaves nothing to replay")
	require.NoError(t, j.Close())
}

// TestRecoveryReplaysCommitted crashes after each commit (an image of the
// device taken while the journal runs) and checks recovery brings home
// every committed transaction.
func TestRecoveryReplaysCommitted(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 256, 32, 8)
	j := open(t, dev, pool)
	defer j.Close()
	want := map[uint64][]byte{}
	for v := range 40 {
		homes := []uint64{40 + uint64(v%7), 60 + uint64(v%5)}
		commit(t, j, v, homes...)
		for _, h := range homes {
			want[h] = block(h, v)
		}
		crashed := image(t, dev)
		j2, err := Open(crashed, 0, testBS, Config{Pool: pool})
		require.NoError(t, err, "recovery after commit %d", v)
		for h, b := range want {
			require.Equal(t, b, readBlock(t, crashed, h), "block %d after commit %d (recovery %+v)", h, v, j2.Recovery())
		}
		require.NoError(t, j2.Close())
	}
	s := j.Stats()
	assert.Positive(t, s.Checkpoints, "a 31-block log wraps and checkpoints")
	t.Logf("stats: %+v", s)
}

func TestEscapedBlocks(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 128, 32, 8)
	j := open(t, dev, pool)
	b := block(50, 1)
	binary.BigEndian.PutUint32(b, Magic)
	h, err := j.Begin(1)
	require.NoError(t, err)
	require.NoError(t, h.Add(50, b))
	require.NoError(t, h.Commit())
	crashed := image(t, dev)
	j2 := open(t, crashed, pool)
	assert.Equal(t, 1, j2.Recovery().Transactions)
	assert.Equal(t, b, readBlock(t, crashed, 50), "an escaped block comes home with its magic")
	require.NoError(t, j2.Close())
	require.NoError(t, j.Close())
	assert.Equal(t, b, readBlock(t, dev, 50))
}

func TestGroupCommit(t *testing.T) {
	pool := newPool(t, 32)
	dev, _ := newDevice(t, 2048, 512, 64)
	j := open(t, dev, pool)
	const writers, each = 16, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := range each {
				home := 1000 + uint64(w)*2
				h, err := j.Begin(2)
				if !assert.NoError(t, err) {
					return
				}
				assert.NoError(t, h.Add(home, block(home, v)))
				assert.NoError(t, h.Add(home+1, block(home+1, v)))
				assert.NoError(t, h.Commit())
			}
		}()
	}
	wg.Wait()
	s := j.Stats()
	require.NoError(t, j.Close())
	assert.EqualValues(t, writers*each, s.Handles)
	assert.Less(t, s.Commits, uint64(writers*each), "handles were grouped")
	assert.Greater(t, s.MaxGroup, uint64(1))
	for w := range writers {
		home := 1000 + uint64(w)*2
		assert.Equal(t, block(home, each-1), readBlock(t, dev, home))
		assert.Equal(t, block(home+1, each-1), readBlock(t, dev, home+1))
	}
	t.Logf("group commit: %d handles in %d commits, at most %d in one", s.Handles, s.Commits, s.MaxGroup)
}

// TestFullLog fills a small log with transactions of the largest size, so
// that every Begin finds it full and waits for a checkpoint.
func TestFullLog(t *testing.T) {
	pool := newPool(t, 16)
	dev, l := newDevice(t, 512, 24, 16)
	require.Equal(t, uint64(23), l.logLen())
	j := open(t, dev, pool)
	for v := range 30 {
		homes := make([]uint64, 16)
		for i := range homes {
			homes[i] = 100 + uint64((v*3+i)%40)
		}
		commit(t, j, v, homes...)
	}
	s := j.Stats()
	assert.GreaterOrEqual(t, s.Checkpoints, uint64(29), "each transaction fills the log")
	assert.Zero(t, s.LogFullWaits, "admission keeps commits from waiting for space")
	assert.LessOrEqual(t, s.MaxUsed, l.logLen())
	require.NoError(t, j.Close())
	t.Logf("full log: %+v", s)
}

// TestCommitsWithAnEmptyPool takes every free frame, reserve included,
// once the journal is open: commits and checkpoints must still run, since
// the commit path allocates nothing and a worker that cannot be had is
// replaced by the queue's rescuer.
func TestCommitsWithAnEmptyPool(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 512, 64, 16)
	j := open(t, dev, pool)
	var hog []phys.PFN
	for {
		f, err := pool.AllocPage(phys.Nowait | phys.Memalloc)
		if err != nil {
			break
		}
		hog = append(hog, f)
	}
	require.Zero(t, pool.FreeFrames())
	for v := range 200 {
		commit(t, j, v, 100+uint64(v%50), 300)
	}
	s := j.Stats()
	assert.Positive(t, s.Checkpoints)
	for _, f := range hog {
		require.NoError(t, pool.Put(f))
	}
	require.NoError(t, j.Close())
	assert.Equal(t, block(300, 199), readBlock(t, dev, 300))
	t.Logf("with no free frame: %d commits, %d checkpoints", s.Commits, s.Checkpoints)
}

func TestBadRecords(t *testing.T) {
	pool := newPool(t, 16)
	dev, _ := newDevice(t, 128, 32, 8)
	j := open(t, dev, pool)
	defer j.Close()
	_, err := j.Begin(9)
	assert.ErrorIs(t, err, ErrTooBig)
	h, err := j.Begin(1)
	require.NoError(t, err)
	assert.ErrorIs(t, h.Add(5, make([]byte, testBS)), ErrBadRecord, "home inside the journal")
	assert.ErrorIs(t, h.Add(128, make([]byte, testBS)), ErrBadRecord, "home beyond the device")
	assert.ErrorIs(t, h.Add(40, make([]byte, 100)), ErrBadRecord, "short block")
	require.NoError(t, h.Add(40, block(40, 0)))
	assert.ErrorIs(t, h.Add(41, block(41, 0)), ErrTooBig, "more than promised")
	require.NoError(t, h.Commit())
	assert.Error(t, h.Commit(), "twice")
}

func TestCorruptSuperblock(t *testing.T) {
	pool := newPool(t, 16)
	free := pool.FreeFrames()
	for name, mutate := range map[string]func(b []byte){
		"magic":    func(b []byte) { b[0] ^= 1 },
		"checksum": func(b []byte) { b[45] ^= 0x10 },
		"version": func(b []byte) {
			binary.BigEndian.PutUint32(b[8:], 2)
			binary.BigEndian.PutUint32(b[sbCRCOff:], 0)
			binary.BigEndian.PutUint32(b[sbCRCOff:], crc(b[:sector]))
		},
		"geometry": func(b []byte) {
			binary.BigEndian.PutUint64(b[24:], 1<<40)
			binary.BigEndian.PutUint32(b[sbCRCOff:], 0)
			binary.BigEndian.PutUint32(b[sbCRCOff:], crc(b[:sector]))
		},
		"zeroed": func(b []byte) { clear(b) },
	} {
		t.Run(name, func(t *testing.T) {
			dev, _ := newDevice(t, 128, 32, 8)
			j := open(t, dev, pool)
			commit(t, j, 1, 40)
			crashed := image(t, dev)
			require.NoError(t, j.Close())
			sb := readBlock(t, crashed, 0)
			mutate(sb)
			require.NoError(t, crashed.WriteAt(sb, 0, 0))
			before := make([]byte, crashed.Size())
			require.NoError(t, crashed.ReadAt(before, 0))

			_, err := Open(crashed, 0, testBS, Config{Pool: pool})
			require.ErrorIs(t, err, ErrCorrupt)
			t.Logf("%s: %v", name, err)
			after := make([]byte, crashed.Size())
			require.NoError(t, crashed.ReadAt(after, 0))
			assert.True(t, bytes.Equal(before, after), "a refused journal is left as it was")
			assert.Equal(t, free, pool.FreeFrames())
		})
	}
}

// failingDevice fails writes after a count, to show an I/O error aborts the
// journal without acknowledging anything it did not write.
type failingDevice struct {
	blk.Device
	mu     sync.Mutex
	writes int
}

func (d *failingDevice) WriteAt(p []byte, off int64, f blk.WriteFlags) error {
	d.mu.Lock()
	d.writes--
	fail := d.writes < 0
	d.mu.Unlock()
	if fail {
		return &blk.RequestError{Device: "failing", Op: blk.OpWrite, Off: off, Len: int64(len(p)), Err: blk.ErrIO}
	}
	return d.Device.WriteAt(p, off, f)
}

func TestIOErrorAborts(t *testing.T) {
	pool := newPool(t, 16)
	free := pool.FreeFrames()
	ram, _ := newDevice(t, 128, 32, 8)
	dev := &failingDevice{Device: ram, writes: 3}
	j := open(t, dev, pool) // recovery writes the superblock: one write
	commit(t, j, 1, 40)
	commit(t, j, 2, 41)
	h, err := j.Begin(1)
	require.NoError(t, err)
	require.NoError(t, h.Add(42, block(42, 3)))
	err = h.Commit()
	require.ErrorIs(t, err, ErrAborted)
	require.ErrorIs(t, err, blk.ErrIO)
	t.Logf("aborted: %v", err)
	_, err = j.Begin(1)
	assert.ErrorIs(t, err, ErrAborted)
	assert.ErrorIs(t, j.Close(), ErrAborted)
	assert.Equal(t, free, pool.FreeFrames())

	j2 := open(t, ram, pool)
	assert.Equal(t, 2, j2.Recovery().Transactions, "both acknowledged commits come back")
	assert.Equal(t, block(40, 1), readBlock(t, ram, 40))
	assert.Equal(t, block(41, 2), readBlock(t, ram, 41))
	require.NoError(t, j2.Close())
}

// FuzzRecovery hands recovery a log of arbitrary bytes behind a valid
// superblock: it must stop cleanly, never panic, and never write a home
// block that is outside the device or inside the journal.
func FuzzRecovery(f *testing.F) {
	pool := newPool(f, 16)
	// Seeds: a real log with a few transactions, and its variations.
	dev, l := newDevice(f, 64, 16, 4)
	j := open(f, dev, pool)
	for v := range 3 {
		commit(f, j, v, 20+uint64(v), 30)
	}
	crashed := image(f, dev)
	require.NoError(f, j.Close())
	logBytes := make([]byte, (l.LogBlocks-1)*testBS)
	require.NoError(f, crashed.ReadAt(logBytes, testBS))
	sb := readBlock(f, crashed, 0)
	f.Add(logBytes, uint8(0))
	f.Add(logBytes[:testBS*3], uint8(1))
	f.Add([]byte{}, uint8(2))

	f.Fuzz(func(t *testing.T, log []byte, start uint8) {
		dev, err := blk.NewRAM(blk.RAMConfig{Size: 64 * testBS, BlockSize: 512})
		require.NoError(t, err)
		s, err := decodeSuperblock(sb, 0)
		require.NoError(t, err)
		s.start = uint64(start) % (l.LogBlocks - 1)
		b := make([]byte, testBS)
		s.encode(b)
		require.NoError(t, dev.WriteAt(b, 0, 0))
		log = log[:min(len(log), len(logBytes))]
		log = log[:len(log)/512*512]
		require.NoError(t, dev.WriteAt(log, testBS, 0))
		j, err := Open(dev, 0, testBS, Config{Pool: pool})
		require.NoError(t, err)
		r := j.Recovery()
		require.NoError(t, j.Close())
		if r.Transactions > 0 {
			require.NotEmpty(t, r.Stop)
		}
	})
}

func ExampleJournal() {
	pool, _ := phys.New(phys.Config{Mem: make([]byte, 8<<20), Base: 0x80000000})
	dev, _ := blk.NewRAM(blk.RAMConfig{Size: 1 << 20})
	_ = Format(dev, Layout{BlockSize: 4096, LogStart: 0, LogBlocks: 64, MaxTransaction: 16})
	j, err := Open(dev, 0, 4096, Config{Pool: pool})
	if err != nil {
		fmt.Println(err)
		return
	}
	h, _ := j.Begin(2)
	_ = h.Add(100, bytes.Repeat([]byte{'a'}, 4096))
	_ = h.Add(101, bytes.Repeat([]byte{'b'}, 4096))
	if err := h.Commit(); err != nil {
		fmt.Println(err)
	}
	fmt.Println(j.Stats().Commits, errors.Is(j.Close(), nil))
	// Output: 1 true
}
