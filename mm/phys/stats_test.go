package phys

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// statsPool is a 16 MiB pool (four 4 MiB blocks) after one unmovable
// frame has been allocated: the first unmovable allocation steals a whole
// 4 MiB block (four pageblocks) from Movable and splits it down to a
// frame, leaving one free block of each order 0..9 on Unmovable's lists.
func statsPool(t *testing.T) *Pool {
	t.Helper()
	p, err := New(Config{Mem: make([]byte, 16<<20), Base: testBase})
	require.NoError(t, err)
	_, err = p.AllocPage(Kernel)
	require.NoError(t, err)
	return p
}

func render(t *testing.T, write func(*strings.Builder) error) string {
	t.Helper()
	var b strings.Builder
	require.NoError(t, write(&b))
	return b.String()
}

func TestBuddyinfoFormat(t *testing.T) {
	p := statsPool(t)
	got := render(t, func(b *strings.Builder) error { return p.WriteBuddyinfo(b) })
	assert.Equal(t,
		"Node 0, zone   Normal      1      1      1      1      1      1      1      1      1      1      3 \n",
		got)
}

func TestPagetypeinfoFormat(t *testing.T) {
	p := statsPool(t)
	got := render(t, func(b *strings.Builder) error { return p.WritePagetypeinfo(b) })
	want := "" +
		"Page block order: 8\n" +
		"Pages per block:  256\n" +
		"\n" +
		"Free pages count per migrate type at order       0      1      2      3      4      5      6      7      8      9     10 \n" +
		"Node    0, zone   Normal, type    Unmovable      1      1      1      1      1      1      1      1      1      1      0 \n" +
		"Node    0, zone   Normal, type      Movable      0      0      0      0      0      0      0      0      0      0      3 \n" +
		"Node    0, zone   Normal, type  Reclaimable      0      0      0      0      0      0      0      0      0      0      0 \n" +
		"\n" +
		"Number of blocks type     Unmovable      Movable  Reclaimable \n" +
		"Node 0, zone   Normal            4           12            0 \n"
	assert.Equal(t, want, got)
}

func TestMeminfoFormat(t *testing.T) {
	p := statsPool(t)
	got := render(t, func(b *strings.Builder) error { return WriteMeminfo(b, p.Meminfo()) })
	// 4096 frames, 4095 free; MemAvailable leaves out the high watermark
	// (192 frames: min 128 from min_free_kbytes = sqrt(16384*16) = 512).
	assert.Equal(t, ""+
		"MemTotal:          16384 kB\n"+
		"MemFree:           16380 kB\n"+
		"MemAvailable:      15612 kB\n", got)
}

func TestVmstatFormat(t *testing.T) {
	p := statsPool(t)
	got := render(t, func(b *strings.Builder) error { return WriteVmstat(b, p.Vmstat()) })
	assert.Equal(t, ""+
		"nr_free_pages 4095\n"+
		"pgalloc_normal 1\n"+
		"allocstall_normal 0\n"+
		"pgfree 0\n"+
		"pgscan_direct_throttle 0\n"+
		"pgalloc_fallback 1\n"+
		"pageblock_steal 4\n"+
		"pgalloc_pfmemalloc 0\n"+
		"nr_pfmemalloc 0\n"+
		"pfmemalloc_reserve_hwm 0\n"+
		"pgalloc_fail 0\n", got)
}

func TestZoneinfoFormat(t *testing.T) {
	p := statsPool(t)
	got := render(t, func(b *strings.Builder) error { return p.WriteZoneinfo(b) })
	// The pageset batch for 4096 frames is 1, so the allocation took the
	// one frame it refilled and the pageset is empty.
	assert.Equal(t, ""+
		"Node 0, zone   Normal\n"+
		"  pages free     4095\n"+
		"        min      128\n"+
		"        low      160\n"+
		"        high     192\n"+
		"        spanned  4096\n"+
		"        present  4096\n"+
		"        managed  4096\n"+
		"      nr_free_pages 4095\n"+
		"  pagesets\n"+
		"    cpu: 0\n"+
		"              count: 0\n"+
		"              high:  6\n"+
		"              batch: 1\n"+
		"  start_pfn:           557056\n", got)
}
