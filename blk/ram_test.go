package blk

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/phys"
)

func TestRAMMatchesAModel(t *testing.T) {
	pool, err := phys.New(phys.Config{Mem: make([]byte, 8<<20), Base: 0x80000000})
	require.NoError(t, err)
	free := pool.FreeFrames()
	const size = 256 << 10
	for _, cfg := range []RAMConfig{
		{Size: size, BlockSize: 512},
		{Size: size, BlockSize: 4096, Pool: pool},
		{Size: size, BlockSize: 512, Pool: pool},
	} {
		dev, err := NewRAM(cfg)
		require.NoError(t, err)
		bs := int64(cfg.BlockSize)
		model := make([]byte, size)
		r := rand.New(rand.NewPCG(1, uint64(bs)))
		for range 3000 {
			off := r.Int64N(size/bs) * bs
			n := min(r.Int64N(3*4096/bs+1)*bs, size-off)
			switch r.IntN(5) {
			case 0, 1:
				b := make([]byte, n)
				switch r.IntN(3) {
				case 0: // noise
					for i := range b {
						b[i] = byte(r.Uint32())
					}
				case 1: // a repeated word: same-filled
					for i := range b {
						b[i] = byte(0xa5 + i%4)
					}
				}
				require.NoError(t, dev.WriteAt(b, off, 0))
				copy(model[off:], b)
			case 2:
				require.NoError(t, dev.Trim(off, n))
				clear(model[off : off+n])
			case 3:
				require.NoError(t, dev.WriteZeroes(off, n, 0))
				clear(model[off : off+n])
			case 4:
				b := make([]byte, n)
				require.NoError(t, dev.ReadAt(b, off))
				require.True(t, bytes.Equal(model[off:off+n], b), "read of %d at %d", n, off)
			}
		}
		all := make([]byte, size)
		require.NoError(t, dev.ReadAt(all, 0))
		require.True(t, bytes.Equal(model, all))

		// Every page's accounting agrees with what it holds.
		s := dev.Stats()
		var data, same uint64
		for p := 0; p < size; p += ramPageSize {
			pg := model[p : p+ramPageSize]
			if _, ok := sameFilled(pg); ok {
				if !bytes.Equal(pg, make([]byte, ramPageSize)) {
					same++
				}
				continue
			}
			data++
		}
		assert.LessOrEqual(t, data, s.MemUsedPages, "every page of noise is stored")
		assert.LessOrEqual(t, s.MemUsedPages+s.SamePages, s.OrigDataPages+0)
		t.Logf("block size %d, pool %v: %+v", bs, cfg.Pool != nil, s)
		require.NoError(t, dev.Close())
		assert.Equal(t, RAMStats{}, dev.Stats(), "Close gives every page back")
	}
	assert.Equal(t, free, pool.FreeFrames())
	require.NoError(t, pool.Check())
}

func TestRAMRequestErrors(t *testing.T) {
	dev, err := NewRAM(RAMConfig{Size: 64 << 10, BlockSize: 512, Name: "ram0"})
	require.NoError(t, err)
	err = dev.ReadAt(make([]byte, 512), 64<<10)
	assert.ErrorIs(t, err, ErrRange)
	var re *RequestError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, OpRead, re.Op)
	assert.EqualValues(t, 64<<10, re.Off)
	assert.Equal(t, "ram0: read of 512 bytes at 65536: request outside the device", err.Error())
	assert.ErrorIs(t, dev.WriteAt(make([]byte, 100), 0, 0), ErrAlign)
	assert.ErrorIs(t, dev.Trim(-512, 512), ErrRange)
	require.NoError(t, dev.Close())
	assert.ErrorIs(t, dev.Flush(), ErrClosed)
	_, err = NewRAM(RAMConfig{Size: 1000})
	assert.Error(t, err)
	_, err = NewRAM(RAMConfig{Size: 4096, BlockSize: 8192})
	assert.Error(t, err)
}

func TestRAMOutOfMemory(t *testing.T) {
	pool, err := phys.New(phys.Config{Mem: make([]byte, 4<<20), Base: 0x80000000})
	require.NoError(t, err)
	dev, err := NewRAM(RAMConfig{Size: 8 << 20, Pool: pool, Ctx: phys.Nowait | phys.NoMemalloc})
	require.NoError(t, err)
	noise := make([]byte, 4096)
	for i := range noise {
		noise[i] = byte(i*7 + 1)
	}
	var werr error
	for off := int64(0); off < 8<<20 && werr == nil; off += 4096 {
		werr = dev.WriteAt(noise, off, 0)
	}
	require.ErrorIs(t, werr, ErrNoSpace, "a full pool fails the write, as zram does")
	assert.Positive(t, dev.Stats().AllocFailures)
	// Zeroes still fit: they cost nothing.
	require.NoError(t, dev.WriteAt(make([]byte, 4096), 8<<20-4096, 0))
	require.NoError(t, dev.Close())
	require.NoError(t, pool.Check())
}
