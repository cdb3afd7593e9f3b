package logwrites

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
)

func newRAMLog(t testing.TB, size int64, bs int) (*blk.RAM, *Log) {
	ram, err := blk.NewRAM(blk.RAMConfig{Size: size, BlockSize: bs})
	require.NoError(t, err)
	l, err := New(ram)
	require.NoError(t, err)
	return ram, l
}

func TestPassesRequestsThrough(t *testing.T) {
	ram, err := blk.NewRAM(blk.RAMConfig{Size: 8 * bs, BlockSize: bs})
	require.NoError(t, err)
	require.NoError(t, ram.WriteAt(dataA, bs, 0))
	l, err := New(ram)
	require.NoError(t, err)
	assert.Equal(t, ram.Features()|blk.FlushFeature|blk.FUAFeature, l.Features())
	assert.Equal(t, ram.Size(), l.Size())
	assert.Equal(t, ram.BlockSize(), l.BlockSize())
	assert.Equal(t, SectorSize, l.SectorSize())
	assert.Equal(t, dataA, l.Base()[bs:2*bs], "the base is the device when logging began")

	// RAM has no FUA: the Log emulates it and RAM needs nothing more.
	require.NoError(t, l.WriteAt(dataB, 0, blk.FUA))
	require.NoError(t, l.Flush())
	require.NoError(t, l.Trim(bs, bs))
	require.NoError(t, l.WriteZeroes(2*bs, bs, blk.NoHole))
	l.Mark("m")
	err = l.WriteAt(dataB, 3, 0)
	require.ErrorIs(t, err, blk.ErrAlign)
	got := make([]byte, bs)
	require.NoError(t, l.ReadAt(got, 0))
	assert.Equal(t, dataB, got)
	require.NoError(t, l.ReadAt(got, bs))
	assert.Equal(t, make([]byte, bs), got)

	es := l.Entries()
	require.Len(t, es, 6)
	kinds := []Kind{Write, Flush, Trim, WriteZeroes, Mark, Write}
	for i, e := range es {
		assert.Equal(t, kinds[i], e.Kind, "entry %d", i)
		assert.Equal(t, e.Seq, e.Submit)
		if e.Kind == Mark {
			assert.Equal(t, e.Seq, e.Done)
			assert.Equal(t, "m", e.Label)
		} else {
			assert.Greater(t, e.Done, e.Submit)
		}
	}
	assert.True(t, es[0].FUA)
	assert.Equal(t, dataB, es[0].Data)
	assert.ErrorIs(t, es[5].Err, blk.ErrAlign)
	assert.Equal(t, "write", Write.String())
	assert.Equal(t, "mark", Mark.String())

	// The misaligned write never reached the device: no state has it.
	states, _ := l.Enumerate(EnumerateOptions{Seed: 1})
	for _, cs := range states {
		assert.NotContains(t, cs.Maybe, es[5].Seq)
	}
	images(t, l, states)

	require.NoError(t, l.Close())
	assert.ErrorIs(t, l.WriteAt(dataA, 0, 0), blk.ErrClosed)
}

func TestConcurrentRecording(t *testing.T) {
	const workers, writes = 8, 50
	ram, l := newRAMLog(t, workers*writes*512, 512)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range writes {
				off := int64((w*writes + i) * 512)
				require.NoError(t, l.WriteAt(fill(byte(w+1), 512), off, blk.WriteFlags(i%2)))
				if i%10 == 0 {
					require.NoError(t, l.Flush())
				}
				if i%7 == 0 {
					l.Mark(fmt.Sprintf("%d/%d", w, i))
				}
			}
		})
	}
	wg.Wait()
	es := l.Entries()
	positions := map[int]bool{}
	for i, e := range es {
		if i > 0 {
			assert.Greater(t, e.Seq, es[i-1].Seq)
		}
		assert.False(t, positions[e.Submit])
		positions[e.Submit] = true
		if e.Kind != Mark {
			assert.False(t, positions[e.Done])
			positions[e.Done] = true
		}
	}
	for p := range len(positions) {
		assert.True(t, positions[p], "position %d unused", p)
	}
	// At the end of a log whose last request is a flush... not
	// necessarily; but the device holds what every worker wrote, and
	// so does the state with every write landed.
	states, _ := l.Enumerate(EnumerateOptions{Seed: 1, Points: []int{len(positions)}})
	img := make([]byte, ram.Size())
	require.NoError(t, ram.ReadAt(img, 0))
	found := false
	for _, cs := range states {
		if bytes.Equal(l.Materialize(cs), img) {
			found = true
		}
	}
	assert.True(t, found, "the device's own image is a crash state at the end")
}

func TestReplay(t *testing.T) {
	s := newScript(t, bs, 4, base)
	s.do(s.write(0, dataA, false))
	s.do(s.flush())
	s.do(s.write(1, dataB, false))
	states, _ := s.l.Enumerate(EnumerateOptions{Seed: 1})
	require.NotEmpty(t, states)
	for _, cs := range states {
		want := s.l.Materialize(cs)
		ram, err := blk.NewRAM(blk.RAMConfig{Size: 4 * bs, BlockSize: bs})
		require.NoError(t, err)
		require.NoError(t, s.l.Replay(cs, ram))
		got := make([]byte, 4*bs)
		require.NoError(t, ram.ReadAt(got, 0))
		assert.Equal(t, want, got, cs.Name)

		ram, err = s.l.ReplayRAM(cs)
		require.NoError(t, err)
		require.NoError(t, ram.ReadAt(got, 0))
		assert.Equal(t, want, got, cs.Name)

		dev, err := s.l.ReplayImage(cs)
		require.NoError(t, err)
		require.NoError(t, dev.ReadAt(got, 0))
		assert.Equal(t, want, got, cs.Name)
		assert.Equal(t, want, dev.Bytes())
		require.NoError(t, dev.Close())
		assert.Nil(t, dev.Bytes(), "the image went back to the Log")
		assert.ErrorIs(t, dev.ReadAt(got, 0), blk.ErrClosed)
	}
	small, err := blk.NewRAM(blk.RAMConfig{Size: bs, BlockSize: bs})
	require.NoError(t, err)
	assert.Error(t, s.l.Replay(states[0], small))
	assert.Error(t, s.l.MaterializeInto(make([]byte, 3), states[0]))
	assert.Panics(t, func() { s.l.Materialize(CrashState{At: 1000}) })
}

// journalLog runs a jbd2-like workload on a Log over a 4 MiB RAM device:
// each transaction writes a descriptor and four blocks to the journal in
// parallel, flushes, writes its commit block with FUA and is marked acked;
// every eighth checkpoints 32 blocks to their homes in parallel, flushes,
// and rewrites the journal superblock with FUA.
func journalLog(t testing.TB, txs int) (l *Log, commits map[int]int) {
	_, l = newRAMLog(t, 4<<20, 4096)
	commits = map[int]int{}
	rng := rand.New(rand.NewPCG(1, 2))
	block := func(b byte) []byte { return fill(b, 4096) }
	parallel := func(n int, do func(i int) error) {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { assert.NoError(t, do(i)) })
		}
		wg.Wait()
	}
	head := 1
	for tx := 1; tx <= txs; tx++ {
		parallel(5, func(i int) error {
			return l.WriteAt(block(byte(tx+i)), int64((head+i)*4096), 0)
		})
		require.NoError(t, l.Flush())
		require.NoError(t, l.WriteAt(block(byte(tx)), int64((head+5)*4096), blk.FUA))
		commits[tx] = head + 5
		l.Mark(fmt.Sprintf("acked %d", tx))
		head += 6
		if head+6 > 256 {
			head = 1
		}
		if tx%8 == 0 {
			var homes [32]int
			for i := range homes {
				homes[i] = 256 + rng.IntN(768)
			}
			parallel(32, func(i int) error {
				return l.WriteAt(block(byte(tx+i)), int64(homes[i]*4096), 0)
			})
			require.NoError(t, l.Flush())
			require.NoError(t, l.WriteAt(block(byte(tx)), 0, blk.FUA))
		}
	}
	return l, commits
}

func TestMaterializeCost(t *testing.T) {
	l, commits := journalLog(t, 100)
	start := time.Now()
	states, st := l.Enumerate(EnumerateOptions{Seed: 1, MaxPerPoint: 4, MaxStates: 600})
	enum := time.Since(start)
	require.Len(t, states, 600)
	var torn, subsets int
	for _, cs := range states {
		if len(cs.Torn) > 0 {
			torn++
		}
		if len(cs.Maybe) > 0 {
			subsets++
		}
	}
	t.Logf("%d states with maybe writes landed, %d with torn writes", subsets, torn)
	img := make([]byte, l.Size())
	start = time.Now()
	for _, cs := range states {
		require.NoError(t, l.MaterializeInto(img, cs))
	}
	mat := time.Since(start)
	replays := 100
	if raceEnabled {
		replays = 10
	}
	start = time.Now()
	for _, cs := range states[:replays] {
		_, err := l.ReplayRAM(cs)
		require.NoError(t, err)
	}
	replayRAM := time.Since(start) / time.Duration(replays)
	start = time.Now()
	for _, cs := range states[:replays] {
		dev, err := l.ReplayImage(cs)
		require.NoError(t, err)
		require.NoError(t, dev.Close())
	}
	replayImage := time.Since(start) / time.Duration(replays)
	t.Logf("4 MiB, 100 transactions, %d log entries: %+v", len(l.Entries()), st)
	t.Logf("enumerate %v; per state: materialize %v, ReplayRAM %v, ReplayImage %v",
		enum, mat/time.Duration(len(states)), replayRAM, replayImage)
	// The last acked transaction's commit block is in every state after
	// its mark (the earlier ones' may have been overwritten since).
	for _, cs := range states {
		tx := len(cs.Marks)
		if tx == 0 {
			continue
		}
		require.NoError(t, l.MaterializeInto(img, cs))
		at := commits[tx] * 4096
		require.Equal(t, fill(byte(tx), 4096), img[at:at+4096], cs.Name)
	}
}

// benchStates are up to 600 crash states of a 4 MiB device with 100
// journal-like transactions, in enumeration order (by position).
func benchStates(b *testing.B) (*Log, []CrashState) {
	l, _ := journalLog(b, 100)
	states, _ := l.Enumerate(EnumerateOptions{Seed: 1, MaxStates: 600})
	return l, states
}

// reportPerState reports ns/state and hides ns/op, the same figure.
func reportPerState(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/state")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMaterialize: one op is a MaterializeInto of one crash state
// into a 4 MiB image, the states taken in enumeration order (the order
// that moves one snapshot forward). Reports ns/state and MB/s of image
// produced; B/op and allocs/op are per state.
func BenchmarkMaterialize(b *testing.B) {
	l, states := benchStates(b)
	img := make([]byte, l.Size())
	b.SetBytes(l.Size())
	for i := 0; b.Loop(); i++ {
		if err := l.MaterializeInto(img, states[i%len(states)]); err != nil {
			b.Fatal(err)
		}
	}
	reportPerState(b)
}

// BenchmarkReplayRAM: one op is a ReplayRAM of one crash state (a new RAM
// device holding its image), in enumeration order. Reports ns/state.
func BenchmarkReplayRAM(b *testing.B) {
	l, states := benchStates(b)
	for i := 0; b.Loop(); i++ {
		if _, err := l.ReplayRAM(states[i%len(states)]); err != nil {
			b.Fatal(err)
		}
	}
	reportPerState(b)
}

// BenchmarkReplayImage: one op is a ReplayImage of one crash state and the
// device's Close (which gives its image back for reuse), in enumeration
// order. Reports ns/state.
func BenchmarkReplayImage(b *testing.B) {
	l, states := benchStates(b)
	for i := 0; b.Loop(); i++ {
		dev, err := l.ReplayImage(states[i%len(states)])
		if err != nil {
			b.Fatal(err)
		}
		dev.Close()
	}
	reportPerState(b)
}

// BenchmarkEnumerate: one op is an Enumerate of the crash states of a
// 100-transaction log, capped at 600 states. Reports states/op (the states
// returned) and ns/state (the op's time per state returned); B/op and
// allocs/op are per Enumerate.
func BenchmarkEnumerate(b *testing.B) {
	l, _ := journalLog(b, 100)
	states := 0
	for b.Loop() {
		st, _ := l.Enumerate(EnumerateOptions{Seed: 1, MaxStates: 600})
		states += len(st)
	}
	b.ReportMetric(float64(states)/float64(b.N), "states/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(states), "ns/state")
	b.ReportMetric(0, "ns/op")
}

func TestImageDevice(t *testing.T) {
	_, err := NewImageDevice(make([]byte, 1000), 512)
	assert.Error(t, err)
	d, err := NewImageDevice(fill(7, 4*512), 512)
	require.NoError(t, err)
	assert.Equal(t, int64(2048), d.Size())
	assert.Equal(t, 512, d.BlockSize())
	require.NoError(t, d.WriteAt(fill(1, 512), 512, blk.FUA))
	require.NoError(t, d.Trim(1024, 512))
	require.NoError(t, d.WriteZeroes(1536, 512, 0))
	require.NoError(t, d.Flush())
	got := make([]byte, 2048)
	require.NoError(t, d.ReadAt(got, 0))
	assert.Equal(t, slices.Concat(fill(7, 512), fill(1, 512), make([]byte, 1024)), got)
	assert.ErrorIs(t, d.ReadAt(got, 512), blk.ErrRange)
	assert.ErrorIs(t, d.WriteAt(got[:100], 0, 0), blk.ErrAlign)
	require.NoError(t, d.Close())
	assert.ErrorIs(t, d.ReadAt(got[:512], 0), blk.ErrClosed)
}
