package shell

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// MaxLine is the longest line the editor takes, in bytes.
const MaxLine = 256

// historySize is how many lines the up arrow reaches back.
const historySize = 32

// Control characters the editor acts on.
const (
	ctrlC     = 0x03
	backspace = 0x08
	tab       = 0x09
	lf        = 0x0a
	cr        = 0x0d
	ctrlU     = 0x15
	esc       = 0x1b
	del       = 0x7f
)

// errCancelled is a line given up with Ctrl-C.
var errCancelled = errors.New("cancelled")

// A lineError is a line refused whole: the shell says why and prompts
// again.
type lineError struct{ msg string }

func (e *lineError) Error() string { return e.msg }

// escState is where the editor is in an escape sequence.
type escState uint8

const (
	escNone  escState = iota
	escStart          // after ESC
	escCSI            // after ESC [, until a final byte
	escSS3            // after ESC O, one more byte
)

// editor reads lines from a serial line, echoing what it keeps.
type editor struct {
	r *bufio.Reader
	w io.Writer

	line     []byte
	long     int // bytes past MaxLine, dropped
	garbage  int // bytes that are not printable ASCII, dropped
	afterCR  bool
	esc      escState
	escParam []byte

	history []string
	browse  int // index into history while walking it; len(history) when not
}

func newEditor(r io.Reader, w io.Writer) *editor {
	return &editor{r: bufio.NewReader(r), w: w}
}

// readLine prompts and reads one line. It returns the line (without its
// end), errCancelled after Ctrl-C, a *lineError for a line refused whole,
// or the reader's error (io.EOF when the input ends; a partial line is
// then dropped).
func (e *editor) readLine(prompt string) (string, error) {
	e.reset()
	io.WriteString(e.w, prompt)
	for {
		c, err := e.r.ReadByte()
		if err != nil {
			return "", err
		}
		if done, err := e.feed(c); done {
			return e.finish(err)
		}
	}
}

func (e *editor) reset() {
	e.line, e.long, e.garbage, e.esc = e.line[:0], 0, 0, escNone
	e.browse = len(e.history)
}

// feed takes one byte; done says the line has ended (err is then
// errCancelled or nil).
func (e *editor) feed(c byte) (done bool, err error) {
	wasCR := e.afterCR
	e.afterCR = false
	if e.esc != escNone && e.escape(c) {
		return false, nil
	}
	switch {
	case c == cr:
		e.afterCR = true
		return true, nil
	case c == lf:
		// The LF of a CRLF ends nothing: its CR ended the line.
		return !wasCR, nil
	case c == ctrlC:
		io.WriteString(e.w, "^C\r\n")
		return true, errCancelled
	case c == backspace || c == del:
		e.rubout(1)
	case c == ctrlU:
		e.rubout(len(e.line))
	case c == esc:
		e.esc, e.escParam = escStart, e.escParam[:0]
	case c == tab:
		e.insert(' ')
	case c >= 0x20 && c < 0x7f:
		e.insert(c)
	default:
		e.garbage++
	}
	return false, nil
}

// finish ends the line: echoes the newline, then judges it.
func (e *editor) finish(err error) (string, error) {
	if err != nil {
		return "", err
	}
	io.WriteString(e.w, "\r\n")
	switch {
	case e.garbage > 0:
		return "", &lineError{fmt.Sprintf("line refused: %d byte(s) of it are not printable ASCII", e.garbage)}
	case e.long > 0:
		return "", &lineError{fmt.Sprintf("line refused: %d bytes, longer than %d", len(e.line)+e.long, MaxLine)}
	}
	s := strings.TrimSpace(string(e.line))
	e.remember(s)
	return s, nil
}

func (e *editor) insert(c byte) {
	if len(e.line) >= MaxLine {
		if e.long == 0 {
			io.WriteString(e.w, "\a")
		}
		e.long++
		return
	}
	e.line = append(e.line, c)
	e.w.Write([]byte{c})
}

// rubout erases the last n characters, on the screen too.
func (e *editor) rubout(n int) {
	n = min(n, len(e.line))
	e.line = e.line[:len(e.line)-n]
	io.WriteString(e.w, strings.Repeat("\b \b", n))
	if n > 0 || len(e.line) == 0 {
		e.long = 0
	}
}

// escape reads one byte of an escape sequence, and acts on the arrows
// when it ends. A byte no sequence may hold (a control character, DEL, a
// non-ASCII byte) ends the sequence unused: escape returns false and the
// byte is the editor's, so a stray ESC never eats the Enter after it.
func (e *editor) escape(c byte) bool {
	if c < 0x20 || c > 0x7e {
		e.esc = escNone
		return false
	}
	switch e.esc {
	case escStart:
		switch c {
		case '[':
			e.esc = escCSI
		case 'O':
			e.esc = escSS3
		default:
			e.esc = escNone // Alt-key: dropped with its key
		}
	case escCSI:
		// Parameter and intermediate bytes, then a final one (ECMA-48).
		if c < 0x40 {
			e.escParam = append(e.escParam[:min(len(e.escParam), 15)], c)
			return true
		}
		if len(e.escParam) == 0 {
			e.arrow(c)
		}
		e.esc = escNone
	case escSS3:
		e.arrow(c)
		e.esc = escNone
	}
	return true
}

// arrow walks the history: A is up (older), B down (newer).
func (e *editor) arrow(c byte) {
	switch c {
	case 'A':
		if e.browse == 0 {
			return
		}
		e.browse--
	case 'B':
		if e.browse == len(e.history) {
			return
		}
		e.browse++
	default:
		return
	}
	e.rubout(len(e.line))
	if e.browse < len(e.history) {
		for _, c := range []byte(e.history[e.browse]) {
			e.insert(c)
		}
	}
}

func (e *editor) remember(s string) {
	if s == "" || (len(e.history) > 0 && e.history[len(e.history)-1] == s) {
		return
	}
	if len(e.history) == historySize {
		e.history = append(e.history[:0], e.history[1:]...)
	}
	e.history = append(e.history, s)
}

// onlcr turns "\n" into "\r\n" on the way out, as a Linux tty's ONLCR
// does, for a serial terminal in raw mode. An existing "\r\n" is left as
// it is. The memory manager's messages come from its own goroutines
// (kswapd, the OOM killer), hence the lock.
type onlcr struct {
	mu     sync.Mutex
	w      io.Writer
	lastCR bool
}

func (o *onlcr) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var b []byte
	for _, c := range p {
		if c == '\n' && !o.lastCR {
			b = append(b, '\r')
		}
		b = append(b, c)
		o.lastCR = c == '\r'
	}
	if _, err := o.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}
