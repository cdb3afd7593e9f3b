package mm

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/phys"
)

// Copy-on-write against a page someone else holds: Linux's selftest
// mm/cow.c in miniature.
//
// do_wp_page may reuse a write-protected anonymous page in place only when
// nothing but the faulting PTE refers to it. Deciding by map count alone
// is CVE-2020-29374: a reference taken with get_user_pages (here
// FollowPage) outlives the mapping it came through, the last remaining
// mapping is written, the page is reused, and the holder reads data it
// was never given. The reference count is what tells: while a holder has
// the page, a write fault copies, and the holder keeps the bytes it took.

// heldPage is a page reference taken through FollowPage, and the bytes the
// page had when it was taken.
type heldPage struct {
	pool *phys.Pool
	pfn  phys.PFN
	want []byte
}

func hold(t *testing.T, as *AddressSpace, addr uint32) *heldPage {
	t.Helper()
	pfn, ok := as.FollowPage(addr)
	require.True(t, ok, "no page to follow at %#x", addr)
	frame, err := as.mgr.pool.Frame(pfn)
	require.NoError(t, err)
	h := &heldPage{pool: as.mgr.pool, pfn: pfn, want: append([]byte(nil), frame...)}
	t.Cleanup(func() { h.release(t) })
	return h
}

// check fails the test if the held page's bytes changed.
func (h *heldPage) check(t *testing.T, what string) {
	t.Helper()
	frame, err := h.pool.Frame(h.pfn)
	require.NoError(t, err)
	if i := firstDiff(frame, h.want); i >= 0 {
		t.Errorf("%s: the held page %v changed under its holder: byte %d is %#02x, was %#02x", what, h.pfn, i, frame[i], h.want[i])
	}
}

func (h *heldPage) release(t *testing.T) {
	if h.pfn != 0 {
		require.NoError(t, h.pool.Put(h.pfn))
		h.pfn = 0
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// The CVE's own shape: the child takes a reference (vmsplice did it with
// get_user_pages) to a page it shares with its parent and exits; the
// parent's write finds the page mapped once, by itself, yet must copy it.
func TestCOWChildHoldsPageThenExits(t *testing.T) {
	m := newTestManager(t)
	parent := newAS(t, m)
	a := mmap(t, parent, 0x60000000, 1, ProtRead|ProtWrite, 0)
	write(t, parent, a, 's', 'e', 'c', 'r', 'e', 't')
	child, err := parent.Fork()
	require.NoError(t, err)
	h := hold(t, child, a)
	require.NoError(t, child.Exit())
	pfn, p := pageAt(t, parent, a)
	require.Equal(t, h.pfn, pfn)
	require.Equal(t, int32(1), p.MapCount(), "the parent maps the page alone")

	write(t, parent, a, 'n', 'e', 'w')
	h.check(t, "after the parent's write")
	got, _ := pageAt(t, parent, a)
	assert.NotEqual(t, h.pfn, got, "the parent's write reused a page someone holds")
	assert.Equal(t, byte('n'), readByte(t, parent, a))
	require.NoError(t, m.Check())
}

// The same hazard from the other side: the parent holds its own page
// across fork (a FOLL_GET reference, not a FOLL_PIN one, so fork shares
// the page), the child exits, and the parent writes. The page is the
// parent's alone by map count, not by reference count, so it is copied;
// the holder keeps the bytes it took, as get_user_pages without FOLL_PIN
// promises nothing more.
func TestCOWParentHoldsPageAcrossFork(t *testing.T) {
	m := newTestManager(t)
	parent := newAS(t, m)
	a := mmap(t, parent, 0x60000000, 2, ProtRead|ProtWrite, 0)
	write(t, parent, a, 1, 2, 3)
	write(t, parent, a+pg, 4)
	h := hold(t, parent, a)
	child, err := parent.Fork()
	require.NoError(t, err)
	write(t, child, a+pg, 5) // the child lives a little
	require.NoError(t, child.Exit())

	write(t, parent, a, 9)
	h.check(t, "after the parent's write")
	got, _ := pageAt(t, parent, a)
	assert.NotEqual(t, h.pfn, got, "the parent's write reused a page someone holds")

	// With the reference gone, the next fork-and-exit leaves a page the
	// parent may write in place: nothing else can see it.
	h.release(t)
	child, err = parent.Fork()
	require.NoError(t, err)
	require.NoError(t, child.Exit())
	before, p := pageAt(t, parent, a)
	require.Equal(t, int32(1), p.RefCount())
	write(t, parent, a, 10)
	after, _ := pageAt(t, parent, a)
	assert.Equal(t, before, after, "an unreferenced sole mapping is reused")
	assert.Equal(t, byte(10), readByte(t, parent, a))
	require.NoError(t, m.Check())
}

// A holder must not see a sibling's write either: two children share the
// parent's page, one holds it and the other writes. The writer's page is
// mapped three times, so this copy never depended on the reference count;
// it pins down that a hold changes nothing for the ordinary case.
func TestCOWHolderSeesNoSiblingWrite(t *testing.T) {
	m := newTestManager(t)
	parent := newAS(t, m)
	a := mmap(t, parent, 0x60000000, 1, ProtRead|ProtWrite, 0)
	write(t, parent, a, 7)
	c1, err := parent.Fork()
	require.NoError(t, err)
	c2, err := parent.Fork()
	require.NoError(t, err)
	h := hold(t, c1, a)
	write(t, c2, a, 8)
	require.NoError(t, parent.Exit())
	require.NoError(t, c2.Exit())
	// c1 now maps the page alone and a holder still has it: c1's own
	// write must copy as well.
	write(t, c1, a, 9)
	h.check(t, "after the writes of a sibling and of the page's last mapper")
	assert.Equal(t, byte(9), readByte(t, c1, a))
	require.NoError(t, m.Check())
}
