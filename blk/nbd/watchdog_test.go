// These tests start NBD servers on the host (qemu/nbdserver), which does
// not build for the image.

//go:build !tamago

package nbd

// The watchdog of the real-server tests. The client bounds each request
// (RequestTimeout) and each reconnect period (ReconnectTimeout), but a
// bug can still keep a test waiting for minutes: every call waits out
// those bounds in turn against a server the bug has wedged or killed
// (nbdkit aborts on some of a confused client's resets), or a call never
// ends at all. So each client a test dials through dialServer has a
// watchdog, which closes it, ending its calls in flight with ErrClosed,
// when
//
//   - the client counts a protocol error: real servers send well-formed
//     replies, so the client misread the stream (replies matched to the
//     wrong request, say), and the test fails;
//   - the client is not done stepLimit after Dial: the test fails, naming
//     the calls and requests that were still in flight;
//   - or its test has failed and the client's calls have sent no request
//     for stallGrace: the failure is what the test reports, and waiting
//     out timeouts behind it adds nothing.
//
// The test goroutine reports (in a cleanup) what the watchdog did.

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"yolk/blk"
	"yolk/qemu/nbdserver"
)

const (
	// stepLimit bounds one client's life in a real-server test, from Dial
	// to Close. The longest, a round trips client under the race
	// detector with four servers tested at once on two cores, lives
	// about 5s, and 10s with other packages' race tests running beside
	// it as in make test: a client not done after 30s is stuck, not
	// slow.
	stepLimit = 30 * time.Second
	// stallGrace: once its test has failed, a client whose calls have
	// sent no request for this long is closed.
	stallGrace = time.Second
	// closeGrace bounds the wait for the calls in flight to end once the
	// watchdog has closed the client; it takes milliseconds.
	closeGrace = 10 * time.Second
	// watchTick is how often a watchdog looks at its test: testing
	// gives no notice of a failure, so t.Failed is polled.
	watchTick = 100 * time.Millisecond
)

// watchdogs maps each watched client to its watchdog (closedByWatchdog).
var watchdogs sync.Map // *Client → *watchdog

// stuckOn holds the servers that a client got stuck on: the name of the
// test whose client it was, by *nbdserver.Server. dialServer refuses to
// dial them again, since the next client would most likely wait out its
// stepLimit too.
var stuckOn sync.Map

type watchdog struct {
	t      *testing.T
	c      *Client
	s      *nbdserver.Server
	dialAt string // file:line of the test's dialServer call
	closed atomic.Bool
	exited chan struct{}

	// Set by the goroutine before exited is closed.
	fail bool   // what it saw fails the test
	what string // what it closed the client on, and why
}

// watch starts c's watchdog. Call it before registering the cleanup that
// closes c: the watchdog's own cleanup must run after that one.
func watch(t *testing.T, s *nbdserver.Server, c *Client, dialAt string) {
	w := &watchdog{t: t, c: c, s: s, dialAt: dialAt, exited: make(chan struct{})}
	watchdogs.Store(c, w)
	t.Cleanup(w.report)
	go w.run(t.Failed())
}

// run watches the client until it is closed and done (c.drained), or
// closes it itself.
func (w *watchdog) run(failedBefore bool) {
	defer close(w.exited)
	tick := time.NewTicker(watchTick)
	defer tick.Stop()
	if !w.watch(tick.C, failedBefore) {
		return
	}
	// Closed: the calls in flight end at once, unless the client lost
	// one's completion, which nothing can end. Then the test would hang
	// on it, or on Close in its cleanup, until go test's -timeout: stop
	// the test binary now, with every goroutine's stack as -timeout
	// would print them.
	giveUp := time.Now().Add(closeGrace)
	for callsInFlight(w.c) > 0 {
		if time.Now().After(giveUp) {
			debug.SetTraceback("all")
			panic(fmt.Sprintf("%s: watchdog: %s; %v later, %s: they will never end",
				w.t.Name(), w.what, closeGrace, inFlight(w.c)))
		}
		<-tick.C
	}
}

// watch returns false once the client is closed and done, or true once it
// has closed it.
func (w *watchdog) watch(tick <-chan time.Time, failedBefore bool) (closed bool) {
	limit := time.NewTimer(stepLimit)
	defer limit.Stop()
	stalling := false
	var sent uint64
	var lastSend time.Time
	for {
		select {
		case <-w.c.drained:
			return false
		case <-limit.C:
			w.close(true, fmt.Sprintf("was not done %v after Dial", stepLimit))
			stuckOn.Store(w.s, w.t.Name())
			return true
		case now := <-tick:
			if n := w.c.Stats().ProtocolErrors; n > 0 {
				w.close(true, fmt.Sprintf("counted %s: it misread the replies of a real server", plural(int(n), "protocol error")))
				return true
			}
			if !stalling {
				// A client dialled after its test had failed is
				// not closed for that failure, which is not
				// about it.
				if failedBefore || !w.t.Failed() {
					continue
				}
				stalling, sent, lastSend = true, requestsSent(w.c), now
			}
			if n := requestsSent(w.c); n != sent {
				sent, lastSend = n, now
			} else if callsInFlight(w.c) > 0 && now.Sub(lastSend) >= stallGrace {
				w.close(false, fmt.Sprintf("sent no request for %v after the test failed", stallGrace))
				return true
			}
		}
	}
}

// close closes the client on the test's behalf, recording what was in
// flight first; fail says that what it saw fails the test.
func (w *watchdog) close(fail bool, why string) {
	w.fail = fail
	w.what = fmt.Sprintf("the client dialled at %s %s; closed it to end %s", w.dialAt, why, inFlight(w.c))
	w.closed.Store(true) // before any call can fail for it
	w.c.abort()
}

// report runs on the test goroutine once the client is closed: it fails
// the test for what the watchdog saw, or logs what it ended, which
// explains the ErrClosed of calls the test goes on making.
func (w *watchdog) report() {
	<-w.exited
	watchdogs.Delete(w.c)
	switch {
	case w.fail:
		w.t.Errorf("watchdog: %s", w.what)
	case w.what != "":
		w.t.Logf("watchdog: %s", w.what)
	}
}

// closedByWatchdog reports whether c's watchdog closed it.
func closedByWatchdog(c *Client) bool {
	w, ok := watchdogs.Load(c)
	return ok && w.(*watchdog).closed.Load()
}

// callOK reports the error of a call on a client from dialServer, except
// the ErrClosed of a call its watchdog ended: the watchdog reports why it
// closed the client, and the test has failed already or fails in its
// cleanup. It returns whether err is nil.
func callOK(t *testing.T, c *Client, err error) bool {
	t.Helper()
	if err == nil {
		return true
	}
	if !errors.Is(err, blk.ErrClosed) || !closedByWatchdog(c) {
		t.Errorf("%v", err) // a *blk.RequestError: it names the call
	}
	return false
}

// callerLine is the file:line of the caller's caller, skip frames up.
func callerLine(skip int) string {
	_, file, line, ok := runtime.Caller(skip + 1)
	if !ok {
		return "an unknown line"
	}
	return fmt.Sprintf("%s:%d", file[strings.LastIndexByte(file, '/')+1:], line)
}

// abort ends every call in flight on c, and every later one, with
// ErrClosed, without waiting for them as Close does: each slot is marked
// closed, which wakes the calls waiting for a connection, its reconnecting
// is stopped, and its connection closed, so that its reader fails and
// completes the requests registered on it. Close still works afterwards.
func (c *Client) abort() {
	for _, cn := range c.conns {
		cn.mu.Lock()
		if cn.state != stateClosed {
			cn.setState(stateClosed)
		}
		nc := cn.nc
		cn.mu.Unlock()
		cn.cancel()
		if nc != nil {
			nc.Close()
		}
	}
}

// requestsSent counts the requests c sent, resends included.
func requestsSent(c *Client) uint64 {
	st := c.Stats()
	n := st.Resent
	for _, k := range st.Requests {
		n += k
	}
	return n
}

// callsInFlight counts the calls on c that have not returned.
func callsInFlight(c *Client) int64 {
	n := c.active.Load()
	if n < 0 { // Close was called
		n += closedBias
	}
	return n
}

// inFlight describes c's calls in flight: how many, each connection's
// state, and the requests registered on it (the others wait for a
// connection), at most a few per connection.
func inFlight(c *Client) string {
	const most = 4
	var b strings.Builder
	n := callsInFlight(c)
	fmt.Fprintf(&b, "%s in flight", plural(int(n), "call"))
	for _, cn := range c.conns {
		cn.mu.Lock()
		fmt.Fprintf(&b, "; connection %d %s", cn.id, stateNames[cn.state])
		if cn.state == stateDown && cn.lastErr != nil {
			fmt.Fprintf(&b, " (reconnecting failed: %v)", cn.lastErr)
		}
		reqs := make([]*request, 0, len(cn.reqs))
		for _, r := range cn.reqs {
			reqs = append(reqs, r)
		}
		slices.SortFunc(reqs, func(a, b *request) int { return cmp.Compare(a.cookie, b.cookie) })
		if len(reqs) > 0 {
			fmt.Fprintf(&b, ", %s without a reply: ", plural(len(reqs), "request"))
		}
		for i, r := range reqs {
			if i > 0 {
				b.WriteString(", ")
			}
			if i == most {
				fmt.Fprintf(&b, "and %d more", len(reqs)-most)
				break
			}
			if r.cmd == cmdFlush {
				fmt.Fprintf(&b, "flush (cookie %d)", r.cookie)
			} else {
				fmt.Fprintf(&b, "%s of %d bytes at %d (cookie %d)", r.op, r.length, r.off, r.cookie)
			}
		}
		cn.mu.Unlock()
	}
	return b.String()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

var stateNames = [...]string{
	stateUp:         "up",
	stateConnecting: "connecting",
	stateDown:       "down",
	stateClosed:     "closed",
}
