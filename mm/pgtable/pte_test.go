package pgtable

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The software PTE's bits, against Linux/ARM's L_PTE_* in
// arch/arm/include/asm/pgtable-2level.h: PRESENT bit 0, YOUNG bit 1,
// DIRTY bit 6, RDONLY bit 7 (Write is its inverse), USER bit 8, XN bit 9
// (Exec is its inverse), NONE bit 11.
func TestPTEFlagBits(t *testing.T) {
	assert.Equal(t, PTE(0x001), Present)
	assert.Equal(t, PTE(0x002), Young)
	assert.Equal(t, PTE(0x004), Special)
	assert.Equal(t, PTE(0x040), Dirty)
	assert.Equal(t, PTE(0x080), Write)
	assert.Equal(t, PTE(0x100), User)
	assert.Equal(t, PTE(0x200), Exec)
	assert.Equal(t, PTE(0x800), NoAccess)
}

func TestMkPTE(t *testing.T) {
	for _, c := range []struct {
		pa   uint32
		f    PTE
		want uint32
	}{
		{0x80123000, 0, 0x80123001},
		{0x80123000, Young | User | Write, 0x80123183},
		{0x80123456, Write | User, 0x80123181},       // offset bits dropped
		{0x80123000, 0xfffff000 | Young, 0x80123003}, // flags cannot reach the address
		{0xfffff000, Young | Dirty | Write | User | Exec | NoAccess | Special, 0xfffffbc7},
		{0x00000000, Present, 0x00000001},
	} {
		p := MkPTE(c.pa, c.f)
		assert.Equal(t, PTE(c.want), p, "MkPTE(%#x, %#x)", c.pa, uint32(c.f))
		assert.True(t, p.Present())
		assert.False(t, p.None())
		assert.False(t, p.IsSwap())
		assert.Equal(t, c.want&0xfffff000, p.PA())
		assert.Equal(t, PTE(c.want&0xfff), p.Flags())
	}
}

func TestPTEAccessors(t *testing.T) {
	p := MkPTE(0x80123000, Young|Write)
	assert.True(t, p.Has(Present|Young|Write))
	assert.True(t, p.Has(Young))
	assert.False(t, p.Has(Young|Dirty))
	assert.Equal(t, PTE(0x801230C3), p.With(Dirty))
	assert.Equal(t, PTE(0x80123041), p.With(Dirty).Without(Young|Write))
	assert.Equal(t, p, p.With(Young), "With is idempotent")
	assert.Equal(t, PTE(0x80123000), p.Without(Present|Young|Write))
	assert.False(t, p.Without(Present|Young|Write).Present())

	var none PTE
	assert.True(t, none.None())
	assert.False(t, none.Present())
	assert.False(t, none.IsSwap())
	assert.False(t, none.Accessible())
	assert.Equal(t, "none", none.String())
}

func TestPTEStrings(t *testing.T) {
	assert.Equal(t, "0x80123000 present|young|dirty|write|user|exec",
		MkPTE(0x80123000, Young|Dirty|Write|User|Exec).String())
	assert.Equal(t, "0x80123000 present|special|none", MkPTE(0x80123000, Special|NoAccess).String())
	p, err := MkSwapPTE(SwapEntry{Type: 3, Offset: 0x1234})
	require.NoError(t, err)
	assert.Equal(t, "swap 3:0x1234", p.String())
}

// Linux/ARM: __SWP_TYPE_SHIFT 2, __SWP_TYPE_BITS 5, __SWP_OFFSET_SHIFT 7.
func TestSwapEncoding(t *testing.T) {
	assert.Equal(t, 31, MaxSwapType)
	assert.Equal(t, 0x1ffffff, MaxSwapOffset)
	for _, c := range []struct {
		e    SwapEntry
		want uint32
	}{
		{SwapEntry{Type: 1, Offset: 0}, 0x00000004},
		{SwapEntry{Type: 0, Offset: 1}, 0x00000080},
		{SwapEntry{Type: 2, Offset: 1}, 0x00000088},
		{SwapEntry{Type: 31, Offset: 0}, 0x0000007c},
		{SwapEntry{Type: 3, Offset: 0x1234}, 0x00091A0C},
		{SwapEntry{Type: 0, Offset: 0x1ffffff}, 0xffffff80},
		{SwapEntry{Type: 31, Offset: 0x1ffffff}, 0xfffffffc},
	} {
		p, err := MkSwapPTE(c.e)
		require.NoError(t, err, "%v", c.e)
		assert.Equal(t, PTE(c.want), p, "%v", c.e)
		// Bits 1:0 (L_PTE_PRESENT, L_PTE_YOUNG) stay clear.
		assert.Zero(t, uint32(p)&0b11)
		assert.True(t, p.IsSwap())
		assert.False(t, p.Present())
		assert.False(t, p.None())
		assert.False(t, p.Accessible())
		assert.Equal(t, L2(0), p.HardwarePTE(), "a swap PTE's hardware entry is a fault")
		assert.Equal(t, L1(0), p.HardwareSection(0))
		assert.Equal(t, c.e, p.Swap())
	}
}

func TestSwapRefusals(t *testing.T) {
	for _, e := range []SwapEntry{
		{Type: 0, Offset: 0}, // would be the empty PTE
		{Type: 32, Offset: 1},
		{Type: 255, Offset: 1},
		{Type: 0, Offset: 0x2000000},
		{Type: 1, Offset: 0xffffffff},
	} {
		p, err := MkSwapPTE(e)
		assert.Error(t, err, "%v", e)
		assert.Equal(t, PTE(0), p, "%v", e)
	}
}

func TestSwapRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	for range 20000 {
		e := SwapEntry{Type: uint8(r.IntN(MaxSwapType + 1)), Offset: r.Uint32N(MaxSwapOffset + 1)}
		if e == (SwapEntry{}) {
			continue
		}
		p, err := MkSwapPTE(e)
		require.NoError(t, err, "%v", e)
		require.True(t, p.IsSwap(), "%v", e)
		require.Equal(t, e, p.Swap())
		require.Equal(t, uint32(e.Type)<<2|e.Offset<<7, uint32(p))
	}
}

const hwPA = 0x80123000

// Literal hardware PTEs for pa 0x80123000, derived by hand as
// cpu_v7_set_pte_ext (arch/arm/mm/proc-v7-2level.S) does: small page (0x2),
// AP[0] (0x10) always, TEX=001 (0x40) C (0x8) B (0x4) for
// L_PTE_MT_WRITEALLOC, nG (0x800) from the ext argument for a user
// address, AP[1] (0x20) iff user, AP[2] (0x200) if read-only or not dirty,
// XN (0x1) if not executable; 0 if not young, not present or PROT_NONE.
var hardwarePTECases = []struct {
	name string
	p    PTE
	want uint32
}{
	{"none", 0, 0},
	{"present but old", MkPTE(hwPA, User|Write|Dirty|Exec), 0},
	{"old and clean", MkPTE(hwPA, User|Write), 0},
	{"young but not present", Young | User | Write | Dirty | 0x80123000, 0},
	{"PROT_NONE", MkPTE(hwPA, Young|NoAccess|User|Write|Dirty|Exec), 0},
	{"PROT_NONE kernel", MkPTE(hwPA, Young|NoAccess), 0},
	{"user rwx dirty", MkPTE(hwPA, Young|User|Write|Dirty|Exec), 0x8012387E},
	{"user rw dirty", MkPTE(hwPA, Young|User|Write|Dirty), 0x8012387F},
	{"user rw clean", MkPTE(hwPA, Young|User|Write), 0x80123A7F},
	{"user rwx clean", MkPTE(hwPA, Young|User|Write|Exec), 0x80123A7E},
	{"user ro", MkPTE(hwPA, Young|User), 0x80123A7F},
	{"user ro exec", MkPTE(hwPA, Young|User|Exec), 0x80123A7E},
	{"user ro dirty (COW)", MkPTE(hwPA, Young|User|Dirty), 0x80123A7F},
	{"kernel ro", MkPTE(hwPA, Young), 0x80123A5F},
	{"kernel rw dirty", MkPTE(hwPA, Young|Write|Dirty), 0x8012385F},
	{"kernel rwx dirty", MkPTE(hwPA, Young|Write|Dirty|Exec), 0x8012385E},
	{"kernel rw clean", MkPTE(hwPA, Young|Write), 0x80123A5F},
	{"special does not leak into B", MkPTE(hwPA, Young|Special|User), 0x80123A7F},
	{"top frame", MkPTE(0xfffff000, Young|User|Write|Dirty), 0xfffff87F},
	{"bottom frame", MkPTE(0, Young|User|Write|Dirty|Exec), 0x0000087E},
}

func TestHardwarePTELiteral(t *testing.T) {
	for _, c := range hardwarePTECases {
		assert.Equal(t, L2(c.want), c.p.HardwarePTE(), "%s: %v", c.name, c.p)
	}
}

// Every combination of the software flags, against an independent model
// of cpu_v7_set_pte_ext written with the hardware bit masks.
func TestHardwarePTEExhaustive(t *testing.T) {
	flags := []PTE{Young, Special, Dirty, Write, User, Exec, NoAccess}
	for m := range 1 << len(flags) {
		var f PTE
		for i, fl := range flags {
			if m&(1<<i) != 0 {
				f |= fl
			}
		}
		p := MkPTE(0xabcde000, f)
		var want uint32
		if f&Young != 0 && f&NoAccess == 0 {
			want = 0xabcde000 | 0x2 | 0x10 | 0x40 | 0x8 | 0x4 | 0x800
			if f&User != 0 {
				want |= 0x20 // AP[1]
			}
			if f&Write == 0 || f&Dirty == 0 {
				want |= 0x200 // AP[2]
			}
			if f&Exec == 0 {
				want |= 0x1 // XN
			}
		}
		require.Equal(t, L2(want), p.HardwarePTE(), "%v", p)
		require.Equal(t, want != 0, p.Accessible(), "%v", p)
		require.Equal(t, want != 0 && want&0x200 == 0, p.HardwareWritable(), "%v", p)
		// S (bit 10) is never set: one core, not shareable.
		require.Zero(t, uint32(p.HardwarePTE())&0x400)
		// Not present: always a fault.
		require.Equal(t, L2(0), (p &^ Present).HardwarePTE(), "%v", p&^Present)
	}
}

func TestPTEAttrs(t *testing.T) {
	assert.Equal(t, Attrs{AP: APRW, Mem: NormalWBWA, NG: true, PXN: true},
		MkPTE(hwPA, Young|User|Write|Dirty|Exec).Attrs())
	assert.Equal(t, Attrs{AP: APRO, Mem: NormalWBWA, NG: true, PXN: true, XN: true},
		MkPTE(hwPA, Young|User|Write).Attrs())
	assert.Equal(t, Attrs{AP: APPrivRW, Mem: NormalWBWA, NG: true, PXN: true, XN: true},
		MkPTE(hwPA, Young|Write|Dirty).Attrs())
	assert.Equal(t, Attrs{AP: APPrivRO, Mem: NormalWBWA, NG: true, PXN: true, XN: true},
		MkPTE(hwPA, Young).Attrs())
}

// A huge PTE's section descriptor: section (0x2) with PXN (0x1), C B and
// TEX=001 (0xC, 0x1000), nG (0x20000), AP[1:0] at 11:10, AP[2] at 15, XN
// at 4, the domain at 8:5.
func TestHardwareSectionLiteral(t *testing.T) {
	for _, c := range []struct {
		name   string
		p      PTE
		domain uint8
		want   uint32
	}{
		{"user rw dirty", MkPTE(0x80100000, Young|User|Write|Dirty), 0, 0x80121C1F},
		{"user rwx dirty", MkPTE(0x80100000, Young|User|Write|Dirty|Exec), 0, 0x80121C0F},
		{"user rw clean", MkPTE(0x80100000, Young|User|Write), 0, 0x80129C1F},
		{"user ro", MkPTE(0x80100000, Young|User), 0, 0x80129C1F},
		{"kernel rw dirty", MkPTE(0x80100000, Young|Write|Dirty), 0, 0x8012141F},
		{"kernel ro", MkPTE(0x80100000, Young), 0, 0x8012941F},
		{"domain 3", MkPTE(0x80100000, Young|User|Write|Dirty), 3, 0x80121C7F},
		{"domain 15", MkPTE(0x80100000, Young|User|Write|Dirty), 15, 0x80121DFF},
		{"address below 1 MiB dropped", MkPTE(0x801ff000, Young|User|Write|Dirty), 0, 0x80121C1F},
		{"old", MkPTE(0x80100000, User|Write|Dirty), 0, 0},
		{"PROT_NONE", MkPTE(0x80100000, Young|NoAccess|User), 0, 0},
		{"not present", Young | User | 0x80100000, 0, 0},
	} {
		assert.Equal(t, L1(c.want), c.p.HardwareSection(c.domain), c.name)
	}
}
