package shell

import (
	"bytes"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/phys"
)

// hostPool is a 16 MiB pool on a byte slab, 1 MiB aligned as the board's
// is, so that huge pages are sections.
func hostPool(t *testing.T) *phys.Pool {
	t.Helper()
	p, err := phys.New(phys.Config{Mem: make([]byte, 16<<20), Base: 0x88000000})
	require.NoError(t, err)
	return p
}

// session runs the shell on input and returns its status and what each
// command printed, by command line (echo and prompt removed; "\r\n" back
// to "\n").
type session struct {
	code    int
	out     string
	answers []answer
}

type answer struct{ line, text string }

func (s session) answer(t *testing.T, line string) string {
	t.Helper()
	for _, a := range s.answers {
		if a.line == line {
			return a.text
		}
	}
	require.Failf(t, "no such command in the session", "%q in:\n%s", line, s.out)
	return ""
}

// all returns what every run of line printed.
func (s session) all(line string) []string {
	var out []string
	for _, a := range s.answers {
		if a.line == line {
			out = append(out, a.text)
		}
	}
	return out
}

func runShell(t *testing.T, pool *phys.Pool, input string, cfg Config) session {
	t.Helper()
	var out bytes.Buffer
	cfg.In, cfg.Out, cfg.Pool = strings.NewReader(input), &out, pool
	free := pool.FreeFrames()
	sh, err := New(cfg)
	require.NoError(t, err)
	code, err := sh.Run()
	require.NoError(t, err)
	require.NoError(t, sh.Close())
	require.NoError(t, pool.Check())
	assert.Equal(t, free, pool.FreeFrames(), "the shell's machine gave every frame back")

	text := strings.ReplaceAll(out.String(), "\r\n", "\n")
	assert.NotContains(t, text, "\r", "every newline goes out as CRLF (ONLCR)")
	text = render(text)
	s := session{code: code, out: text}
	for _, chunk := range strings.Split(text, Prompt)[1:] {
		line, rest, _ := strings.Cut(chunk, "\n")
		s.answers = append(s.answers, answer{strings.TrimRight(line, " "), rest})
	}
	return s
}

// render shows text as a terminal would: a backspace moves the cursor
// left, a character overwrites what is under it, a bell is heard not
// seen.
func render(text string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		var screen []byte
		x := 0
		for _, c := range []byte(l) {
			switch {
			case c == '\b':
				x = max(x-1, 0)
			case c == '\a':
			default:
				if x < len(screen) {
					screen[x] = c
				} else {
					screen = append(screen, c)
				}
				x++
			}
		}
		lines[i] = string(screen)
	}
	return strings.Join(lines, "\n")
}

func TestEveryCommandAnswers(t *testing.T) {
	pool := hostPool(t)
	var ran []string
	cfg := Config{
		NetErr: errors.New("the network is off (ip=off)"),
		Scenario: func(words []string) (func() int, error) {
			if words[0] != "fill" {
				return nil, errors.New("unknown scenario " + strconv.Quote(words[0]))
			}
			return func() int {
				ran = append(ran, strings.Join(words, " "))
				// The scenario has the pool to itself: all of it but
				// what the shell's machine held is free.
				f, err := pool.Alloc(phys.HugeOrder, phys.HugeUser)
				require.NoError(t, err)
				require.NoError(t, pool.Put(f))
				return 7
			}, nil
		},
	}
	s := runShell(t, pool, strings.Join([]string{
		"help", "meminfo", "buddyinfo", "pagetypeinfo", "zoneinfo", "vmstat", "swaps", "ps",
		"maps 1", "smaps 1", "smaps 2", "net",
		"sysctl vm.min_free_kbytes", "sysctl vm.min_free_kbytes=4096", "cat /proc/sys/vm/min_free_kbytes",
		"sysctl -a", "sysctl vm.watermark_scale_factor=200", "zoneinfo",
		"cat /sys/kernel/mm/transparent_hugepage/enabled",
		"echo never > /sys/kernel/mm/transparent_hugepage/enabled",
		"cat /sys/kernel/mm/transparent_hugepage/enabled",
		`echo "madvise" >/sys/kernel/mm/transparent_hugepage/enabled`,
		"cat /sys/kernel/mm/transparent_hugepage/enabled",
		"echo 3 > /proc/sys/vm/drop_caches", "sysctl vm.drop_caches=1", "echo hello  world",
		"run fill k=v", "ps", "exit 42", "never read",
	}, "\n")+"\n", cfg)

	assert.Equal(t, 42, s.code)
	assert.Equal(t, []string{"fill k=v"}, ran)
	assert.NotContains(t, s.out, "never read")

	assert.Contains(t, s.answer(t, "help"), "smaps PID")
	assert.Contains(t, s.answer(t, "help"), "/proc/sys/vm/drop_caches")
	meminfo := s.answer(t, "meminfo")
	assert.Regexp(t, `(?m)^MemTotal: +16384 kB$`, meminfo)
	assert.Regexp(t, `(?m)^AnonHugePages: +[1-9]\d* kB$`, meminfo)
	assert.Regexp(t, `(?m)^SwapTotal: +16380 kB$`, meminfo, "16 MiB less the swap header's page")
	assert.Regexp(t, `(?m)^Node 0, zone +Normal( +\d+){11} *$`, s.answer(t, "buddyinfo"))
	assert.Contains(t, s.answer(t, "pagetypeinfo"), "Free pages count per migrate type")
	// The zone's watermarks follow the sysctls: min_free_kbytes=4096 is
	// a min of 1024 pages.
	zones := s.all("zoneinfo")
	require.Len(t, zones, 2)
	assert.NotRegexp(t, `(?m)^ +min +1024$`, zones[0])
	assert.Regexp(t, `(?m)^ +min +1024$`, zones[1])
	vmstat := s.answer(t, "vmstat")
	assert.Regexp(t, `(?m)^thp_fault_alloc [1-9]`, vmstat)
	assert.Regexp(t, `(?m)^pswpout [1-9]`, vmstat)
	assert.Regexp(t, `(?m)^pglazyfree [1-9]`, vmstat)
	assert.Regexp(t, `(?m)^/dev/zram0 +partition\t16380\t\t16\t\t-2$`, s.answer(t, "swaps"))

	ps := s.answer(t, "ps")
	assert.Regexp(t, `(?m)^ *PID +PPID +VSZ +RSS +ANONHUGE +LAZYFREE +SWAP +MINFLT +MAJFLT +COMMAND$`, ps)
	assert.Regexp(t, `(?m)^ *1 +0 +4160 +\d+ +4096 +1024 +16 +\d+ +0 +init$`, ps)
	assert.Regexp(t, `(?m)^ *2 +1 +4160 +\d+ +\d+ +\d+ +\d+ +\d+ +0 +child$`, ps)

	maps := s.answer(t, "maps 1")
	assert.Equal(t, 2, strings.Count(maps, "\n"), maps)
	assert.Regexp(t, `(?m)^[0-9a-f]{8}-[0-9a-f]{8} rw-p [0-9a-f]{8} 00:00 0 *$`, maps)
	smaps := s.answer(t, "smaps 1")
	assert.Regexp(t, `(?m)^AnonHugePages: +4096 kB$`, smaps)
	assert.Regexp(t, `(?m)^LazyFree: +1024 kB$`, smaps)
	assert.Regexp(t, `(?m)^Swap: +16 kB$`, smaps)
	// The child's write copied one page out of a shared huge page.
	assert.Regexp(t, `(?m)^Private_Dirty: +[1-9]\d* kB$`, s.answer(t, "smaps 2"))

	assert.Equal(t, "net: no network: the network is off (ip=off)\n", s.answer(t, "net"))

	def := s.answer(t, "sysctl vm.min_free_kbytes")
	assert.Regexp(t, `^vm\.min_free_kbytes = \d+\n$`, def)
	assert.Equal(t, "vm.min_free_kbytes = 4096\n", s.answer(t, "sysctl vm.min_free_kbytes=4096"))
	assert.Equal(t, "4096\n", s.answer(t, "cat /proc/sys/vm/min_free_kbytes"))
	assert.Equal(t, "vm.min_free_kbytes = 4096\nvm.watermark_scale_factor = 10\n", s.answer(t, "sysctl -a"))
	assert.Equal(t, "vm.watermark_scale_factor = 200\n", s.answer(t, "sysctl vm.watermark_scale_factor=200"))
	assert.Equal(t, 4096, pool.MinFreeKbytes())
	assert.Equal(t, 200, pool.WatermarkScaleFactor())

	thp := regexp.MustCompile(`cat /sys/kernel/mm/transparent_hugepage/enabled\n([^\n]*)\n`).FindAllStringSubmatch(s.out, -1)
	require.Len(t, thp, 3)
	assert.Equal(t, "[always] madvise never", thp[0][1])
	assert.Equal(t, "always madvise [never]", thp[1][1])
	assert.Equal(t, "always [madvise] never", thp[2][1])
	assert.Empty(t, s.answer(t, "echo never > /sys/kernel/mm/transparent_hugepage/enabled"))
	assert.Empty(t, s.answer(t, "echo 3 > /proc/sys/vm/drop_caches"))
	assert.Equal(t, "vm.drop_caches = 1\n", s.answer(t, "sysctl vm.drop_caches=1"))
	assert.Equal(t, "hello world\n", s.answer(t, "echo hello  world"))

	// The tasks stop before the run and start again after it (swapon
	// says so, as Linux's does).
	assert.Equal(t, "mm: Adding 16380k swap on /dev/zram0.  Priority:-2 extents:1 across:16380k\nrun: fill exited with status 7\n",
		s.answer(t, "run fill k=v"))
	// After a run the tasks start again, on a manager of their own: init
	// is PID 1 again, as after a reboot.
	require.Len(t, s.all("ps"), 2)
	assert.Regexp(t, `(?m)^ *1 +0 +4160 +\d+ +4096 +1024 +16 +\d+ +0 +init$`, s.all("ps")[1])
}

func TestBadInputIsOneLine(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"frobnicate", "sh: frobnicate: unknown command (help lists them)"},
		{"maps abc", `maps: "abc" is not a PID`},
		{"maps 9999", "maps: no process 9999 (ps lists them)"},
		{"maps", "maps: usage: maps PID"},
		{"smaps -1", `smaps: "-1" is not a PID`},
		{"meminfo extra", `meminfo: takes no arguments (got "extra")`},
		{"sysctl vm.min_free_kbytes=lots", `sysctl: vm.min_free_kbytes: "lots" is not an integer`},
		{"sysctl vm.min_free_kbytes=99999999", "sysctl: vm.min_free_kbytes: 99999999 is out of range: from 0 to "},
		{"sysctl vm.min_free_kbytes=-1", "sysctl: vm.min_free_kbytes: -1 is out of range"},
		{"sysctl vm.swappiness", "sysctl: cannot stat /proc/sys/vm/swappiness: no such file (-a lists them)"},
		{"sysctl vm.watermark_scale_factor=0", "sysctl: vm.watermark_scale_factor: 0 is out of range: from 1 to 3000"},
		{"sysctl vm/x", `sysctl: "vm/x" is not a sysctl name`},
		{"echo sometimes > /sys/kernel/mm/transparent_hugepage/enabled", `echo: /sys/kernel/mm/transparent_hugepage/enabled: "sometimes" is not always, madvise or never`},
		{"echo 5 > /sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "echo: /sys/kernel/mm/transparent_hugepage/hpage_pmd_size: permission denied (read-only)"},
		{"echo 1 >", "echo: > needs a FILE"},
		{"echo 1 > /etc/passwd", "echo: /etc/passwd: no such file"},
		{"cat /proc/sys/vm/drop_caches", "cat: /proc/sys/vm/drop_caches: permission denied (write-only)"},
		{"cat /proc/1/status", "cat: /proc/1/status: no such file"},
		{"cat", "cat: usage: cat FILE..."},
		{`echo "open`, "sh: unterminated \" quote"},
		{"exit 256", `exit: "256" is not a status from 0 to 255`},
		{"exit x", `exit: "x" is not a status from 0 to 255`},
		{strings.Repeat("x", MaxLine+10), "line refused: 266 bytes, longer than 256"},
		{"me\x00m\xffinfo\x01", "line refused: 3 byte(s) of it are not printable ASCII"},
	} {
		s := runShell(t, hostPool(t), c.in+"\n", Config{})
		require.Len(t, s.answers, 2, c.in)
		got := s.answers[0].text
		assert.True(t, strings.HasPrefix(got, c.want), "%q: got %q, want %q...", c.in, got, c.want)
		assert.Equal(t, 1, strings.Count(got, "\n"), "%q: one line, got %q", c.in, got)
		assert.Equal(t, 0, s.code)
	}
}

func TestRunRefusedLeavesTheTasks(t *testing.T) {
	cfg := Config{Scenario: func(words []string) (func() int, error) {
		return nil, errors.New(`the shell does not run "shell": it is running`)
	}}
	s := runShell(t, hostPool(t), "run shell\nps\nrun\n", cfg)
	assert.Equal(t, "run: usage: run SCENARIO [k=v...]\n", s.answer(t, "run"))
	assert.Equal(t, "run: the shell does not run \"shell\": it is running\n", s.answer(t, "run shell"))
	assert.Regexp(t, `(?m)^ *1 +0 .* init *$`, s.answer(t, "ps"), "the tasks were not restarted")
	// Without a scenario runner, run is not there at all.
	s = runShell(t, hostPool(t), "help\nrun x\n", Config{})
	assert.NotContains(t, s.answer(t, "help"), "run SCENARIO")
	assert.Equal(t, "run: no scenarios here\n", s.answer(t, "run x"))
}

// TestLineEditing types what a person would: rubouts, a killed line, a
// cancelled one, arrows, other keys' escape sequences, CRLF and bare CR.
func TestLineEditing(t *testing.T) {
	input := "" +
		"psx\x7f\r\n" + // DEL rubs out; CRLF is one end of line
		"garbage\x15echo one\r" + // Ctrl-U kills the line; CR alone ends it
		"echo two\b\b\bthree\n" + // BS rubs out
		"exit 9\x03" + // Ctrl-C cancels
		"\x1b[A\x1b[A\r" + // up twice: "echo one"
		"\x1bOA\x1b[B\x1b[B\x1b[Becho \x1b[1;5Cfour\x1b[3~\x1bx\r" + // SS3 up, down past the end, Ctrl-Right, Delete, Alt-x: dropped
		"\x1b[99999999999999999999z" + "echo five\r" + // a long sequence is dropped whole
		"\x1b[12echo six\x1b\r" // a stray ESC never eats the Enter after it

	s := runShell(t, hostPool(t), input, Config{})
	assert.Contains(t, s.answer(t, "ps"), "init")
	assert.Equal(t, "one\n", s.answer(t, "echo one"))
	assert.Equal(t, "three\n", s.answer(t, "echo three"))
	assert.Equal(t, "four\n", s.answer(t, "echo four"))
	assert.Equal(t, "five\n", s.answer(t, "echo five"))
	assert.Equal(t, "sh: cho: unknown command (help lists them)\n", s.answer(t, "cho six"), "the sequence ends at its final byte, e")
	assert.Contains(t, s.out, "exit 9^C\n")
	assert.Equal(t, 0, s.code, "the cancelled exit did not run")
}

func TestOnlcr(t *testing.T) {
	var b bytes.Buffer
	w := &onlcr{w: &b}
	for _, p := range []string{"a\nb\r", "\nc\n"} {
		n, err := w.Write([]byte(p))
		require.NoError(t, err)
		assert.Equal(t, len(p), n)
	}
	assert.Equal(t, "a\r\nb\r\nc\r\n", b.String())
}

func FuzzShellNeverPanics(f *testing.F) {
	f.Add([]byte("meminfo\nmaps 1\nsysctl vm.min_free_kbytes=1\n"))
	f.Add([]byte("\x1b[A\x1b[B\x15\x03\x7f\xff\x00echo x > /proc/meminfo\r\n"))
	pool, err := phys.New(phys.Config{Mem: make([]byte, 16<<20), Base: 0x88000000})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, in []byte) {
		sh, err := New(Config{In: bytes.NewReader(in), Out: &bytes.Buffer{}, Pool: pool})
		require.NoError(t, err)
		_, err = sh.Run()
		require.NoError(t, err)
		require.NoError(t, sh.Close())
		pool.SetMinFreeKbytes(0)
		pool.SetWatermarkScaleFactor(10)
	})
}
