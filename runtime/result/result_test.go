package result

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRoundTrip(t *testing.T) {
	l := New("check", "name", "echo", "ok", true, "err", `dial tcp 10.0.2.2:1: connection "refused"`, "empty", "")
	s := l.String()
	assert.Equal(t, `yolk: check name=echo ok=true err="dial tcp 10.0.2.2:1: connection \"refused\"" empty=""`, s)
	got, err := Parse(s + "\r\n")
	require.NoError(t, err)
	assert.Equal(t, l, got)
	assert.Equal(t, "true", got.Value("ok"))
	_, ok := got.Get("missing")
	assert.False(t, ok)
}

func TestNotResultLines(t *testing.T) {
	for _, s := range []string{"", "panic: runtime error", "yolk:banner", "  yolk:"} {
		_, err := Parse(s)
		assert.ErrorIs(t, err, ErrNotResult, s)
	}
}

func TestGarbageBeforePrefixIsSkipped(t *testing.T) {
	l, err := Parse("\x1b[0m?yolk: exit code=3")
	require.NoError(t, err)
	assert.Equal(t, "exit", l.Event)
	assert.Equal(t, "3", l.Value("code"))
}

func TestMalformed(t *testing.T) {
	for _, s := range []string{
		"yolk: ",
		"yolk: Bad!",
		"yolk: ev key",
		"yolk: ev =v",
		`yolk: ev k="open`,
		`yolk: ev k="a"b`,
		`yolk: ev k=a"b`,
		"yolk: ev k=\x01",
	} {
		_, err := Parse(s)
		require.Error(t, err, s)
		assert.False(t, errors.Is(err, ErrNotResult), s)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`yolk: check name=x ok=false err="a b"`)
	f.Add("yolk: mem name=pool start=0x88000000")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		if err != nil {
			return
		}
		// Whatever parses re-renders to something that parses to the same.
		again, err := Parse(l.String())
		require.NoError(t, err)
		require.Equal(t, l, again)
	})
}

// BenchmarkParse: one op is a Parse of one result line (an event and five
// fields; the harness parses every line the image prints, and the image's
// console protocol runs on its only core between checks: keep it cheap).
// Reports ns/line; B/op and allocs/op are per line.
func BenchmarkParse(b *testing.B) {
	s := New("check", "name", "echo", "ok", true, "host", "10.0.2.2:40000", "rtt_us", 37788, "err", "a b c").String()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/line")
	b.ReportMetric(0, "ns/op") // the same figure
}

// BenchmarkFormat: one op is the String of one result line (an event and
// four fields), as the image prints it. Reports ns/line and bytes/line (the
// line's length); B/op and allocs/op are per line.
func BenchmarkFormat(b *testing.B) {
	l := New("mem", "name", "pool", "start", "0x88000000", "end", "0x9fc00000", "size", "380MiB")
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n += len(l.String())
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/line")
	b.ReportMetric(float64(n)/float64(b.N), "bytes/line")
	b.ReportMetric(0, "ns/op") // the same figure as ns/line
}
