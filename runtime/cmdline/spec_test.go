package cmdline

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValues(t *testing.T) {
	for _, c := range []struct {
		v    Value
		s    string
		want error // nil: allowed
	}{
		{Int{1, 10}, "1", nil},
		{Int{1, 10}, "10", nil},
		{Int{1, 10}, "0x0a", nil},
		{Int{1, 10}, "0X3", nil},
		{Int{1, 10}, "+5", nil},
		{Int{1, 10}, "010", nil}, // decimal ten, not octal eight
		{Int{1, 10}, "0", ErrOutOfRange},
		{Int{1, 10}, "11", ErrOutOfRange},
		{Int{-5, 5}, "-5", nil},
		{Int{-5, 5}, "-0x6", ErrOutOfRange},
		{Int{1, 10000000}, "99999999999", ErrOutOfRange},             // fits in 64 bits, not in the range
		{Int{1, 10000000}, "99999999999999999999999", ErrOutOfRange}, // not even in 64 bits
		{Int{-1 << 63, 1<<63 - 1}, "-9223372036854775808", nil},
		{Int{-1 << 63, 1<<63 - 1}, "9223372036854775808", ErrOutOfRange},
		{Int{1, 10}, "abc", ErrNotInteger},
		{Int{1, 10}, "", ErrNotInteger},
		{Int{1, 10}, "1.5", ErrNotInteger},
		{Int{1, 10}, "1_000", ErrNotInteger},
		{Int{1, 10}, "0x", ErrNotInteger},
		{Int{1, 10}, "--1", ErrNotInteger},
		{Int{1, 10}, "true", ErrNotInteger},
		{Duration{0, time.Hour}, "0", nil},
		{Duration{0, time.Hour}, "1h", nil},
		{Duration{0, time.Hour}, "1h0m1s", ErrOutOfRange},
		{Duration{time.Millisecond, time.Hour}, "500us", ErrOutOfRange},
		{Duration{0, time.Hour}, "-1s", ErrOutOfRange},
		{Duration{0, time.Hour}, "9999999999h", ErrOutOfRange},
		{Duration{0, time.Hour}, "5", ErrNotDuration},
		{Duration{0, time.Hour}, "soon", ErrNotDuration},
		{Duration{0, time.Hour}, "5 s", ErrNotDuration},
		{Bool{}, "true", nil},
		{Bool{}, "off", nil},
		{Bool{}, "maybe", ErrNotBool},
		{Choice{"vm", "selftest"}, "vm", nil},
		{Choice{"vm", "selftest"}, "VM", ErrNotChoice},
		{Choice{"vm", "selftest"}, "", ErrNotChoice},
		{HostPort{}, "10.0.2.2:7", nil},
		{HostPort{}, "10.0.2.2:65535", nil},
		{HostPort{}, "10.0.2.2:0", ErrMalformed},
		{HostPort{}, "10.0.2.2:65536", ErrMalformed},
		{HostPort{}, "10.0.2.2", ErrMalformed},
		{HostPort{}, "localhost:7", ErrMalformed}, // no resolver on the image
		{HostPort{}, "[::1]:7", ErrMalformed},
		{HostPort{}, "auto", ErrMalformed},
		{IPv4{}, "192.168.1.1", nil},
		{IPv4{}, "999.1.1.1", ErrMalformed},
		{IPv4{}, "::ffff:10.0.0.1", ErrMalformed},
		{MAC{}, "02:79:6f:6c:6b:01", nil},
		{MAC{}, "02:79:6f:6c:6b", ErrMalformed},
		{Text{Max: 3}, "abc", nil},
		{Text{Max: 3}, "abcd", ErrTooLong},
	} {
		err := c.v.Check(c.s)
		if c.want == nil {
			assert.NoError(t, err, "%T %q", c.v, c.s)
		} else {
			assert.ErrorIs(t, err, c.want, "%T %q", c.v, c.s)
		}
	}
	assert.ErrorContains(t, MAC{}.Check("01:00:5e:00:00:01"), "multicast")
	assert.ErrorContains(t, Choice{"selftest", "vm"}.Check("selftets"), "did you mean selftest?")
}

func TestBindAndRead(t *testing.T) {
	specs := []Spec{
		{Name: "steps", Value: Int{1, 10000000}, Default: "3000"},
		{Name: "seed", Value: Int{-1 << 63, 1<<63 - 1}, Default: "1"},
		{Name: "timeout", Value: Duration{0, time.Hour}, Default: "10s"},
		{Name: "verbose", Value: Bool{}},
		{Name: "host", Value: HostPort{}},
		{Name: "nbd", Value: HostPort{}, Required: true},
	}
	p, err := Parse("img steps=0x10 seed=-9223372036854775808 verbose nbd=10.0.2.2:10809 stray=1", true)
	require.NoError(t, err)
	a, unknown, errs := Bind(p, specs)
	require.Empty(t, errs)
	assert.Equal(t, []string{"stray"}, unknown)
	assert.Equal(t, 16, a.Int("steps"))
	assert.Equal(t, int64(-1<<63), a.Int64("seed"))
	assert.Equal(t, 10*time.Second, a.Duration("timeout"), "the default")
	assert.True(t, a.Bool("verbose"))
	assert.Equal(t, "", a.String("host"))
	assert.False(t, a.Has("host"))
	assert.True(t, a.Has("nbd"))

	assert.PanicsWithValue(t, "cmdline: parameter absent is read but not declared", func() { a.String("absent") })
	assert.Panics(t, func() { a.Int("seed") }, "a 64-bit range read as the image's 32-bit int")
	assert.Panics(t, func() { a.Duration("steps") })
	assert.Panics(t, func() { a.Bool("steps") })

	p, err = Parse("img steps=-1 timeout=soon", true)
	require.NoError(t, err)
	_, _, errs = Bind(p, specs)
	require.Len(t, errs, 3)
	assert.EqualError(t, errs[0], "steps=-1 is out of range: want an integer from 1 to 10000000")
	assert.EqualError(t, errs[1], "timeout=soon is not a duration: want a duration from 0s to 1h0m0s (e.g. 250ms, 5s, 2m)")
	assert.EqualError(t, errs[2], "nbd= is required: want HOST:PORT, an IPv4 address and a TCP port from 1 to 65535 (e.g. 10.0.2.2:7)")
	var pe *ParamError
	require.True(t, errors.As(errs[0], &pe))
	assert.Equal(t, "steps", pe.Key)
	assert.ErrorIs(t, errs[0], ErrOutOfRange)

	p, err = Parse(`img host="a b"`, true)
	require.NoError(t, err)
	_, _, errs = Bind(p, specs)
	assert.EqualError(t, errs[0], `host="a b" is malformed: want HOST:PORT, an IPv4 address and a TCP port from 1 to 65535 (e.g. 10.0.2.2:7)`)
}

func TestSpecValidate(t *testing.T) {
	assert.NoError(t, Spec{Name: "fill", Value: Int{0, 100}, Default: "60"}.Validate())
	assert.ErrorContains(t, Spec{Name: "fill", Value: Int{0, 100}, Default: "600"}.Validate(), "the default fill=600 is out of range")
	assert.Error(t, Spec{Name: "bad name", Value: Bool{}}.Validate())
	assert.Error(t, Spec{Name: "x"}.Validate())
	assert.Error(t, Spec{Name: "x", Value: Bool{}, Required: true, Default: "true"}.Validate())
}

func TestSuggest(t *testing.T) {
	known := []string{"scenario", "steps", "seed", "timeout", "host", "ip", "gw", "mac", "netmask", "min_free_kbytes"}
	for typo, want := range map[string]string{
		"scenraio":       "scenario", // transposition
		"scenari":        "scenario", // dropped letter
		"sscenario":      "scenario", // doubled letter
		"step":           "steps",
		"stpes":          "steps",
		"timout":         "timeout",
		"hots":           "host",
		"min_free_kbyte": "min_free_kbytes",
		"netmsk":         "netmask",
		"gateway":        "",
		"verbose":        "",
		"x":              "",
	} {
		assert.Equal(t, want, Suggest(typo, known), typo)
	}
	assert.Equal(t, 0, editDistance("abc", "abc"))
	assert.Equal(t, 1, editDistance("abc", "acb"))
	assert.Equal(t, 3, editDistance("", "abc"))
	assert.Equal(t, 2, editDistance("kitten", "sittin"))
}
