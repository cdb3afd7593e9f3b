package qemu

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FloodServer sends unrelated traffic to the guest, for the receive-path
// scenarios: while a scenario swaps to NBD, traffic it never asked to read
// keeps arriving, and the receive path must drop it rather than let it
// starve the NBD connection of receive buffers.
//
// It serves TCP and UDP on one loopback port, and floods only on request,
// bounded in rate (MaxRate) and time (MaxSecs):
//
//   - TCP: a connection whose first line is "flood RATE SECS\n" gets
//     pseudo-random bytes at RATE bytes per second for SECS seconds, and is
//     then closed. The guest never reads these sockets, so their data sits
//     in its receive queues; writes that block stop at SECS anyway. Any
//     other first line (or none within two minutes: a client may connect
//     early and ask later) closes the connection. At most 16 connections
//     are served at once; more are closed on accept.
//   - UDP: a datagram "flood RATE SECS SIZE" starts a stream of SIZE-byte
//     datagrams (64 to 1472) back to its sender at RATE bytes per second
//     for SECS seconds: traffic for a port the guest has bound. A new
//     request from the same address replaces that address's stream; at
//     most 8 streams run at once and requests beyond that are ignored. A
//     datagram "stop" ends its sender's stream at once (a guest that
//     closes its socket is not heard: the stream would run on to SECS);
//     any other datagram is ignored.
//
// RATE is clamped to [1, MaxRate] and SECS to [1, MaxSecs]. Close stops
// every flood and waits for them.
type FloodServer struct {
	// MaxRate bounds a flood's rate in bytes per second (default 4 MiB/s).
	MaxRate int
	// MaxSecs bounds a flood's duration in seconds (default 120).
	MaxSecs int

	tcp  *net.TCPListener
	udp  *net.UDPConn
	port int
	done chan struct{} // closed by Close

	mu      sync.Mutex
	closed  bool
	conns   map[net.Conn]struct{}
	streams map[netip.AddrPort]*floodStream
	wg      sync.WaitGroup

	tcpConns, tcpBytes                 atomic.Int64
	udpStreams, udpDatagrams, udpBytes atomic.Int64
}

// FloodStats counts what a FloodServer has sent.
type FloodStats struct {
	TCPConns     int64 // TCP floods started (valid requests)
	TCPBytes     int64 // bytes written to TCP connections
	UDPStreams   int64 // UDP streams started (replacements included)
	UDPDatagrams int64 // datagrams sent
	UDPBytes     int64 // bytes sent in datagrams
}

const (
	// DefaultFloodRate is FloodServer.MaxRate's default, in bytes per second.
	DefaultFloodRate = 4 << 20
	// DefaultFloodSecs is FloodServer.MaxSecs's default.
	DefaultFloodSecs = 120

	floodMaxConns     = 16              // concurrent TCP connections
	floodMaxStreams   = 8               // concurrent UDP streams
	floodChunk        = 4096            // largest TCP write
	floodLineMax      = 128             // longest request line
	floodRequestWait  = 2 * time.Minute // for the TCP request line
	floodMinDatagram  = 64
	floodMaxDatagram  = 1472 // an Ethernet frame's worth of UDP payload
	floodBindAttempts = 8
)

type floodStream struct {
	stop chan struct{} // closed to replace the stream
	done chan struct{} // closed when its goroutine has returned
}

// Start listens on one port of 127.0.0.1, for TCP and UDP both, and
// returns flood=10.0.2.2:PORT.
func (f *FloodServer) Start() ([]string, error) {
	if f.done != nil {
		return nil, errors.New("qemu: flood server already started")
	}
	var err error
	for range floodBindAttempts {
		var ln net.Listener
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		var pc *net.UDPConn
		pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			ln.Close()
			continue // the UDP port is taken: try another
		}
		f.tcp, f.udp, f.port = ln.(*net.TCPListener), pc, port
		break
	}
	if f.tcp == nil {
		return nil, fmt.Errorf("qemu: flood server: no port free for both TCP and UDP: %w", err)
	}
	f.done = make(chan struct{})
	f.conns = map[net.Conn]struct{}{}
	f.streams = map[netip.AddrPort]*floodStream{}
	f.wg.Add(2)
	go f.acceptTCP()
	go f.readUDP()
	return []string{"flood=" + net.JoinHostPort(GuestHostAddr, strconv.Itoa(f.port))}, nil
}

// Port is the port the server listens on, for TCP and UDP.
func (f *FloodServer) Port() int { return f.port }

// Addr is the loopback address the server listens on, for TCP and UDP.
func (f *FloodServer) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(f.port))
}

// Stats returns what the server has sent so far.
func (f *FloodServer) Stats() FloodStats {
	return FloodStats{
		TCPConns:     f.tcpConns.Load(),
		TCPBytes:     f.tcpBytes.Load(),
		UDPStreams:   f.udpStreams.Load(),
		UDPDatagrams: f.udpDatagrams.Load(),
		UDPBytes:     f.udpBytes.Load(),
	}
}

// Close stops the server and every flood, and waits for its goroutines.
func (f *FloodServer) Close() error {
	if f.done == nil {
		return nil
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	close(f.done)
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	err := f.tcp.Close()
	if uerr := f.udp.Close(); err == nil {
		err = uerr
	}
	f.wg.Wait()
	return err
}

func (f *FloodServer) limits() (maxRate, maxSecs int64) {
	maxRate, maxSecs = int64(f.MaxRate), int64(f.MaxSecs)
	if maxRate <= 0 {
		maxRate = DefaultFloodRate
	}
	if maxSecs <= 0 {
		maxSecs = DefaultFloodSecs
	}
	return maxRate, maxSecs
}

func (f *FloodServer) acceptTCP() {
	defer f.wg.Done()
	for {
		c, err := f.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (out of descriptors): back off, unless
			// the server is closing.
			if !sleepUntil(time.Now().Add(10*time.Millisecond), f.done, nil) {
				return
			}
			continue
		}
		f.mu.Lock()
		if f.closed || len(f.conns) >= floodMaxConns {
			f.mu.Unlock()
			c.Close()
			continue
		}
		f.conns[c] = struct{}{}
		f.wg.Add(1)
		f.mu.Unlock()
		go f.floodTCP(c)
	}
}

// floodTCP serves one connection: a request line, then the flood.
func (f *FloodServer) floodTCP(c net.Conn) {
	defer f.wg.Done()
	defer func() {
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
		c.Close()
	}()
	c.SetReadDeadline(time.Now().Add(floodRequestWait))
	line, err := bufio.NewReaderSize(io.LimitReader(c, floodLineMax), floodLineMax).ReadString('\n')
	if err != nil {
		return // no complete line: EOF, too long, deadline or Close
	}
	maxRate, maxSecs := f.limits()
	req, ok := parseFlood(line, false, maxRate, maxSecs)
	if !ok {
		return
	}
	f.tcpConns.Add(1)

	start := time.Now()
	end := start.Add(time.Duration(req.secs) * time.Second)
	// A guest that never reads fills its window and blocks the write: the
	// deadline ends it at SECS, and Close ends it by closing c.
	c.SetWriteDeadline(end)
	chunk := min(max(req.rate/50, 1), floodChunk) // ~50 writes a second at low rates
	buf := make([]byte, chunk)
	rng := newFloodRand()
	var sent int64
	for {
		if !sleepUntil(paced(start, sent, req.rate, end), f.done, nil) || !time.Now().Before(end) {
			return
		}
		rng.Read(buf)
		n, err := c.Write(buf)
		sent += int64(n)
		f.tcpBytes.Add(int64(n))
		if err != nil {
			return
		}
	}
}

func (f *FloodServer) readUDP() {
	defer f.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := f.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if !sleepUntil(time.Now().Add(10*time.Millisecond), f.done, nil) {
				return
			}
			continue
		}
		if strings.TrimSpace(string(buf[:n])) == "stop" {
			f.stopStream(from)
			continue
		}
		maxRate, maxSecs := f.limits()
		req, ok := parseFlood(string(buf[:n]), true, maxRate, maxSecs)
		if !ok {
			continue
		}
		f.startStream(from, req)
	}
}

// startStream starts a UDP stream to addr, replacing addr's running one.
// Only readUDP calls it, so streams are added by one goroutine.
func (f *FloodServer) startStream(to netip.AddrPort, req floodRequest) {
	f.mu.Lock()
	old := f.streams[to]
	switch {
	case f.closed:
		f.mu.Unlock()
		return
	case old != nil:
		delete(f.streams, to)
		close(old.stop)
	case len(f.streams) >= floodMaxStreams:
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	if old != nil {
		<-old.done // at most one send away: the count of streams stays bounded
	}

	s := &floodStream{stop: make(chan struct{}), done: make(chan struct{})}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.streams[to] = s
	f.wg.Add(1)
	f.mu.Unlock()
	f.udpStreams.Add(1)
	go f.floodUDP(to, req, s)
}

// stopStream ends addr's stream, if it has one, and waits for it.
func (f *FloodServer) stopStream(to netip.AddrPort) {
	f.mu.Lock()
	s := f.streams[to]
	if s != nil {
		delete(f.streams, to)
		close(s.stop)
	}
	f.mu.Unlock()
	if s != nil {
		<-s.done
	}
}

func (f *FloodServer) floodUDP(to netip.AddrPort, req floodRequest, s *floodStream) {
	defer f.wg.Done()
	defer close(s.done)
	defer func() {
		f.mu.Lock()
		if f.streams[to] == s {
			delete(f.streams, to)
		}
		f.mu.Unlock()
	}()
	start := time.Now()
	end := start.Add(time.Duration(req.secs) * time.Second)
	buf := make([]byte, req.size)
	rng := newFloodRand()
	var sent int64
	for {
		if !sleepUntil(paced(start, sent, req.rate, end), f.done, s.stop) || !time.Now().Before(end) {
			return
		}
		rng.Read(buf)
		n, err := f.udp.WriteToUDPAddrPort(buf, to)
		if err != nil {
			return // closed, or the sender is gone
		}
		sent += int64(n)
		f.udpDatagrams.Add(1)
		f.udpBytes.Add(int64(n))
	}
}

// floodRequest is a parsed, clamped request.
type floodRequest struct {
	rate, secs int64
	size       int // UDP only
}

// parseFlood parses "flood RATE SECS" (TCP) or "flood RATE SECS SIZE"
// (udp), surrounding white space allowed, and clamps its numbers. Numbers
// too large for int64 are clamped like any other; anything not a decimal
// number is rejected.
func parseFlood(line string, udp bool, maxRate, maxSecs int64) (req floodRequest, ok bool) {
	fields := strings.Fields(line)
	want := 3
	if udp {
		want = 4
	}
	if len(fields) != want || fields[0] != "flood" {
		return req, false
	}
	nums := make([]int64, 0, 3)
	for _, s := range fields[1:] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return req, false
		}
		nums = append(nums, v) // on ErrRange, v is ±MaxInt64
	}
	req.rate = min(max(nums[0], 1), maxRate)
	req.secs = min(max(nums[1], 1), maxSecs)
	if udp {
		req.size = int(min(max(nums[2], floodMinDatagram), floodMaxDatagram))
	}
	return req, true
}

// paced returns when the byte after sent is due at rate bytes per second
// from start, or end if that is sooner.
func paced(start time.Time, sent, rate int64, end time.Time) time.Time {
	d := time.Duration(float64(sent) / float64(rate) * float64(time.Second))
	if t := start.Add(d); d >= 0 && t.Before(end) {
		return t
	}
	return end
}

// sleepUntil waits until t, and says false if done or stop (which may be
// nil) closes first.
func sleepUntil(t time.Time, done, stop <-chan struct{}) bool {
	select {
	case <-done:
		return false
	case <-stop:
		return false
	default:
	}
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
		return false
	case <-stop:
		return false
	case <-timer.C:
		return true
	}
}

func newFloodRand() *rand.ChaCha8 {
	var seed [32]byte
	for i := 0; i < len(seed); i += 8 {
		binary.LittleEndian.PutUint64(seed[i:], rand.Uint64())
	}
	return rand.NewChaCha8(seed)
}
