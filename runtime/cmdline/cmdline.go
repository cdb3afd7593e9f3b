// Package cmdline turns the boot command line into parameters and holds
// them to what the image and its scenario declare.
//
// Under QEMU the command line arrives through semihosting SYS_GET_CMDLINE,
// which returns the image name followed by the -append text. yolk's own
// parameters are whitespace-separated key=value words, like the kernel's;
// a bare word is a boolean flag (key=true). Values may be double-quoted to
// hold spaces.
//
// Unlike the kernel, which passes unknown parameters on to init, yolk has
// nobody to pass them to: every key must be declared by a Spec (the
// image's or the chosen scenario's) and every value must pass its Spec's
// check before anything runs (Bind), so a misspelt key or an
// out-of-range value stops the boot with one line that names the key,
// the value and what is allowed, instead of running with a default.
package cmdline

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// MaxLen bounds the command line yolk accepts; the semihosting buffer is
// this big.
const MaxLen = 4096

// Params are the parsed key=value parameters. Later keys override earlier
// ones, as on Linux.
type Params struct {
	m     map[string]string
	flags map[string]bool // keys last given as bare words
}

// Parse splits s into words and those into parameters. When skipImage is
// set, the first word is taken to be the image name that QEMU puts in front
// of the -append text and is dropped.
func Parse(s string, skipImage bool) (Params, error) {
	p := Params{m: map[string]string{}, flags: map[string]bool{}}
	return p, p.Add(s, skipImage)
}

// Add parses s on top of p: its keys override those already set. The
// image uses it to lay the emulator's command line over the one built
// into the image. On error p is unchanged.
func (p Params) Add(s string, skipImage bool) error {
	if len(s) > MaxLen {
		return fmt.Errorf("cmdline: %d bytes, longer than %d", len(s), MaxLen)
	}
	words, err := split(s)
	if err != nil {
		return err
	}
	if skipImage && len(words) > 0 && !strings.Contains(words[0], "=") {
		words = words[1:]
	}
	type param struct {
		k, v string
		flag bool
	}
	kv := make([]param, 0, len(words))
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			v = "true"
		}
		if !validKey(k) {
			return fmt.Errorf("cmdline: bad parameter name %q", k)
		}
		kv = append(kv, param{k, v, !ok})
	}
	for _, e := range kv {
		p.m[e.k] = e.v
		if e.flag {
			p.flags[e.k] = true
		} else {
			delete(p.flags, e.k)
		}
	}
	return nil
}

// Flag reports whether key was last given as a bare word (a flag, whose
// value is "true"), not as key=value. A bare word may mean something
// else to whoever knows more (scenario names one: `shell` is
// scenario=shell).
func (p Params) Flag(key string) bool { return p.flags[key] }

// Set sets key to value, as if key=value came last on the command line.
func (p Params) Set(key, value string) {
	p.m[key] = value
	delete(p.flags, key)
}

// Delete removes key.
func (p Params) Delete(key string) {
	delete(p.m, key)
	delete(p.flags, key)
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// split breaks s at unquoted whitespace. A double-quoted stretch may hold
// spaces and the escapes of a Go string literal.
func split(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
			i++
		case c == '"':
			q, err := strconv.QuotedPrefix(s[i:])
			if err != nil {
				return nil, fmt.Errorf("cmdline: unterminated or malformed quote at byte %d", i)
			}
			u, _ := strconv.Unquote(q)
			cur.WriteString(u)
			inWord = true
			i += len(q)
		case c == 0:
			// Semihosting hands back a NUL-terminated buffer.
			i = len(s)
		default:
			cur.WriteByte(c)
			inWord = true
			i++
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// Has reports whether the command line sets key.
func (p Params) Has(key string) bool {
	_, ok := p.m[key]
	return ok
}

// String returns the value of key, or def when it is not set.
func (p Params) String(key, def string) string {
	if v, ok := p.m[key]; ok {
		return v
	}
	return def
}

// Keys returns the parameter names in sorted order.
func (p Params) Keys() []string {
	keys := make([]string, 0, len(p.m))
	for k := range p.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
