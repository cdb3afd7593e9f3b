package pgtable

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Fault status encodings, short-descriptor format, table B3-23.
func TestFaultStatusCodes(t *testing.T) {
	assert.Equal(t, FaultStatus(0b00101), FSTranslationSection)
	assert.Equal(t, FaultStatus(0b00111), FSTranslationPage)
	assert.Equal(t, FaultStatus(0b01001), FSDomainSection)
	assert.Equal(t, FaultStatus(0b01011), FSDomainPage)
	assert.Equal(t, FaultStatus(0b01101), FSPermissionSection)
	assert.Equal(t, FaultStatus(0b01111), FSPermissionPage)

	for _, c := range []struct {
		fs                      FaultStatus
		translation, permission bool
		name                    string
	}{
		{0, false, false, "ok"},
		{FSTranslationSection, true, false, "translation fault (section)"},
		{FSTranslationPage, true, false, "translation fault (page)"},
		{FSDomainSection, false, false, "domain fault (section)"},
		{FSDomainPage, false, false, "domain fault (page)"},
		{FSPermissionSection, false, true, "permission fault (section)"},
		{FSPermissionPage, false, true, "permission fault (page)"},
		{FSExternalAbortL2, false, false, "external abort on translation table walk (2nd level)"},
		{0b10110, false, false, "fault status 0b10110"},
	} {
		assert.Equal(t, c.translation, c.fs.Translation(), c.name)
		assert.Equal(t, c.permission, c.fs.Permission(), c.name)
		assert.Equal(t, c.name, c.fs.String())
	}
	assert.Equal(t, "read", AccessRead.String())
	assert.Equal(t, "write", AccessWrite.String())
	assert.Equal(t, "exec", AccessExec.String())
}

// The walk fixture: small pages and sections with every kind of
// permission, mapped at PA = VA + 0x50000000.
var walkPages = []struct {
	va uint32
	f  PTE
}{
	{0x40001000, Young | User | Write | Dirty | Exec}, // user rwx
	{0x40002000, Young | User},                        // user ro, XN
	{0x40003000, Young | Write | Dirty | Exec},        // kernel rwx, user none
	{0x40004000, Young},                               // kernel ro, XN
	{0x40005000, User | Write | Dirty},                // old
	{0x40006000, Young | User | Write},                // clean
	{0x40007000, Young | User | Write | Dirty | NoAccess},
	{0x40100000, Young | User | Exec}, // odd half: user r-x
}

var walkSections = []struct {
	va uint32
	f  PTE
}{
	{0x40500000, Young | User | Write | Dirty | Exec}, // user rwx (PXN)
	{0x40600000, Young | User},                        // user ro, XN
	{0x40700000, Young | Write | Dirty},               // kernel rw, XN
}

func walkTable(t *testing.T) *Table {
	t.Helper()
	tb, _ := newTable(t)
	for _, m := range walkPages {
		mapPage(t, tb, m.va, MkPTE(m.va+0x50000000, m.f))
	}
	for _, m := range walkSections {
		require.NoError(t, tb.SetSection(m.va, MkPTE(m.va+0x50000000, m.f)))
	}
	require.NoError(t, tb.Check())
	// Task tables carry PXN (see TestPopulateSetsPXN); the walk tests
	// below exercise PL1 execution too, so they clear it and set it back
	// where they test it.
	for i := uint32(0); i < WindowSections; i++ {
		if d := L1(get32(tb.l1, i)); d.Kind() == KindTable {
			put32(tb.l1, i, uint32(d)&^(1<<2))
		}
	}
	return tb
}

// Linux/ARM sets PXN on user page tables where the CPU has it: the
// kernel must not execute task pages.
func TestPopulateSetsPXN(t *testing.T) {
	tb, _ := newTable(t)
	mapPage(t, tb, 0x40001000, MkPTE(0x90001000, Young|User|Exec))
	require.Equal(t, KindTable, tb.L1(0x40001000).Kind())
	assert.NotZero(t, uint32(tb.L1(0x40001000))&(1<<2), "PXN")
	_, fs := tb.Translate(0x40001000, AccessExec, false)
	assert.Equal(t, FSPermissionPage, fs, "PL1 may not execute a task page")
	_, fs = tb.Translate(0x40001000, AccessExec, true)
	assert.Zero(t, fs, "PL0 may")
}

type walkCase struct {
	va   uint32
	acc  Access
	user bool
	pa   uint32
	fs   FaultStatus
}

func (c walkCase) String() string {
	lvl := "PL1"
	if c.user {
		lvl = "PL0"
	}
	return fmt.Sprintf("%v %#08x at %s", c.acc, c.va, lvl)
}

func runWalk(t *testing.T, tb *Table, dacr uint32, cases []walkCase) {
	t.Helper()
	for _, c := range cases {
		pa, fs := tb.translate(c.va, c.acc, c.user, dacr)
		assert.Equal(t, c.fs, fs, "%v: fault status %v, want %v", c, fs, c.fs)
		assert.Equal(t, c.pa, pa, "%v: pa", c)
		if dacr == DACR {
			pa2, fs2 := tb.Translate(c.va, c.acc, c.user)
			assert.Equal(t, c.pa, pa2, "%v: Translate pa", c)
			assert.Equal(t, c.fs, fs2, "%v: Translate fault status", c)
		}
	}
}

const (
	R = AccessRead
	W = AccessWrite
	X = AccessExec
)

func TestTranslateSmallPages(t *testing.T) {
	tb := walkTable(t)
	runWalk(t, tb, DACR, []walkCase{
		// User rwx: AP=011, XN clear, no PXN at the second level.
		{0x40001234, R, true, 0x90001234, 0},
		{0x40001234, W, true, 0x90001234, 0},
		{0x40001234, X, true, 0x90001234, 0},
		{0x40001000, R, false, 0x90001000, 0},
		{0x40001ffc, W, false, 0x90001ffc, 0},
		{0x40001fff, X, false, 0x90001fff, 0},

		// User read-only, XN: AP=111.
		{0x40002abc, R, true, 0x90002abc, 0},
		{0x40002abc, R, false, 0x90002abc, 0},
		{0x40002abc, W, true, 0, FSPermissionPage},
		{0x40002abc, W, false, 0, FSPermissionPage},
		{0x40002abc, X, true, 0, FSPermissionPage},
		{0x40002abc, X, false, 0, FSPermissionPage},

		// Kernel rwx: AP=001.
		{0x40003ffc, R, true, 0, FSPermissionPage},
		{0x40003ffc, W, true, 0, FSPermissionPage},
		{0x40003ffc, X, true, 0, FSPermissionPage}, // execute needs read permission
		{0x40003ffc, R, false, 0x90003ffc, 0},
		{0x40003ffc, W, false, 0x90003ffc, 0},
		{0x40003ffc, X, false, 0x90003ffc, 0},

		// Kernel read-only, XN: AP=101.
		{0x40004010, R, false, 0x90004010, 0},
		{0x40004010, W, false, 0, FSPermissionPage},
		{0x40004010, X, false, 0, FSPermissionPage},
		{0x40004010, R, true, 0, FSPermissionPage},
		{0x40004010, W, true, 0, FSPermissionPage},

		// The odd half of the pair: user read/execute.
		{0x40100fed, R, true, 0x90100fed, 0},
		{0x40100fed, X, true, 0x90100fed, 0},
		{0x40100fed, X, false, 0x90100fed, 0},
		{0x40100fed, W, true, 0, FSPermissionPage},
		{0x40100fed, W, false, 0, FSPermissionPage},
	})
}

func TestTranslateSections(t *testing.T) {
	tb := walkTable(t)
	runWalk(t, tb, DACR, []walkCase{
		// User rwx section: AP=011; a huge PTE's section has PXN.
		{0x40500000, R, true, 0x90500000, 0},
		{0x40512345, R, true, 0x90512345, 0},
		{0x40512345, W, true, 0x90512345, 0},
		{0x405fffff, X, true, 0x905fffff, 0},
		{0x40512345, R, false, 0x90512345, 0},
		{0x40512345, W, false, 0x90512345, 0},
		{0x40512345, X, false, 0, FSPermissionSection},

		// User read-only section, XN.
		{0x406fffff, R, true, 0x906fffff, 0},
		{0x406fffff, R, false, 0x906fffff, 0},
		{0x406fffff, W, true, 0, FSPermissionSection},
		{0x406fffff, W, false, 0, FSPermissionSection},
		{0x40600000, X, true, 0, FSPermissionSection},
		{0x40600000, X, false, 0, FSPermissionSection},

		// Kernel read/write section, XN.
		{0x40789abc, R, false, 0x90789abc, 0},
		{0x40789abc, W, false, 0x90789abc, 0},
		{0x40789abc, R, true, 0, FSPermissionSection},
		{0x40789abc, W, true, 0, FSPermissionSection},
		{0x40789abc, X, false, 0, FSPermissionSection},
	})
}

func TestTranslateTranslationFaults(t *testing.T) {
	tb := walkTable(t)
	var cases []walkCase
	for _, acc := range []Access{R, W, X} {
		for _, user := range []bool{false, true} {
			cases = append(cases,
				// No L1 entry.
				walkCase{0x40800000, acc, user, 0, FSTranslationSection},
				walkCase{0x40234567, acc, user, 0, FSTranslationSection},
				walkCase{0x7fffffff, acc, user, 0, FSTranslationSection},
				// Outside the window: the task table has no L1 entries there.
				walkCase{0x00000000, acc, user, 0, FSTranslationSection},
				walkCase{0x3fffffff, acc, user, 0, FSTranslationSection},
				walkCase{0x80000000, acc, user, 0, FSTranslationSection},
				walkCase{0x90001234, acc, user, 0, FSTranslationSection},
				walkCase{0xffffffff, acc, user, 0, FSTranslationSection},
				// A table with an empty entry.
				walkCase{0x40000000, acc, user, 0, FSTranslationPage},
				walkCase{0x40008000, acc, user, 0, FSTranslationPage},
				walkCase{0x401ff000, acc, user, 0, FSTranslationPage},
				// Old and PROT_NONE PTEs have a fault descriptor.
				walkCase{0x40005000, acc, user, 0, FSTranslationPage},
				walkCase{0x40007000, acc, user, 0, FSTranslationPage},
			)
		}
	}
	runWalk(t, tb, DACR, cases)
}

// DACR: two bits per domain, domain n at [2n+1:2n] (B3.12.3, B4.1.43):
// 00 no access (domain fault), 01 client (permissions checked), 11 manager
// (permissions not checked, XN included), 10 reserved (treated as no
// access).
func TestTranslateDomains(t *testing.T) {
	tb := walkTable(t)
	for _, c := range []struct {
		name string
		dacr uint32
	}{
		{"no access", 0b00},
		{"reserved", 0b10},
		{"no access, all others manager", 0xfffffffc},
		{"reserved, all others client", 0x55555556},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cases []walkCase
			for _, acc := range []Access{R, W, X} {
				for _, user := range []bool{false, true} {
					cases = append(cases,
						walkCase{0x40001234, acc, user, 0, FSDomainPage},
						walkCase{0x40002abc, acc, user, 0, FSDomainPage},
						walkCase{0x40100fed, acc, user, 0, FSDomainPage},
						walkCase{0x40512345, acc, user, 0, FSDomainSection},
						walkCase{0x406fffff, acc, user, 0, FSDomainSection},
						// Translation faults come first.
						walkCase{0x40800000, acc, user, 0, FSTranslationSection},
						walkCase{0x40008000, acc, user, 0, FSTranslationPage},
						walkCase{0x40005000, acc, user, 0, FSTranslationPage},
					)
				}
			}
			runWalk(t, tb, c.dacr, cases)
		})
	}

	t.Run("client", func(t *testing.T) {
		runWalk(t, tb, 0b01, []walkCase{
			{0x40001234, W, true, 0x90001234, 0},
			{0x40002abc, W, true, 0, FSPermissionPage},
			{0x40512345, X, false, 0, FSPermissionSection},
		})
	})

	t.Run("manager", func(t *testing.T) {
		var cases []walkCase
		for _, acc := range []Access{R, W, X} {
			for _, user := range []bool{false, true} {
				cases = append(cases,
					walkCase{0x40001234, acc, user, 0x90001234, 0},
					walkCase{0x40002abc, acc, user, 0x90002abc, 0}, // RO, XN: not checked
					walkCase{0x40004010, acc, user, 0x90004010, 0}, // kernel RO: not checked
					walkCase{0x40512345, acc, user, 0x90512345, 0}, // PXN: not checked
					walkCase{0x406fffff, acc, user, 0x906fffff, 0},
					walkCase{0x40800000, acc, user, 0, FSTranslationSection},
					walkCase{0x40005000, acc, user, 0, FSTranslationPage},
				)
			}
		}
		runWalk(t, tb, 0b11, cases)
	})
}

// Descriptors in domains other than 0, written by hand: TamaGo's DACR
// (0x1) makes every other domain no-access.
func TestTranslateOtherDomains(t *testing.T) {
	tb := walkTable(t)
	// A section at 0x40900000 -> 0x90900000 in domain 5, AP=011, TEX 001
	// C B, nG: 0x90900000 | 0x20000 | 0x1000 | 0xC00 | 5<<5 | 0xC | 0x2.
	put32(tb.l1, l1Index(0x40900000), 0x90921CAE)
	require.Equal(t, uint8(5), func() uint8 { _, a := tb.L1(0x40900000).Section(); return a.Domain }())
	// The table of pair 0's even half, moved to domain 7.
	l1 := uint32(tb.L1(0x40000000))
	put32(tb.l1, l1Index(0x40000000), l1|7<<5)

	runWalk(t, tb, DACR, []walkCase{
		{0x40912345, R, true, 0, FSDomainSection},
		{0x40912345, R, false, 0, FSDomainSection},
		{0x40001234, R, true, 0, FSDomainPage},
		{0x40001234, X, false, 0, FSDomainPage},
		{0x40100fed, R, true, 0x90100fed, 0}, // the odd half is still domain 0
	})
	runWalk(t, tb, 0b01<<10, []walkCase{ // domain 5 client, the rest no access
		{0x40912345, W, true, 0x90912345, 0},
		{0x40512345, R, true, 0, FSDomainSection},
		{0x40001234, R, true, 0, FSDomainPage},
	})
	runWalk(t, tb, 0b11<<14|0b01<<10, []walkCase{ // domain 7 manager, 5 client
		{0x40912345, X, false, 0x90912345, 0},
		{0x40002abc, W, true, 0x90002abc, 0},
		{0x40100fed, R, true, 0, FSDomainPage},
	})
	runWalk(t, tb, 0b10<<14|0b01, []walkCase{ // domain 7 reserved
		{0x40001234, R, false, 0, FSDomainPage},
		{0x40100fed, R, true, 0x90100fed, 0},
	})
}

// PXN in a page-table descriptor (bit 2) forbids PL1 execution of every
// page of that table, and nothing else.
func TestTranslatePXNFromTableDescriptor(t *testing.T) {
	tb := walkTable(t)
	i := l1Index(0x40001000)
	put32(tb.l1, i, uint32(tb.L1(0x40001000))|1<<2)
	runWalk(t, tb, DACR, []walkCase{
		{0x40001234, X, false, 0, FSPermissionPage},
		{0x40001234, X, true, 0x90001234, 0},
		{0x40001234, R, false, 0x90001234, 0},
		{0x40001234, W, false, 0x90001234, 0},
		{0x40003ffc, X, false, 0, FSPermissionPage},
		{0x40003ffc, R, false, 0x90003ffc, 0},
		{0x40100fed, X, false, 0x90100fed, 0}, // other L1 entry, no PXN
	})
	// NS (bit 3) changes nothing the walker models.
	put32(tb.l1, i, uint32(tb.L1(0x40001000))&^(1<<2)|1<<3)
	runWalk(t, tb, DACR, []walkCase{
		{0x40001234, X, false, 0x90001234, 0},
	})
}

// rawL2 writes a hardware second-level descriptor straight into va's
// table, as a buggy (or later, foreign) writer could.
func rawL2(tb *Table, va uint32, d L2) {
	pg, e := tb.slot(va)
	put32(pg[:], e+2*PTEsPerTable, uint32(d))
}

// The walker reads the hardware descriptors only.
func TestTranslateReadsHardwareEntries(t *testing.T) {
	tb := walkTable(t)
	pg, e := tb.slot(0x40001000)
	put32(pg[:], e, 0) // shadow PTE gone, hardware entry still there
	runWalk(t, tb, DACR, []walkCase{{0x40001234, W, true, 0x90001234, 0}})

	// A large page (64 KiB): base 0x90010000, XN (bit 15), TEX 001 (bits
	// 14:12), AP=011, C B, type 01 -> 0x9001903D. Bits [15:0] of the VA
	// pass through.
	rawL2(tb, 0x40003000, 0x9001903D)
	runWalk(t, tb, DACR, []walkCase{
		{0x40003abc, R, true, 0x90013abc, 0},
		{0x40003abc, W, true, 0x90013abc, 0},
		{0x40003abc, X, true, 0, FSPermissionPage},
		{0x40003abc, X, false, 0, FSPermissionPage},
	})
	// Without XN; read-only for PL1 only (AP=101).
	rawL2(tb, 0x40003000, 0x90011215)
	runWalk(t, tb, DACR, []walkCase{
		{0x40003abc, X, false, 0x90013abc, 0},
		{0x40003abc, W, false, 0, FSPermissionPage},
		{0x40003abc, R, true, 0, FSPermissionPage},
	})

	// A small page with AP=000 and with the reserved AP=100.
	rawL2(tb, 0x40003000, 0x9000300E)
	rawL2(tb, 0x40004000, 0x9000420E)
	var cases []walkCase
	for _, acc := range []Access{R, W, X} {
		for _, user := range []bool{false, true} {
			cases = append(cases,
				walkCase{0x40003000, acc, user, 0, FSPermissionPage},
				walkCase{0x40004000, acc, user, 0, FSPermissionPage})
		}
	}
	runWalk(t, tb, DACR, cases)

	// A small page with the deprecated read-only encoding AP=110.
	rawL2(tb, 0x40004000, 0x9000422E)
	runWalk(t, tb, DACR, []walkCase{
		{0x40004321, R, true, 0x90004321, 0},
		{0x40004321, R, false, 0x90004321, 0},
		{0x40004321, X, true, 0x90004321, 0},
		{0x40004321, W, false, 0, FSPermissionPage},
	})
}

// A supersection (bit 18) maps 16 MiB: VA bits [23:0] pass through, its
// domain is 0 whatever bits [8:5] (extended base address) hold.
func TestTranslateSupersection(t *testing.T) {
	tb := walkTable(t)
	// Base 0x12000000, supersection, AP=011, [8:5] = 0xf, type 0b10.
	put32(tb.l1, l1Index(0x40a00000), 0x12040DE2)
	runWalk(t, tb, DACR, []walkCase{
		{0x40abcdef, R, true, 0x12abcdef, 0},
		{0x40abcdef, W, true, 0x12abcdef, 0},
		{0x40abcdef, X, false, 0x12abcdef, 0},
	})
	runWalk(t, tb, 0b00, []walkCase{{0x40abcdef, R, true, 0, FSDomainSection}})
	// With XN and PXN.
	put32(tb.l1, l1Index(0x40a00000), 0x12040DF3)
	runWalk(t, tb, DACR, []walkCase{
		{0x40abcdef, R, false, 0x12abcdef, 0},
		{0x40abcdef, X, false, 0, FSPermissionSection},
		{0x40abcdef, X, true, 0, FSPermissionSection},
	})
}

// A page-table descriptor pointing at memory the walk cannot read: the
// fetch of the second-level descriptor takes a synchronous external abort
// on the translation table walk, second level: FS = 0b01110 (table B3-23;
// 0b01100 is the first-level walk, which succeeded here).
func TestTranslateExternalAbortOnSecondLevelWalk(t *testing.T) {
	tb := walkTable(t)
	put32(tb.l1, l1Index(0x40800000), uint32(TableDesc(0x00100000, 0)))
	pa, fs := tb.Translate(0x40801000, AccessRead, true)
	assert.Equal(t, uint32(0), pa)
	assert.Equal(t, FaultStatus(0b01110), fs, "got %v", fs)
	assert.False(t, fs.Translation())
	assert.False(t, fs.Permission())
}

// Linux/ARM's young and dirty emulation, through the walker: the first
// access to an old page takes a translation fault, the first write to a
// clean writable page a permission fault; the fault handler sets the bit
// and the access then succeeds.
func TestTranslateYoungDirtyProtocol(t *testing.T) {
	tb, _ := newTable(t)
	va, pa := uint32(0x40123000), uint32(0x90456000)
	p := MkPTE(pa, User|Write) // freshly faulted-in, old and clean
	mapPage(t, tb, va, p)

	runWalk(t, tb, DACR, []walkCase{
		{va + 0x10, R, true, 0, FSTranslationPage},
		{va + 0x10, W, true, 0, FSTranslationPage},
	})

	p = p.With(Young) // the read fault marks it young
	tb.Set(va, p)
	runWalk(t, tb, DACR, []walkCase{
		{va + 0x10, R, true, pa + 0x10, 0},
		{va + 0x10, W, true, 0, FSPermissionPage}, // clean: no hardware write
		{va + 0x10, W, false, 0, FSPermissionPage},
		{va + 0x10, X, true, 0, FSPermissionPage},
	})

	p = p.With(Dirty) // the write fault marks it dirty
	tb.Set(va, p)
	runWalk(t, tb, DACR, []walkCase{
		{va + 0x10, W, true, pa + 0x10, 0},
		{va + 0xfff, W, true, pa + 0xfff, 0},
		{va + 0x10, R, true, pa + 0x10, 0},
		{va + 0x10, W, false, pa + 0x10, 0},
	})

	// Dirty but not writable (COW after fork): reads only.
	tb.Set(va, p.Without(Write))
	runWalk(t, tb, DACR, []walkCase{
		{va, R, true, pa, 0},
		{va, W, true, 0, FSPermissionPage},
	})

	// Aging clears Young: the next access faults again.
	tb.Set(va, p.Without(Young))
	runWalk(t, tb, DACR, []walkCase{{va, R, true, 0, FSTranslationPage}})

	// PROT_NONE keeps the frame but allows nothing.
	tb.Set(va, p.With(NoAccess))
	var cases []walkCase
	for _, acc := range []Access{R, W, X} {
		for _, user := range []bool{false, true} {
			cases = append(cases, walkCase{va, acc, user, 0, FSTranslationPage})
		}
	}
	runWalk(t, tb, DACR, cases)
	assert.Equal(t, pa, tb.PTE(va).PA())

	tb.Set(va, p.Without(NoAccess).With(Exec))
	runWalk(t, tb, DACR, []walkCase{{va, X, true, pa, 0}})
	require.NoError(t, tb.Check())
}
