package tests

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu"
	"yolk/runtime/shell"
)

// transcript splits the console at the prompts: each command line as
// echoed, with what it printed.
func transcript(lines []string) map[string]string {
	out := map[string]string{}
	cmd := ""
	for _, l := range lines {
		if c, ok := strings.CutPrefix(l, shell.Prompt); ok {
			cmd = strings.TrimSpace(strings.ReplaceAll(c, "\a", "")) // the bell of an over-long line
			out[cmd] += ""
			continue
		}
		if cmd != "" {
			out[cmd] += l + "\n"
		}
	}
	return out
}

// TestShellOnTheConsole boots the image into the shell (the bare word
// shell on the command line, as make shell passes it), types every
// command and three kinds of bad input (unknown commands and bad
// arguments, a bad sysctl value, an over-long line and binary garbage),
// and ends with exit 3, whose status must be the QEMU process's.
func TestShellOnTheConsole(t *testing.T) {
	long := strings.Repeat("z", shell.MaxLine+44)
	input := strings.Join([]string{
		"help", "meminfo", "buddyinfo", "pagetypeinfo", "zoneinfo", "vmstat", "swaps", "ps",
		"maps 1", "smaps 2", "net",
		"sysctl vm.min_free_kbytes=4096", "sysctl vm.min_free_kbytes", "sysctl -a",
		"echo never > /sys/kernel/mm/transparent_hugepage/enabled",
		"cat /sys/kernel/mm/transparent_hugepage/enabled",
		"run sleep duration=10ms", "run shell",
		"frobnicate", "maps abc", "maps 9999",
		"sysctl vm.min_free_kbytes=lots",
		long,
		"ps\x00\xff\x1b\xfe garbage \x07\x02",
		"exit 9\x03", // Ctrl-C: never runs
		"exit 3",
	}, "\r") + "\r"
	// The harness holds the input back until the image is ready, as a
	// person waits for the prompt.
	run := boot(t, qemu.Config{Image: evkImage(t), Append: []string{"shell"}, Stdin: strings.NewReader(input)})
	require.Equal(t, 3, run.ExitCode, run.Tail(40))
	// The last verdict is the shell's; run sleep's came before it.
	res, ok := run.Verdict()
	require.True(t, ok)
	assert.Equal(t, "shell", res.Value("scenario"))
	assert.Equal(t, "exit", res.Value("status"))
	assert.Equal(t, "3", res.Value("code"))

	tr := transcript(run.Lines)
	answer := func(cmd string) string {
		t.Helper()
		a, ok := tr[cmd]
		require.True(t, ok, "no %q in:\n%s", cmd, run.Tail(400))
		return a
	}
	for cmd, want := range map[string]string{
		"help":         `(?m)^  smaps PID +print /proc/PID/smaps$`,
		"meminfo":      `(?m)^MemTotal: +389120 kB\nMemFree: +\d+ kB$[\s\S]*^AnonHugePages: +4096 kB$`,
		"buddyinfo":    `^Node 0, zone   Normal( +\d+){11} \n$`,
		"pagetypeinfo": `(?m)^Node    0, zone   Normal, type      Movable( +\d+){11} $`,
		"zoneinfo":     `(?m)^        min      623$`,
		"vmstat":       `(?m)^thp_fault_alloc 4$[\s\S]*^thp_split_pmd 1$`,
		"swaps":        `(?m)^/dev/zram0 +partition\t16380\t\t16\t\t-2$`,
		"ps":           `(?m)^   1    0 4160 4144     4096     1024   16 +\d+ +0 +init$\n^   2    1 4160 +\d+ +\d+ +1024   16 +\d+ +0 +child$`,
		"maps 1":       `^7fb00000-7ff00000 rw-p 00000000 00:00 0 \n7fff0000-80000000 rw-p 00000000 00:00 0 \n$`,
		"smaps 2":      `(?m)^Private_Dirty: +4 kB$`,
		"net":          `(?m)^RxFrames: +\d+$[\s\S]*^ReserveBound: +\d+$`,

		"sysctl vm.min_free_kbytes=4096":                  `^vm.min_free_kbytes = 4096\n$`,
		"sysctl vm.min_free_kbytes":                       `^vm.min_free_kbytes = 4096\n$`,
		"sysctl -a":                                       `^vm.min_free_kbytes = 4096\nvm.watermark_scale_factor = 10\n$`,
		"cat /sys/kernel/mm/transparent_hugepage/enabled": `^always madvise \[never\]\n$`,
		"run sleep duration=10ms":                         `yolk: result scenario=sleep status=pass code=0\n[\s\S]*run: sleep exited with status 0\n$`,
		"run shell":                                       `^run: the shell is running already; exit leaves it\n$`,

		"frobnicate":                     `^sh: frobnicate: unknown command \(help lists them\)\n$`,
		"maps abc":                       `^maps: "abc" is not a PID\n$`,
		"maps 9999":                      `^maps: no process 9999 \(ps lists them\)\n$`,
		"sysctl vm.min_free_kbytes=lots": `^sysctl: vm.min_free_kbytes: "lots" is not an integer\n$`,
		long[:shell.MaxLine]:             `^line refused: 300 bytes, longer than 256\n$`,
		// NUL, 0xff, 0xfe (which also ends the escape ESC began), BEL, STX.
		"ps garbage": `^line refused: 5 byte\(s\) of it are not printable ASCII\n$`,
		"exit 9^C":   `^$`,
	} {
		assert.Regexp(t, regexp.MustCompile(want), answer(cmd), cmd)
	}
	// The min watermark followed the sysctl: 4096 kB is 1024 pages, the
	// zoneinfo above (623 pages) was before it.
	assert.Empty(t, answer("echo never > /sys/kernel/mm/transparent_hugepage/enabled"))
	assert.NotContains(t, strings.Join(run.Lines, "\n"), "panic")
	t.Logf("shell session: %d console lines, host CPU %v", len(run.Lines), run.CPU)
}

// TestShellOnTheUSBArmoryConsole: the same shell on the Mk II's console,
// UART2, and its exit status through the armory image's exit path.
func TestShellOnTheUSBArmoryConsole(t *testing.T) {
	img := needImage(t, "YOLK_IMAGE_USBARMORY", "image", "usbarmory", ".elf")
	needQEMU(t)
	run := boot(t, qemu.Config{Image: img, Target: "usbarmory", Append: []string{"shell"}, Stdin: strings.NewReader("ps\rmaps 2\rexit 4\r")})
	require.Equal(t, 4, run.ExitCode, run.Tail(30))
	b, _ := run.Find("banner")
	assert.Equal(t, "UART2", b.Value("console"))
	tr := transcript(run.Lines)
	assert.Regexp(t, `(?m)^   2    1 4160 .* child$`, tr["ps"])
	assert.Regexp(t, `^7fb00000-7ff00000 rw-p 00000000 00:00 0 \n`, tr["maps 2"])
}

// TestShellREADMETranscript types the README's session again and
// compares what the shell answers, line for line, from the first prompt
// to the exit (the harness's own lines after it carry timings).
func TestShellREADMETranscript(t *testing.T) {
	_, block, ok := strings.Cut(readme(t), "\n<!-- transcript of: make shell ")
	require.True(t, ok, "the README has no shell transcript")
	_, block, _ = strings.Cut(block, "-->\n\n")
	var want, input []string
	for _, l := range strings.Split(block, "\n") {
		l, ok := strings.CutPrefix(l, "    ")
		if !ok {
			break
		}
		if c, ok := strings.CutPrefix(l, shell.Prompt); ok {
			input = append(input, c)
		}
		if len(input) > 0 {
			want = append(want, strings.TrimRight(l, " "))
		}
		if strings.HasPrefix(l, "yolk: exit ") {
			break
		}
	}
	require.NotEmpty(t, input)

	run := boot(t, qemu.Config{Image: evkImage(t), Append: []string{"shell"}, Stdin: strings.NewReader(strings.Join(input, "\r") + "\r")})
	var got []string
	for _, l := range run.Lines {
		if strings.HasPrefix(l, shell.Prompt) || len(got) > 0 {
			got = append(got, strings.TrimRight(l, " "))
		}
		if strings.HasPrefix(l, "yolk: exit ") {
			break
		}
	}
	assert.Equal(t, want, got)
}

// TestShellThroughTheHarnessCommand is make shell without a terminal:
// yolk-qemu reads the bare word as the scenario (so it starts no echo
// server for selftest), feeds its own stdin to the console, takes the
// shell's verdict, not that of the scenario it ran, and exits with the
// status exit gave.
func TestShellThroughTheHarnessCommand(t *testing.T) {
	img := evkImage(t)
	var out, said strings.Builder
	cmd := exec.Command(harness(t), "-image", img, "-timeout", "60s", "shell")
	cmd.Stdin = strings.NewReader("run sleep duration=1ms\rexit 6\r")
	cmd.Stdout, cmd.Stderr = &out, &said
	err := cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, said.String())
	assert.Equal(t, 6, ee.ExitCode(), said.String())
	assert.Contains(t, out.String(), "yolk: params scenario=shell\n")
	assert.Contains(t, out.String(), "yolk# exit 6\r\n")
	assert.Contains(t, said.String(), "yolk-qemu: scenario shell exit, QEMU exit status 6")
	assert.NotContains(t, said.String(), "echo server")
}
