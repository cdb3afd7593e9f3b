// Package result is the tiny protocol the image speaks on its console so
// that a harness, or a person, can read what happened.
//
// A result line is
//
//	yolk: EVENT key=value key="quoted value" ...
//
// EVENT is one word ([a-z0-9_.-]+). Keys follow the same rule. A value is
// written bare when it is a non-empty run of printable ASCII without
// spaces, quotes, backslashes or '='; otherwise it is a Go double-quoted
// string. Field order is kept. Anything else on the console (Go panics,
// TamaGo messages, human text) is not a result line and is ignored by
// Parse, so the protocol can share the UART with everything else.
//
// Events used by the image:
//
//	banner    board, model, go version, console and ethernet
//	mem       one region of the memory map (name, start, end, size)
//	params    the effective boot parameters
//	net       whether the network came up, its address, or why not
//	ready     main's set-up is done (init_ms: from entering main)
//	scenario  the scenario about to run
//	check     one named check of a scenario, with ok=true|false
//	result    the scenario's verdict: scenario, status=pass|fail, code
//	exit      the exit code handed to the board, last line before exit
package result

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Prefix starts every result line.
const Prefix = "yolk: "

// Field is one key=value pair.
type Field struct {
	Key, Value string
}

// Line is one parsed result line.
type Line struct {
	Event  string
	Fields []Field
}

// New builds a line from an event and alternating keys and values; values
// are formatted with fmt's %v.
func New(event string, kv ...any) Line {
	l := Line{Event: event}
	for i := 0; i+1 < len(kv); i += 2 {
		l.Fields = append(l.Fields, Field{Key: fmt.Sprint(kv[i]), Value: fmt.Sprint(kv[i+1])})
	}
	if len(kv)%2 == 1 {
		l.Fields = append(l.Fields, Field{Key: fmt.Sprint(kv[len(kv)-1]), Value: ""})
	}
	return l
}

// Get returns the value of the first field named key.
func (l Line) Get(key string) (string, bool) {
	for _, f := range l.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Value returns the value of key or "" when absent.
func (l Line) Value(key string) string {
	v, _ := l.Get(key)
	return v
}

// String renders the line, prefix included, without a newline.
func (l Line) String() string {
	var b strings.Builder
	b.WriteString(Prefix)
	b.WriteString(l.Event)
	for _, f := range l.Fields {
		b.WriteByte(' ')
		b.WriteString(f.Key)
		b.WriteByte('=')
		b.WriteString(quote(f.Value))
	}
	return b.String()
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}

func isWord(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isWordByte(s[i]) {
			return false
		}
	}
	return true
}

func bare(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '=' {
			return false
		}
	}
	return true
}

func quote(s string) string {
	if bare(s) {
		return s
	}
	return strconv.Quote(s)
}

// ErrNotResult is returned by Parse for console lines that are not result
// lines at all.
var ErrNotResult = errors.New("result: not a result line")

// Parse reads one console line. A trailing "\r" or "\n" is ignored, as is
// anything before the prefix (a UART may deliver a partial line first).
// It returns ErrNotResult for lines without the prefix and a descriptive
// error for malformed result lines; it never panics.
func Parse(s string) (Line, error) {
	s = strings.TrimRight(s, "\r\n")
	i := strings.Index(s, Prefix)
	if i < 0 {
		return Line{}, ErrNotResult
	}
	s = s[i+len(Prefix):]
	event, rest, _ := strings.Cut(s, " ")
	if !isWord(event) {
		return Line{}, fmt.Errorf("result: bad event name %q", event)
	}
	l := Line{Event: event}
	for {
		rest = strings.TrimLeft(rest, " ")
		if rest == "" {
			return l, nil
		}
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			return Line{}, fmt.Errorf("result: field %q has no '='", rest)
		}
		key := rest[:eq]
		if !isWord(key) {
			return Line{}, fmt.Errorf("result: bad key %q", key)
		}
		rest = rest[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return Line{}, fmt.Errorf("result: key %s: malformed quoted value", key)
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
			if rest != "" && rest[0] != ' ' {
				return Line{}, fmt.Errorf("result: key %s: junk after quoted value", key)
			}
		} else {
			val, rest, _ = strings.Cut(rest, " ")
			if !bare(val) {
				return Line{}, fmt.Errorf("result: key %s: bad bare value %q", key, val)
			}
		}
		l.Fields = append(l.Fields, Field{Key: key, Value: val})
	}
}

// Find returns the first of lines that is an event's and whose fields
// include all the given key/value pairs.
func Find(lines []Line, event string, kv ...string) (Line, bool) {
next:
	for _, l := range lines {
		if l.Event != event {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if l.Value(kv[i]) != kv[i+1] {
				continue next
			}
		}
		return l, true
	}
	return Line{}, false
}
