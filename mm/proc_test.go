package mm

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A small scenario whose /proc/PID/maps and smaps are worked out by hand:
// four read-write pages of which two are written and one read (the zero
// page, which smaps does not count), one untouched read-only page, then a
// fork after which the child writes the second page. In the parent the
// first page is shared with the child (half of it in Pss), the second is
// its own again.
func TestMapsAndSmapsFormat(t *testing.T) {
	m := newTestManager(t)
	parent := newAS(t, m)
	a := mmap(t, parent, 0x60000000, 4, ProtRead|ProtWrite, MapFixed)
	mmap(t, parent, 0x60010000, 1, ProtRead, MapFixed)
	write(t, parent, a, 1)
	write(t, parent, a+pg, 2)
	readByte(t, parent, a+2*pg)
	child, err := parent.Fork()
	require.NoError(t, err)
	write(t, child, a+pg, 3)

	var maps strings.Builder
	require.NoError(t, parent.WriteMaps(&maps))
	assert.Equal(t, "60000000-60004000 rw-p 00000000 00:00 0 \n"+
		"60010000-60011000 r--p 00000000 00:00 0 \n", maps.String())

	const parentSmaps = `60000000-60004000 rw-p 00000000 00:00 0 
Size:                 16 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   8 kB
Pss:                   6 kB
Pss_Dirty:             6 kB
Shared_Clean:          0 kB
Shared_Dirty:          4 kB
Private_Clean:         0 kB
Private_Dirty:         4 kB
Referenced:            8 kB
Anonymous:             8 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:    0
VmFlags: rd wr mr mw me ac 
60010000-60011000 r--p 00000000 00:00 0 
Size:                  4 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   0 kB
Pss:                   0 kB
Pss_Dirty:             0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:            0 kB
Anonymous:             0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:    0
VmFlags: rd mr mw me 
`
	var smaps strings.Builder
	require.NoError(t, parent.WriteSmaps(&smaps))
	assert.Equal(t, parentSmaps, smaps.String())

	// The child: the shared page was not touched by it since the fork, so
	// only its own copy counts as referenced.
	smaps.Reset()
	require.NoError(t, child.WriteSmaps(&smaps))
	first := strings.SplitAfterN(smaps.String(), "\n", 13)
	assert.Equal(t, []string{
		"60000000-60004000 rw-p 00000000 00:00 0 \n",
		"Size:                 16 kB\n",
		"KernelPageSize:        4 kB\n",
		"MMUPageSize:           4 kB\n",
		"Rss:                   8 kB\n",
		"Pss:                   6 kB\n",
		"Pss_Dirty:             6 kB\n",
		"Shared_Clean:          0 kB\n",
		"Shared_Dirty:          4 kB\n",
		"Private_Clean:         0 kB\n",
		"Private_Dirty:         4 kB\n",
		"Referenced:            4 kB\n",
	}, first[:12])
}
