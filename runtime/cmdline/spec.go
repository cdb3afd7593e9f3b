package cmdline

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A Spec declares one parameter: its name, the values it takes, its
// default and what it is for. The image declares its own parameters and
// each scenario the ones it reads; Bind holds a command line to them, so
// a scenario starts only with values it can use, and reads them through
// Args without error paths of its own.
type Spec struct {
	Name string
	// Value checks a value and says which values are allowed.
	Value Value
	// Default is the value when the command line does not set the key,
	// written as on the command line; "" means there is none (the reader
	// gets the zero value and can tell with Args.Has).
	Default string
	// Required parameters must be set on the command line.
	Required bool
	// Help says what the parameter does, in a phrase.
	Help string
	// Service names the host service whose address the QEMU harness
	// passes as this parameter when the command line does not set it
	// ("echo", "nbd"). The image itself knows nothing of services.
	Service string
}

// Validate reports a Spec that cannot work: a name that is not a valid
// key, no Value, or a default its own Value refuses.
func (s Spec) Validate() error {
	switch {
	case !validKey(s.Name):
		return fmt.Errorf("cmdline: %q is not a parameter name", s.Name)
	case s.Value == nil:
		return fmt.Errorf("cmdline: parameter %s has no Value", s.Name)
	case s.Required && s.Default != "":
		return fmt.Errorf("cmdline: parameter %s is required and has a default", s.Name)
	case s.Default != "":
		if err := s.Value.Check(s.Default); err != nil {
			return fmt.Errorf("cmdline: the default %s=%s is %v: want %s", s.Name, s.Default, err, s.Value)
		}
	}
	return nil
}

// A Value is a kind of parameter value: it checks a value written on the
// command line and describes the values it allows.
type Value interface {
	// Check returns nil for an allowed value, else a short reason
	// ("not an integer", "out of range").
	Check(s string) error
	// String describes the allowed values ("an integer from 1 to 100").
	String() string
}

// A ParamError is a parameter the command line sets to a value its Spec
// does not allow, or leaves unset though it is required. Its text names
// the key, the value and what is allowed, on one line.
type ParamError struct {
	Key, Value string
	Missing    bool
	Reason     error
	Allowed    string
}

func (e *ParamError) Error() string {
	if e.Missing {
		return fmt.Sprintf("%s= is required: want %s", e.Key, e.Allowed)
	}
	return fmt.Sprintf("%s is %v: want %s", Word(e.Key, e.Value), e.Reason, e.Allowed)
}

func (e *ParamError) Unwrap() error { return e.Reason }

// Args are parameters held to their Specs: every key set on the command
// line has a Spec, every value passed its check, and an unset key reads
// as its default. Reading a key no Spec declares is a programming error
// and panics.
type Args struct {
	p     Params
	specs map[string]Spec
}

// Bind checks p against specs. It returns the Args and, separately, the
// keys of p that no spec declares (sorted) and the values that fail their
// check or required keys that are unset, in the specs' order. The Args
// are usable only when both are empty.
func Bind(p Params, specs []Spec) (a Args, unknown []string, errs []error) {
	a = Args{p: p, specs: make(map[string]Spec, len(specs))}
	for _, s := range specs {
		if _, dup := a.specs[s.Name]; dup {
			panic("cmdline: parameter " + s.Name + " declared twice")
		}
		a.specs[s.Name] = s
	}
	for _, k := range p.Keys() {
		if _, ok := a.specs[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	for _, s := range specs {
		v, set := p.m[s.Name]
		switch {
		case !set && s.Required:
			errs = append(errs, &ParamError{Key: s.Name, Missing: true, Allowed: s.Value.String()})
		case set:
			if err := s.Value.Check(v); err != nil {
				errs = append(errs, &ParamError{Key: s.Name, Value: v, Reason: err, Allowed: s.Value.String()})
			}
		}
	}
	return a, unknown, errs
}

func (a Args) spec(key string) Spec {
	s, ok := a.specs[key]
	if !ok {
		panic("cmdline: parameter " + key + " is read but not declared")
	}
	return s
}

// Has reports whether the command line sets key.
func (a Args) Has(key string) bool {
	a.spec(key)
	_, ok := a.p.m[key]
	return ok
}

// String returns key's value, or its default.
func (a Args) String(key string) string {
	s := a.spec(key)
	if v, ok := a.p.m[key]; ok {
		return v
	}
	return s.Default
}

// Int64 returns key's value as an integer; its Value must be an Int.
func (a Args) Int64(key string) int64 {
	v := a.String(key)
	if v == "" {
		return 0
	}
	if _, ok := a.spec(key).Value.(Int); !ok {
		panic("cmdline: parameter " + key + " is not an integer")
	}
	n, err := parseInt(v)
	if err != nil {
		panic(fmt.Sprintf("cmdline: %s=%s passed its check but does not parse: %v", key, v, err))
	}
	return n
}

// Int returns key's value as an int. Its Int range must fit in 32 bits,
// the size of int on the image.
func (a Args) Int(key string) int {
	if r, ok := a.spec(key).Value.(Int); ok && (r.Min < -1<<31 || r.Max > 1<<31-1) {
		panic("cmdline: parameter " + key + " has a range wider than int on the image; read it with Int64")
	}
	return int(a.Int64(key))
}

// Duration returns key's value as a duration; its Value must be a
// Duration.
func (a Args) Duration(key string) time.Duration {
	v := a.String(key)
	if v == "" {
		return 0
	}
	if _, ok := a.spec(key).Value.(Duration); !ok {
		panic("cmdline: parameter " + key + " is not a duration")
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		panic(fmt.Sprintf("cmdline: %s=%s passed its check but does not parse: %v", key, v, err))
	}
	return d
}

// Bool returns key's value as a boolean; its Value must be a Bool.
func (a Args) Bool(key string) bool {
	v := a.String(key)
	if v == "" {
		return false
	}
	if _, ok := a.spec(key).Value.(Bool); !ok {
		panic("cmdline: parameter " + key + " is not a boolean")
	}
	return parseBool(v)
}

// Set returns the keys the command line sets, sorted.
func (a Args) Set() []string { return a.p.Keys() }

// Specs returns the declared parameters, sorted by name.
func (a Args) Specs() []Spec {
	out := make([]Spec, 0, len(a.specs))
	for _, s := range a.specs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Suggest returns the candidate closest to s in spelling, if one is close
// enough to be a likely typo (a transposition, a dropped, doubled or
// wrong letter or two), else "".
func Suggest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		limit := 2
		if len(c) <= 4 {
			limit = 1
		}
		if d := editDistance(s, c); d <= limit && d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and transpositions of adjacent bytes.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// Word writes a parameter as it could be typed back on the command line:
// key=value, the value quoted when it is empty or holds blanks or quotes.
func Word(key, value string) string {
	if value == "" || strings.ContainsAny(value, " \t\n\r\"") {
		return key + "=" + strconv.Quote(value)
	}
	return key + "=" + value
}
