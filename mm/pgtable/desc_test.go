package pgtable

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every expected descriptor below is written out by hand from the ARM
// Architecture Reference Manual ARMv7-A/R, B3.5.1:
//
// Figure B3-4, first-level descriptors:
//
//	page table:   [31:10] base, [9] IMP DEF, [8:5] domain, [4] SBZ,
//	              [3] NS, [2] PXN, [1:0] = 01
//	section:      [31:20] base, [19] NS, [18] = 0, [17] nG, [16] S,
//	              [15] AP[2], [14:12] TEX, [11:10] AP[1:0], [9] IMP DEF,
//	              [8:5] domain, [4] XN, [3] C, [2] B, [1] = 1, [0] PXN
//	supersection: as a section with [18] = 1, [31:24] base, [23:20] and
//	              [8:5] extended base address
//
// Figure B3-5, second-level descriptors:
//
//	large page: [31:16] base, [15] XN, [14:12] TEX, [11] nG, [10] S,
//	            [9] AP[2], [8:6] SBZ, [5:4] AP[1:0], [3] C, [2] B, [1:0] = 01
//	small page: [31:12] base, [11] nG, [10] S, [9] AP[2], [8:6] TEX,
//	            [5:4] AP[1:0], [3] C, [2] B, [1] = 1, [0] XN

func TestSmallDescExample(t *testing.T) {
	// 0x80123000 | nG 0x800 | TEX=001 0x40 | AP[1:0]=11 0x30 | C 0x8 |
	// B 0x4 | small 0x2.
	assert.Equal(t, L2(0x8012387E), SmallDesc(0x80123000, Attrs{AP: APRW, Mem: NormalWBWA, NG: true}))
	// The same page, read-only for both levels (AP[2] 0x200) and XN (0x1).
	assert.Equal(t, L2(0x80123A7F), SmallDesc(0x80123000, Attrs{AP: APRO, Mem: NormalWBWA, NG: true, XN: true}))
	// Device (TEX 000, C 0, B 1), kernel only.
	assert.Equal(t, L2(0x02000016), SmallDesc(0x02000000, Attrs{AP: APPrivRW, Mem: Device}))
}

func TestSectionDescExample(t *testing.T) {
	// 0x80100000 | nG 0x20000 | TEX=001 0x1000 | AP[1:0]=11 0xC00 |
	// XN 0x10 | C 0x8 | B 0x4 | section 0x2 | PXN 0x1.
	assert.Equal(t, L1(0x80121C1F), SectionDesc(0x80100000,
		Attrs{AP: APRW, Mem: NormalWBWA, NG: true, XN: true, PXN: true}))
	// TamaGo's MemoryRegion: AP=001, C, B, section.
	assert.Equal(t, L1(0x9000040E), SectionDesc(0x90000000, Attrs{AP: APPrivRW, Mem: MemType{C: true, B: true}}))
}

func TestTableDescExample(t *testing.T) {
	assert.Equal(t, L1(0x80123801), TableDesc(0x80123800, 0))
	assert.Equal(t, L1(0x80123C01), TableDesc(0x80123C00, 0))
	assert.Equal(t, L1(0x801234A1), TableDesc(0x80123400, 5))
}

type smallBitCase struct {
	name string
	pa   uint32
	a    Attrs
	want uint32
}

var smallBitCases = []smallBitCase{
	{"type only", 0, Attrs{}, 0x00000002},
	{"XN bit0", 0, Attrs{XN: true}, 0x00000003},
	{"B bit2", 0, Attrs{Mem: MemType{B: true}}, 0x00000006},
	{"C bit3", 0, Attrs{Mem: MemType{C: true}}, 0x0000000A},
	{"AP[0] bit4", 0, Attrs{AP: 0b001}, 0x00000012},
	{"AP[1] bit5", 0, Attrs{AP: 0b010}, 0x00000022},
	{"TEX[0] bit6", 0, Attrs{Mem: MemType{TEX: 0b001}}, 0x00000042},
	{"TEX[1] bit7", 0, Attrs{Mem: MemType{TEX: 0b010}}, 0x00000082},
	{"TEX[2] bit8", 0, Attrs{Mem: MemType{TEX: 0b100}}, 0x00000102},
	{"AP[2] bit9", 0, Attrs{AP: 0b100}, 0x00000202},
	{"S bit10", 0, Attrs{S: true}, 0x00000402},
	{"nG bit11", 0, Attrs{NG: true}, 0x00000802},
	{"base bit12", 0x00001000, Attrs{}, 0x00001002},
	{"base bit31", 0x80000000, Attrs{}, 0x80000002},
	{"base bits31:12", 0xfffff000, Attrs{}, 0xfffff002},
	{"strongly-ordered", 0, Attrs{Mem: StronglyOrdered}, 0x00000002},
	{"device", 0, Attrs{Mem: Device}, 0x00000006},
	{"normal WBWA", 0, Attrs{Mem: NormalWBWA}, 0x0000004E},
	{"every bit", 0xabcde000, Attrs{AP: 0b111, XN: true, Mem: MemType{TEX: 0b111, C: true, B: true}, S: true, NG: true}, 0xabcdefff},
}

func TestSmallDescBits(t *testing.T) {
	for _, c := range smallBitCases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, L2(c.want), SmallDesc(c.pa, c.a), "encode: want %#08x", c.want)
			d := L2(c.want)
			assert.Equal(t, KindSmall, d.Kind())
			pa, a := d.Page()
			assert.Equal(t, c.pa, pa, "decoded base")
			assert.Equal(t, c.a, a, "decoded attributes")
		})
	}
}

type sectionBitCase struct {
	name string
	pa   uint32
	a    Attrs
	want uint32
}

var sectionBitCases = []sectionBitCase{
	{"type only", 0, Attrs{}, 0x00000002},
	{"PXN bit0", 0, Attrs{PXN: true}, 0x00000003},
	{"B bit2", 0, Attrs{Mem: MemType{B: true}}, 0x00000006},
	{"C bit3", 0, Attrs{Mem: MemType{C: true}}, 0x0000000A},
	{"XN bit4", 0, Attrs{XN: true}, 0x00000012},
	{"domain bit5", 0, Attrs{Domain: 1}, 0x00000022},
	{"domain bit6", 0, Attrs{Domain: 2}, 0x00000042},
	{"domain bit7", 0, Attrs{Domain: 4}, 0x00000082},
	{"domain bit8", 0, Attrs{Domain: 8}, 0x00000102},
	{"domain 15", 0, Attrs{Domain: 15}, 0x000001E2},
	{"AP[0] bit10", 0, Attrs{AP: 0b001}, 0x00000402},
	{"AP[1] bit11", 0, Attrs{AP: 0b010}, 0x00000802},
	{"TEX[0] bit12", 0, Attrs{Mem: MemType{TEX: 0b001}}, 0x00001002},
	{"TEX[1] bit13", 0, Attrs{Mem: MemType{TEX: 0b010}}, 0x00002002},
	{"TEX[2] bit14", 0, Attrs{Mem: MemType{TEX: 0b100}}, 0x00004002},
	{"AP[2] bit15", 0, Attrs{AP: 0b100}, 0x00008002},
	{"S bit16", 0, Attrs{S: true}, 0x00010002},
	{"nG bit17", 0, Attrs{NG: true}, 0x00020002},
	{"NS bit19", 0, Attrs{NS: true}, 0x00080002},
	{"base bit20", 0x00100000, Attrs{}, 0x00100002},
	{"base bit31", 0x80000000, Attrs{}, 0x80000002},
	{"base bits31:20", 0xfff00000, Attrs{}, 0xfff00002},
	{"normal WBWA", 0, Attrs{Mem: NormalWBWA}, 0x0000100E},
	{"every bit", 0xabc00000, Attrs{AP: 0b111, XN: true, PXN: true, Mem: MemType{TEX: 0b111, C: true, B: true},
		S: true, NG: true, Domain: 15, NS: true}, 0xabcbfdff},
}

func TestSectionDescBits(t *testing.T) {
	for _, c := range sectionBitCases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, L1(c.want), SectionDesc(c.pa, c.a), "encode: want %#08x", c.want)
			d := L1(c.want)
			assert.Equal(t, KindSection, d.Kind())
			pa, a := d.Section()
			assert.Equal(t, c.pa, pa, "decoded base")
			assert.Equal(t, c.a, a, "decoded attributes")
		})
	}
}

func TestTableDescBits(t *testing.T) {
	for _, c := range []struct {
		name   string
		pa     uint32
		domain uint8
		want   uint32
	}{
		{"type only", 0, 0, 0x00000001},
		{"domain bit5", 0, 1, 0x00000021},
		{"domain bit6", 0, 2, 0x00000041},
		{"domain bit7", 0, 4, 0x00000081},
		{"domain bit8", 0, 8, 0x00000101},
		{"domain 15", 0, 15, 0x000001E1},
		{"base bit10", 0x00000400, 0, 0x00000401},
		{"base bit11", 0x00000800, 0, 0x00000801},
		{"base bit31", 0x80000000, 0, 0x80000001},
		{"base bits31:10", 0xfffffc00, 0, 0xfffffc01},
		{"table page +3072, domain 3", 0x80123C00, 3, 0x80123C61},
	} {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, L1(c.want), TableDesc(c.pa, c.domain), "encode: want %#08x", c.want)
			d := L1(c.want)
			assert.Equal(t, KindTable, d.Kind())
			pa, dom := d.Table()
			assert.Equal(t, c.pa, pa)
			assert.Equal(t, c.domain, dom)
		})
	}
}

// The page-table descriptor's PXN (bit 2), NS (bit 3), SBZ (bit 4) and
// IMPLEMENTATION DEFINED (bit 9) bits are not part of the base address or
// the domain.
func TestTableDescDecodeIgnoresFlagBits(t *testing.T) {
	for _, c := range []struct {
		name string
		d    uint32
	}{
		{"PXN bit2", 0x80123405},
		{"NS bit3", 0x80123409},
		{"SBZ bit4", 0x80123411},
		{"IMP DEF bit9", 0x80123601},
		{"all four", 0x8012361D},
	} {
		d := L1(c.d)
		assert.Equal(t, KindTable, d.Kind(), c.name)
		pa, dom := d.Table()
		assert.Equal(t, uint32(0x80123400), pa, c.name)
		assert.Equal(t, uint8(0), dom, c.name)
	}
	// The walker honours PXN in a table descriptor (see walk_test.go);
	// the mask it uses is bit 2.
	assert.Equal(t, 0x4, l1PXNTable)
	assert.Equal(t, 0x8, l1NSTable)
}

func TestLargePageDecodeBits(t *testing.T) {
	for _, c := range []struct {
		name string
		d    uint32
		pa   uint32
		a    Attrs
	}{
		{"type only", 0x00000001, 0, Attrs{}},
		{"B bit2", 0x00000005, 0, Attrs{Mem: MemType{B: true}}},
		{"C bit3", 0x00000009, 0, Attrs{Mem: MemType{C: true}}},
		{"AP[0] bit4", 0x00000011, 0, Attrs{AP: 0b001}},
		{"AP[1] bit5", 0x00000021, 0, Attrs{AP: 0b010}},
		{"SBZ bits8:6 are not TEX", 0x000001C1, 0, Attrs{}},
		{"AP[2] bit9", 0x00000201, 0, Attrs{AP: 0b100}},
		{"S bit10", 0x00000401, 0, Attrs{S: true}},
		{"nG bit11", 0x00000801, 0, Attrs{NG: true}},
		{"TEX[0] bit12", 0x00001001, 0, Attrs{Mem: MemType{TEX: 0b001}}},
		{"TEX[1] bit13", 0x00002001, 0, Attrs{Mem: MemType{TEX: 0b010}}},
		{"TEX[2] bit14", 0x00004001, 0, Attrs{Mem: MemType{TEX: 0b100}}},
		{"XN bit15", 0x00008001, 0, Attrs{XN: true}},
		{"base bit16", 0x00010001, 0x00010000, Attrs{}},
		{"base bits31:16", 0xffff0001, 0xffff0000, Attrs{}},
		{"normal WBWA user RW nG XN", 0x9001983D, 0x90010000,
			Attrs{AP: APRW, XN: true, NG: true, Mem: NormalWBWA}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := L2(c.d)
			assert.Equal(t, KindLarge, d.Kind())
			pa, a := d.Page()
			assert.Equal(t, c.pa, pa)
			assert.Equal(t, c.a, a)
		})
	}
}

// In a small page descriptor bits [15:12] are base address, not the large
// page's XN and TEX; bit 0 is XN.
func TestSmallPageDecodeIsNotLarge(t *testing.T) {
	pa, a := L2(0x0000F002).Page()
	assert.Equal(t, uint32(0x0000F000), pa)
	assert.Equal(t, Attrs{}, a)
	pa, a = L2(0x0000F1C3).Page()
	assert.Equal(t, uint32(0x0000F000), pa)
	assert.Equal(t, Attrs{XN: true, Mem: MemType{TEX: 0b111}}, a)
}

func TestDescriptorKinds(t *testing.T) {
	for _, c := range []struct {
		d    L1
		want Kind
	}{
		{0x00000000, KindFault},
		{0xfffffffc, KindFault}, // bits[1:0] = 00: the rest is ignored
		{0x00000001, KindTable},
		{0xfffffffd, KindTable},
		{0x00000002, KindSection},
		{0x00000003, KindSection}, // 0b11: section with PXN
		{0x00040002, KindSupersection},
		{0x00040003, KindSupersection},
		{0xfffbfffe, KindSection},
	} {
		assert.Equal(t, c.want, c.d.Kind(), "L1 %#08x", uint32(c.d))
	}
	for _, c := range []struct {
		d    L2
		want Kind
	}{
		{0x00000000, KindFault},
		{0xfffffffc, KindFault},
		{0x00000001, KindLarge},
		{0xfffffffd, KindLarge},
		{0x00000002, KindSmall},
		{0x00000003, KindSmall}, // small page, XN
		{0xffffffff, KindSmall},
	} {
		assert.Equal(t, c.want, c.d.Kind(), "L2 %#08x", uint32(c.d))
	}
	assert.Equal(t, "fault", KindFault.String())
	assert.Equal(t, "table", KindTable.String())
	assert.Equal(t, "section", KindSection.String())
	assert.Equal(t, "supersection", KindSupersection.String())
	assert.Equal(t, "small", KindSmall.String())
	assert.Equal(t, "large", KindLarge.String())
}

func TestSupersectionDecode(t *testing.T) {
	// Base 0x12000000, extended base bits [23:20] = 0x3 and [8:5] = 0xf
	// (neither is a domain: a supersection is in domain 0), AP[1:0] = 11,
	// TEX 001, C, B, nG, XN.
	// 0x12000000 | 0x300000 | bit18 0x40000 | nG 0x20000 | TEX 0x1000 |
	// AP 0xC00 | 0x1E0 | XN 0x10 | C 0x8 | B 0x4 | 0b10.
	d := L1(0x12361DFE)
	assert.Equal(t, KindSupersection, d.Kind())
	pa, a := d.Section()
	assert.Equal(t, uint32(0x12000000), pa)
	assert.Equal(t, Attrs{AP: APRW, XN: true, Mem: NormalWBWA, NG: true}, a)
}

func randAttrs(r *rand.Rand, section bool) Attrs {
	b := func() bool { return r.IntN(2) == 1 }
	a := Attrs{
		AP:  AP(r.IntN(8)),
		XN:  b(),
		Mem: MemType{TEX: uint8(r.IntN(8)), C: b(), B: b()},
		S:   b(),
		NG:  b(),
	}
	if section {
		a.PXN, a.NS, a.Domain = b(), b(), uint8(r.IntN(16))
	}
	return a
}

func TestDescRoundTrips(t *testing.T) {
	r := rand.New(rand.NewPCG(0x5eed, 0xd0e5))
	for range 20000 {
		pa := r.Uint32() &^ 0xfff
		a := randAttrs(r, false)
		gotPA, gotA := SmallDesc(pa, a).Page()
		require.Equal(t, pa, gotPA)
		require.Equal(t, a, gotA)

		pa = r.Uint32() &^ 0xfffff
		a = randAttrs(r, true)
		d := SectionDesc(pa, a)
		require.Equal(t, KindSection, d.Kind(), "%#08x", uint32(d))
		gotPA, gotA = d.Section()
		require.Equal(t, pa, gotPA)
		require.Equal(t, a, gotA)

		pa = r.Uint32() &^ 0x3ff
		dom := uint8(r.IntN(16))
		gotPA, gotDom := TableDesc(pa, dom).Table()
		require.Equal(t, pa, gotPA)
		require.Equal(t, dom, gotDom)
	}
}

// Decode then encode gives back every bit the format defines: all 32 for a
// small page; all but IMP DEF bit 9 (and bit 18, which would make it a
// supersection) for a section; base, domain and type for a table.
func TestDescReverseRoundTrips(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for range 20000 {
		d2 := L2(r.Uint32() | 0b10)
		pa, a := d2.Page()
		require.Equal(t, d2, SmallDesc(pa, a), "%#08x", uint32(d2))

		d1 := L1(r.Uint32()&^(1<<9|1<<18) | 0b10)
		pa, a = d1.Section()
		require.Equal(t, d1, SectionDesc(pa, a), "%#08x", uint32(d1))

		dt := L1(r.Uint32()&^(0b11|1<<2|1<<3|1<<4|1<<9) | 0b01)
		pa, dom := dt.Table()
		require.Equal(t, dt, TableDesc(pa, dom), "%#08x", uint32(dt))
	}
}

func TestAPConstants(t *testing.T) {
	assert.Equal(t, AP(0b000), APNone)
	assert.Equal(t, AP(0b001), APPrivRW)
	assert.Equal(t, AP(0b010), APUserRO)
	assert.Equal(t, AP(0b011), APRW)
	assert.Equal(t, AP(0b101), APPrivRO)
	assert.Equal(t, AP(0b111), APRO)
}

// Table B3-8, SCTLR.AFE = 0.
func TestAPPermitsTableB3_8(t *testing.T) {
	for _, c := range []struct {
		ap           AP
		privR, privW bool
		userR, userW bool
		description  string
	}{
		{0b000, false, false, false, false, "no access"},
		{0b001, true, true, false, false, "PL1 read/write, PL0 no access"},
		{0b010, true, true, true, false, "PL1 read/write, PL0 read-only"},
		{0b011, true, true, true, true, "full access"},
		{0b100, false, false, false, false, "reserved"},
		{0b101, true, false, false, false, "PL1 read-only, PL0 no access"},
		{0b110, true, false, true, false, "read-only (deprecated encoding)"},
		{0b111, true, false, true, false, "read-only"},
	} {
		name := fmt.Sprintf("AP=%03b %s", c.ap, c.description)
		assert.Equal(t, c.privR, c.ap.Permits(false, false), "%s: PL1 read", name)
		assert.Equal(t, c.privW, c.ap.Permits(true, false), "%s: PL1 write", name)
		assert.Equal(t, c.userR, c.ap.Permits(false, true), "%s: PL0 read", name)
		assert.Equal(t, c.userW, c.ap.Permits(true, true), "%s: PL0 write", name)
	}
}

func TestMemTypesTableB3_10(t *testing.T) {
	// TEX C B with TRE = 0: 000 0 0 strongly-ordered, 000 0 1 shareable
	// device, 001 1 1 outer and inner write-back write-allocate.
	assert.Equal(t, MemType{TEX: 0b000, C: false, B: false}, StronglyOrdered)
	assert.Equal(t, MemType{TEX: 0b000, C: false, B: true}, Device)
	assert.Equal(t, MemType{TEX: 0b001, C: true, B: true}, NormalWBWA)
}

func TestMisalignedDescriptorsPanic(t *testing.T) {
	for _, pa := range []uint32{0x80123001, 0x80123200, 0x80123100, 0x80123004} {
		assert.Panics(t, func() { TableDesc(pa, 0) }, "table %#x", pa)
	}
	for _, pa := range []uint32{0x80180000, 0x80100001, 0x80101000, 0x80100400} {
		assert.Panics(t, func() { SectionDesc(pa, Attrs{}) }, "section %#x", pa)
	}
	for _, pa := range []uint32{0x80123800, 0x80123001, 0x80123400, 0x80123004} {
		assert.Panics(t, func() { SmallDesc(pa, Attrs{}) }, "small %#x", pa)
	}
	assert.NotPanics(t, func() { TableDesc(0x80123400, 0) })
	assert.NotPanics(t, func() { SectionDesc(0x80100000, Attrs{}) })
	assert.NotPanics(t, func() { SmallDesc(0x80123000, Attrs{}) })
}

func TestDescStrings(t *testing.T) {
	assert.Equal(t, "table 0x80123800 domain 0", L1(0x80123801).String())
	assert.Contains(t, L1(0).String(), "fault")
	assert.Contains(t, L1(0x80121C1F).String(), "section 0x80100000 ap=011 tex=001 c=1 b=1 xn pxn ng")
	assert.Contains(t, L2(0x8012387E).String(), "small 0x80123000 ap=011 tex=001 c=1 b=1 ng")
	assert.Contains(t, L2(0x00000000).String(), "fault")
}
