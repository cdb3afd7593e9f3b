package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu"
	"yolk/runtime/cmdline"
	"yolk/runtime/result"
	"yolk/runtime/scenario"
	_ "yolk/scenarios"
)

// readme returns the README's text.
func readme(t *testing.T) string {
	t.Helper()
	root, err := qemu.ModuleRoot()
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	return string(b)
}

// An example is a block of output in the README, after a comment that
// names the command that prints it:
//
//	<!-- output of: make qemu APPEND='scenario=vm' -->
var exampleRE = regexp.MustCompile("(?m)^<!-- output of: make qemu(?: APPEND='([^']*)')? -->\n\n((?:    .*\n|\n)+)")

// Every example of the README's is what the command prints today: each
// of its lines is printed, in its order, ports and timings aside. A line
// of "..." stands for lines left out. The example of plain `make qemu`
// (the tour, a minute long) is held to TestMakeQEMU's own run instead of
// a second one.
func TestREADMEExamples(t *testing.T) {
	t.Parallel() // a long run: two QEMUs at a time, one per core (see TestMain)
	img := evkImage(t)
	examples := exampleRE.FindAllStringSubmatch(readme(t), -1)
	require.GreaterOrEqual(t, len(examples), 4, "the README's examples are marked")
	for _, ex := range examples {
		params, block := ex[1], ex[2]
		if params == "" {
			continue
		}
		t.Run("make qemu "+params, func(t *testing.T) {
			code, stdout, stderr := runHarness(t, append([]string{"-image", img}, strings.Fields(params)...)...)
			matchExample(t, block, stdout+stderr, fmt.Sprintf("make qemu APPEND='%s', which printed (status %d)", params, code))
		})
	}
}

// readmeExample returns the README's example of make qemu with params.
func readmeExample(t *testing.T, params string) string {
	t.Helper()
	for _, ex := range exampleRE.FindAllStringSubmatch(readme(t), -1) {
		if ex[1] == params {
			return ex[2]
		}
	}
	t.Fatalf("the README has no example of make qemu APPEND='%s'", params)
	return ""
}

// matchExample holds output to an example block: each of the block's
// lines is printed, in its order; "..." stands for lines left out.
func matchExample(t *testing.T, block, output, what string) {
	t.Helper()
	out := strings.Split(output, "\n")
	var want []string
	for _, l := range strings.Split(strings.TrimRight(block, "\n"), "\n") {
		if l = strings.TrimPrefix(l, "    "); l != "" && l != "..." {
			want = append(want, l)
		}
	}
	i := 0
	for _, w := range want {
		for i < len(out) && !sameLine(w, out[i]) {
			i++
		}
		if !assert.Less(t, i, len(out), "the README's line\n\t%s\nis not printed (in this order) by %s:\n%s", w, what, output) {
			return
		}
		i++
	}
}

// sameLine compares a README line with a console line. Result lines are
// compared field by field, with the fields that vary from run to run
// (ports, timings) taken as they come; the harness's lines with their
// durations and ports as wildcards, and "..." as anything; other text
// (/proc files) exactly, but for trailing blanks.
func sameLine(readme, got string) bool {
	got = strings.TrimRight(got, " \r")
	readme = strings.TrimRight(readme, " ")
	switch {
	case strings.HasPrefix(readme, result.Prefix):
		w, err1 := result.Parse(readme)
		g, err2 := result.Parse(got)
		if err1 != nil || err2 != nil || w.Event != g.Event || len(w.Fields) != len(g.Fields) {
			return false
		}
		for k, f := range w.Fields {
			h := g.Fields[k]
			if f.Key != h.Key || (f.Value != h.Value && !varies(f.Key, f.Value, h.Value)) {
				return false
			}
		}
		return true
	case strings.HasPrefix(readme, "yolk-qemu: "):
		return harnessLine(readme).MatchString(got)
	}
	return readme == got
}

var (
	guestPort = regexp.MustCompile(`^10\.0\.2\.2:\d+$`)
	number    = regexp.MustCompile(`^\d+$`)
)

// varies reports whether a result field may differ between runs: a port
// the harness picked, or a timing.
func varies(key, want, got string) bool {
	switch {
	case guestPort.MatchString(want):
		return guestPort.MatchString(got)
	case key == "rtt_us" || key == "init_ms" || key == "ms" || strings.HasSuffix(key, "_ms"):
		return number.MatchString(got)
	}
	return false
}

// harnessLine turns a README line of the harness's into a pattern:
// durations and ports match any, "..." matches anything, and the image
// in build/ may be wherever the test found it.
func harnessLine(readme string) *regexp.Regexp {
	p := regexp.QuoteMeta(readme)
	p = strings.ReplaceAll(p, `\.\.\.`, `.*`)
	p = strings.ReplaceAll(p, ` build/`, ` \S*/`)
	p = regexp.MustCompile(`\d+(\\\.\d+)?(ms|s|µs)\b`).ReplaceAllString(p, `[0-9.]+(ms|s|µs|m[0-9.]+s)`)
	p = regexp.MustCompile(`:\d{4,5}\b`).ReplaceAllString(p, `:[0-9]+`)
	return regexp.MustCompile("^" + p + "$")
}

// The README's table of boot parameters is the declarations: every row
// is a parameter the image or a scenario declares, with its default,
// values and help, and every declared parameter has its row.
func TestREADMEParameterTable(t *testing.T) {
	rows := map[string]bool{}
	_, table, ok := strings.Cut(readme(t), "\n| parameter | taken by | default | values | what it does |\n| --- | --- | --- | --- | --- |\n")
	require.True(t, ok, "the README has no table of boot parameters")
	table, _, _ = strings.Cut(table, "\n\n")
	for _, l := range strings.Split(table, "\n") {
		rows[l] = true
	}
	row := func(takenBy string, s cmdline.Spec) string {
		def := "`" + s.Default + "`"
		switch {
		case s.Required:
			def = "required"
		case s.Default == "":
			def = "none"
		}
		return "| `" + s.Name + "` | " + takenBy + " | " + def + " | " + s.Value.String() + " | " + s.Help + " |"
	}
	want := map[string]bool{}
	for _, s := range scenario.ImageParams() {
		want[row("every scenario", s)] = true
	}
	for _, name := range scenario.Names() {
		sc, _ := scenario.Lookup(name)
		for _, s := range sc.Params {
			want[row(name, s)] = true
		}
	}
	for r := range want {
		assert.True(t, rows[r], "the README has no row\n%s", r)
	}
	for r := range rows {
		assert.True(t, want[r], "the README's row\n%s\nis no parameter's declaration", r)
	}
}
