package cmdline

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEmptyCommandLines(t *testing.T) {
	for _, s := range []string{"", "yolk.elf", "build/yolk-mx6ullevk.elf\x00garbage"} {
		p, err := Parse(s, true)
		require.NoError(t, err, s)
		assert.Empty(t, p.Keys(), s)
		assert.Equal(t, "dflt", p.String("scenario", "dflt"), s)
	}
}

func TestParseQEMUStyle(t *testing.T) {
	p, err := Parse("build/yolk.elf scenario=selftest host=10.0.2.2:4242 verbose timeout=3s n=0x10", true)
	require.NoError(t, err)
	assert.Equal(t, []string{"host", "n", "scenario", "timeout", "verbose"}, p.Keys())
	assert.Equal(t, "selftest", p.String("scenario", ""))
	assert.Equal(t, "10.0.2.2:4242", p.String("host", ""))
	assert.Equal(t, "true", p.String("verbose", ""), "a bare word is a flag")
	assert.Equal(t, "0x10", p.String("n", ""))
	assert.True(t, p.Has("timeout"))
	assert.False(t, p.Has("absent"))
	assert.Equal(t, "dflt", p.String("absent", "dflt"))
}

func TestLaterOverridesAndQuotes(t *testing.T) {
	p, err := Parse(`img scenario=a scenario=b msg="hello world" esc="a\"b"`, true)
	require.NoError(t, err)
	assert.Equal(t, "b", p.String("scenario", ""))
	assert.Equal(t, "hello world", p.String("msg", ""))
	assert.Equal(t, `a"b`, p.String("esc", ""))
}

func TestFirstWordKeptWhenItIsAParameter(t *testing.T) {
	p, err := Parse("scenario=x", true)
	require.NoError(t, err)
	assert.Equal(t, "x", p.String("scenario", ""))
}

func TestBadInput(t *testing.T) {
	for _, s := range []string{`img msg="open`, "img =v", "img k$y=1", strings.Repeat("a", MaxLen+1)} {
		_, err := Parse(s, true)
		assert.Error(t, err, s)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("img scenario=selftest host=10.0.2.2:1")
	f.Add(`img a="b c" d`)
	f.Add("\x00\"")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s, true)
		if err != nil {
			return
		}
		for _, k := range p.Keys() {
			require.True(t, validKey(k), "accepted bad key %q", k)
		}
	})
}

func TestAddLaysOverBuiltin(t *testing.T) {
	p, err := Parse("scenario=sleep duration=1s host=10.0.0.1:7", false)
	require.NoError(t, err)
	require.NoError(t, p.Add("build/yolk.elf duration=2s", true))
	assert.Equal(t, "sleep", p.String("scenario", ""))
	assert.Equal(t, "2s", p.String("duration", ""))
	assert.Equal(t, "10.0.0.1:7", p.String("host", ""))
	// A bad overlay changes nothing.
	require.Error(t, p.Add(`img duration=3s bad"`, true))
	assert.Equal(t, "2s", p.String("duration", ""))
	require.Error(t, p.Add(`img duration=3s =x`, true))
	assert.Equal(t, "2s", p.String("duration", ""))
}

func TestBareWordsAreFlags(t *testing.T) {
	p, err := Parse("img shell verbose=1 quiet", true)
	require.NoError(t, err)
	assert.True(t, p.Flag("shell"))
	assert.True(t, p.Flag("quiet"))
	assert.False(t, p.Flag("verbose"), "key=value is not a flag")
	assert.False(t, p.Flag("absent"))
	// A later key=value makes it a parameter again, and the reverse.
	require.NoError(t, p.Add("img shell=yes verbose", true))
	assert.False(t, p.Flag("shell"))
	assert.True(t, p.Flag("verbose"))

	p.Set("scenario", "shell")
	p.Delete("quiet")
	assert.Equal(t, "shell", p.String("scenario", ""))
	assert.False(t, p.Has("quiet"))
	assert.False(t, p.Flag("quiet"))
}
