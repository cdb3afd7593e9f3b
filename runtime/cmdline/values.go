package cmdline

import (
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The reasons a value is refused, for errors.Is.
var (
	ErrNotInteger  = errors.New("not an integer")
	ErrOutOfRange  = errors.New("out of range")
	ErrNotDuration = errors.New("not a duration")
	ErrNotBool     = errors.New("not a boolean")
	ErrNotChoice   = errors.New("not a choice")
	ErrMalformed   = errors.New("malformed")
	ErrTooLong     = errors.New("too long")
)

// Int is an integer from Min to Max, written in decimal or in hex with
// 0x. Ranges are checked in 64 bits, so a value too big for the image's
// 32-bit int is out of range, not "not an integer".
type Int struct{ Min, Max int64 }

func (r Int) Check(s string) error {
	n, err := parseInt(s)
	if err != nil {
		return err
	}
	if n < r.Min || n > r.Max {
		return ErrOutOfRange
	}
	return nil
}

func (r Int) String() string {
	if r.Min == math.MinInt64 && r.Max == math.MaxInt64 {
		return "a 64-bit integer"
	}
	return fmt.Sprintf("an integer from %d to %d", r.Min, r.Max)
}

// parseInt reads a decimal integer, or a hex one after 0x, with an
// optional sign. A leading zero does not mean octal.
func parseInt(s string) (int64, error) {
	digits, neg := s, false
	if strings.HasPrefix(digits, "-") {
		digits, neg = digits[1:], true
	} else {
		digits = strings.TrimPrefix(digits, "+")
	}
	base := 10
	if len(digits) > 2 && (digits[:2] == "0x" || digits[:2] == "0X") {
		digits, base = digits[2:], 16
	}
	if digits == "" || strings.ContainsAny(digits, "+-_") {
		return 0, ErrNotInteger
	}
	u, err := strconv.ParseUint(digits, base, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, ErrOutOfRange
	case err != nil:
		return 0, ErrNotInteger
	case neg && u > 1<<63, !neg && u > 1<<63-1:
		return 0, ErrOutOfRange
	case neg:
		return -int64(u), nil
	}
	return int64(u), nil
}

// Duration is a Go duration (250ms, 5s, 1m30s) from Min to Max.
type Duration struct{ Min, Max time.Duration }

func (r Duration) Check(s string) error {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil && durationSyntax.MatchString(s):
		// Well formed, so ParseDuration failed on overflow.
		return ErrOutOfRange
	case err != nil:
		return ErrNotDuration
	case d < r.Min || d > r.Max:
		return ErrOutOfRange
	}
	return nil
}

// durationSyntax is what time.ParseDuration accepts, values aside.
var durationSyntax = regexp.MustCompile(`^[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$`)

func (r Duration) String() string {
	return fmt.Sprintf("a duration from %v to %v (e.g. 250ms, 5s, 2m)", r.Min, r.Max)
}

// Bool is true or false (also 1/0, t/f, yes/no, on/off); a bare word on
// the command line sets its key to true.
type Bool struct{}

func (Bool) Check(s string) error {
	switch strings.ToLower(s) {
	case "1", "t", "true", "y", "yes", "on", "0", "f", "false", "n", "no", "off":
		return nil
	}
	return ErrNotBool
}

func (Bool) String() string { return "true or false" }

func parseBool(s string) bool {
	switch strings.ToLower(s) {
	case "1", "t", "true", "y", "yes", "on":
		return true
	}
	return false
}

// Choice is one of a fixed set of words.
type Choice []string

func (c Choice) Check(s string) error {
	for _, w := range c {
		if s == w {
			return nil
		}
	}
	if near := Suggest(s, c); near != "" {
		return fmt.Errorf("%w (did you mean %s?)", ErrNotChoice, near)
	}
	return ErrNotChoice
}

func (c Choice) String() string { return "one of " + strings.Join(c, ", ") }

// HostPort is an IPv4 address and a TCP port, HOST:PORT. The image has no
// resolver, so the host must be an address.
type HostPort struct{}

func (HostPort) Check(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || net.ParseIP(host).To4() == nil || strings.Contains(host, ":") {
		return ErrMalformed
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return ErrMalformed
	}
	return nil
}

func (HostPort) String() string {
	return "HOST:PORT, an IPv4 address and a TCP port from 1 to 65535 (e.g. 10.0.2.2:7)"
}

// IPv4 is a dotted-quad IPv4 address.
type IPv4 struct{}

func (IPv4) Check(s string) error {
	if ip := net.ParseIP(s); ip == nil || ip.To4() == nil || strings.Contains(s, ":") {
		return ErrMalformed
	}
	return nil
}

func (IPv4) String() string { return "an IPv4 address" }

// MAC is a unicast 48-bit MAC address.
type MAC struct{}

func (MAC) Check(s string) error {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return ErrMalformed
	}
	if hw[0]&1 != 0 {
		return errors.New("a multicast address")
	}
	return nil
}

func (MAC) String() string { return "a unicast 48-bit MAC address (e.g. 02:79:6f:6c:6b:01)" }

// Text is any text of at most Max bytes.
type Text struct{ Max int }

func (t Text) Check(s string) error {
	if len(s) > t.Max {
		return ErrTooLong
	}
	return nil
}

func (t Text) String() string { return fmt.Sprintf("text of at most %d bytes", t.Max) }
