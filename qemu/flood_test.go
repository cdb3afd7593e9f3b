package qemu

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu/nbdserver"
	"yolk/runtime/cmdline"
)

// startFlood starts f, checks the parameter it gives the guest, and closes
// it when the test ends.
func startFlood(t *testing.T, f *FloodServer) {
	t.Helper()
	params, err := f.Start()
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	require.NotZero(t, f.Port())
	assert.Equal(t, []string{"flood=10.0.2.2:" + strconv.Itoa(f.Port())}, params)
	assert.Equal(t, "127.0.0.1:"+strconv.Itoa(f.Port()), f.Addr())
}

// tcpFlood connects to f and sends a request line.
func tcpFlood(t *testing.T, f *FloodServer, request string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", f.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = io.WriteString(c, request)
	require.NoError(t, err)
	return c
}

// drain reads c to its end (or the deadline) and says how many bytes came.
func drain(c net.Conn, within time.Duration) (int64, error) {
	c.SetReadDeadline(time.Now().Add(within))
	return io.Copy(io.Discard, c)
}

// udpClient is a bound UDP socket on loopback.
func udpClient(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func udpSend(t *testing.T, c *net.UDPConn, f *FloodServer, request string) {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", f.Addr())
	require.NoError(t, err)
	_, err = c.WriteToUDP([]byte(request), to)
	require.NoError(t, err)
}

// receive collects the sizes of the datagrams c gets for d.
func receive(t *testing.T, c *net.UDPConn, d time.Duration) []int {
	t.Helper()
	var sizes []int
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(d))
	for {
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			// assert, not require: a test may receive in its own goroutine
			assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
			return sizes
		}
		sizes = append(sizes, n)
	}
}

// receiveOne waits up to d for one datagram and returns its size, or 0.
func receiveOne(t *testing.T, c *net.UDPConn, d time.Duration) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	n, _, err := c.ReadFromUDP(make([]byte, 2048))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0
	}
	require.NoError(t, err)
	return n
}

func sum(sizes []int) (total int) {
	for _, n := range sizes {
		total += n
	}
	return total
}

func TestFloodServerTCPIsPaced(t *testing.T) {
	f := &FloodServer{}
	startFlood(t, f)
	start := time.Now()
	c := tcpFlood(t, f, "flood 200000 1\n")
	time.Sleep(300 * time.Millisecond) // not reading: the flood goes on regardless
	n, err := drain(c, 5*time.Second)
	elapsed := time.Since(start)
	require.NoError(t, err, "the flood ends with the connection closed")
	assert.GreaterOrEqual(t, n, int64(100_000), "paced at 200000 B/s for 1 s")
	assert.LessOrEqual(t, n, int64(320_000), "paced at 200000 B/s for 1 s")
	assert.Greater(t, elapsed, 800*time.Millisecond, "the flood lasts its second")
	assert.Less(t, elapsed, 3*time.Second, "the flood stops after its second")
	require.Eventually(t, func() bool { return f.Stats().TCPBytes == n }, 2*time.Second, 10*time.Millisecond,
		"Stats counts the bytes written: %+v, %d received", f.Stats(), n)
	assert.Equal(t, int64(1), f.Stats().TCPConns)
}

func TestFloodServerTCPRejectsBadRequests(t *testing.T) {
	f := &FloodServer{}
	startFlood(t, f)
	for _, request := range []string{
		"hello\n",
		"\n",
		"flood 1000\n",
		"flood 1000 1 64\n",
		"flood x 1\n",
		"flood 1.5 1\n",
		"flood 1000 0x10\n",
		"FLOOD 1000 1\n",
		strings.Repeat("flood ", 100) + "\n", // longer than a request line
		"flood 1000 1",                       // no newline: the write half closes below
	} {
		c := tcpFlood(t, f, request)
		c.(*net.TCPConn).CloseWrite()
		start := time.Now()
		n, err := drain(c, 5*time.Second)
		assert.Zero(t, n, "%q gets no data", request)
		assert.False(t, errors.Is(err, os.ErrDeadlineExceeded), "%q: the connection is closed", request)
		assert.Less(t, time.Since(start), 2*time.Second, "%q is rejected at once", request)
	}
	assert.Equal(t, FloodStats{}, f.Stats())
}

// A guest never reads its flood connections: the writer blocks once the
// window is full and must still stop when its seconds are up.
func TestFloodServerTCPBlockedWriterStopsOnTime(t *testing.T) {
	f := &FloodServer{MaxRate: 64 << 20}
	startFlood(t, f)
	start := time.Now()
	tcpFlood(t, f, "flood 67108864 1\n") // far more than loopback buffers in a second
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.conns) == 0 && f.Stats().TCPConns == 1
	}, 3*time.Second, 10*time.Millisecond, "the writer stops although nobody reads")
	assert.Greater(t, time.Since(start), 900*time.Millisecond)
	assert.Positive(t, f.Stats().TCPBytes)
}

func TestFloodServerUDP(t *testing.T) {
	f := &FloodServer{}
	startFlood(t, f)
	c := udpClient(t)
	udpSend(t, c, f, "hello")
	udpSend(t, c, f, "flood 100000 1") // the TCP form
	udpSend(t, c, f, "flood 100000 1 x")
	assert.Empty(t, receive(t, c, 300*time.Millisecond), "other datagrams are ignored")

	udpSend(t, c, f, "flood 100000 1 1000\n")
	sizes := receive(t, c, 1500*time.Millisecond)
	for _, n := range sizes {
		require.Equal(t, 1000, n, "every datagram is SIZE bytes")
	}
	assert.GreaterOrEqual(t, len(sizes), 50, "paced at 100000 B/s for 1 s")
	assert.LessOrEqual(t, len(sizes), 160, "paced at 100000 B/s for 1 s")
	assert.Empty(t, receive(t, c, 300*time.Millisecond), "then silence")
	s := f.Stats()
	assert.Equal(t, int64(1), s.UDPStreams)
	assert.Equal(t, int64(len(sizes)), s.UDPDatagrams)
	assert.Equal(t, int64(sum(sizes)), s.UDPBytes)
}

func TestFloodServerUDPReplacesAndCapsStreams(t *testing.T) {
	f := &FloodServer{}
	startFlood(t, f)
	a := udpClient(t)
	udpSend(t, a, f, "flood 50000 5 100")
	require.Equal(t, 100, receiveOne(t, a, 2*time.Second))
	udpSend(t, a, f, "flood 50000 5 200")
	deadline := time.Now().Add(2 * time.Second)
	for receiveOne(t, a, time.Second) != 200 {
		require.True(t, time.Now().Before(deadline), "the new request replaces the stream")
	}
	for _, n := range receive(t, a, 100*time.Millisecond) {
		require.Equal(t, 200, n, "the old stream has stopped")
	}

	// a's stream and seven more make eight, the most there are at once.
	for range floodMaxStreams - 1 {
		c := udpClient(t)
		udpSend(t, c, f, "flood 1000 5 10") // SIZE clamps to 64
		require.Equal(t, floodMinDatagram, receiveOne(t, c, 2*time.Second))
	}
	extra := udpClient(t)
	udpSend(t, extra, f, "flood 1000 5 64")
	assert.Zero(t, receiveOne(t, extra, 300*time.Millisecond), "a ninth stream is not started")
	assert.Equal(t, int64(2+floodMaxStreams-1), f.Stats().UDPStreams)
}

// "stop" ends the sender's stream at once, and only the sender's.
func TestFloodServerUDPStop(t *testing.T) {
	f := &FloodServer{}
	startFlood(t, f)
	a, b := udpClient(t), udpClient(t)
	udpSend(t, a, f, "flood 50000 30 100")
	udpSend(t, b, f, "flood 50000 30 100")
	require.Equal(t, 100, receiveOne(t, a, 2*time.Second))
	require.Equal(t, 100, receiveOne(t, b, 2*time.Second))
	udpSend(t, a, f, "stop\n")
	receive(t, a, 200*time.Millisecond) // what was in flight
	assert.Empty(t, receive(t, a, 500*time.Millisecond), "a's stream stopped")
	assert.NotEmpty(t, receive(t, b, 300*time.Millisecond), "b's stream runs on")
	udpSend(t, a, f, "stop") // a stop with no stream is ignored
	udpSend(t, a, f, "flood 50000 30 100")
	assert.Equal(t, 100, receiveOne(t, a, 2*time.Second), "a may ask again")
}

func TestFloodServerCloseStopsFloods(t *testing.T) {
	f := &FloodServer{MaxRate: 64 << 20}
	startFlood(t, f)
	tc := tcpFlood(t, f, "flood 100000 60\n")
	tcpFlood(t, f, "flood 67108864 60\n") // never read: its writer blocks
	type result struct {
		n   int64
		err error
	}
	tcpDone := make(chan result, 1)
	go func() {
		n, err := drain(tc, 10*time.Second)
		tcpDone <- result{n, err}
	}()
	uc := udpClient(t)
	udpSend(t, uc, f, "flood 100000 60 500")
	require.Equal(t, 500, receiveOne(t, uc, 2*time.Second))
	require.Eventually(t, func() bool { return f.Stats().TCPBytes > 0 }, 2*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // long enough to fill loopback's buffers at 64 MiB/s

	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(time.Second):
		t.Fatal("Close is not prompt")
	}
	select {
	case r := <-tcpDone:
		assert.Positive(t, r.n)
		assert.LessOrEqual(t, r.n, f.Stats().TCPBytes)
		assert.False(t, errors.Is(r.err, os.ErrDeadlineExceeded), "the TCP flood ends")
	case <-time.After(time.Second):
		t.Fatal("the TCP flood outlived Close")
	}
	late := receive(t, uc, 100*time.Millisecond) // sent before Close
	assert.Empty(t, receive(t, uc, 300*time.Millisecond), "the UDP flood ends")

	s := f.Stats()
	assert.Equal(t, int64(2), s.TCPConns)
	assert.Equal(t, int64(1), s.UDPStreams)
	assert.GreaterOrEqual(t, s.UDPDatagrams, int64(1+len(late)))
	assert.Equal(t, 500*s.UDPDatagrams, s.UDPBytes)
	require.NoError(t, f.Close(), "Close twice is harmless")
}

func TestFloodServerClampsRateAndTime(t *testing.T) {
	f := &FloodServer{MaxRate: 20000, MaxSecs: 1}
	startFlood(t, f)
	start := time.Now()
	tc := tcpFlood(t, f, "flood 100000000 30\n")
	uc := udpClient(t)
	udpSend(t, uc, f, "flood 99999999999999999999999 999 5000") // beyond int64 too
	var sizes []int
	udpDone := make(chan struct{})
	go func() {
		defer close(udpDone)
		sizes = receive(t, uc, 1500*time.Millisecond)
	}()
	n, err := drain(tc, 5*time.Second)
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 2500*time.Millisecond, "SECS clamps to MaxSecs")
	assert.GreaterOrEqual(t, n, int64(10_000), "RATE clamps to MaxRate")
	assert.LessOrEqual(t, n, int64(32_000), "RATE clamps to MaxRate")

	<-udpDone
	for _, n := range sizes {
		require.Equal(t, floodMaxDatagram, n, "SIZE clamps to 1472")
	}
	assert.GreaterOrEqual(t, sum(sizes), 10_000, "RATE clamps to MaxRate")
	assert.LessOrEqual(t, sum(sizes), 32_000+floodMaxDatagram, "RATE clamps to MaxRate")
}

func TestParseFlood(t *testing.T) {
	for _, c := range []struct {
		line string
		udp  bool
		want floodRequest
		ok   bool
	}{
		{"flood 1000 5\n", false, floodRequest{rate: 1000, secs: 5}, true},
		{"  flood\t1000 5 \r\n", false, floodRequest{rate: 1000, secs: 5}, true},
		{"flood 0 0\n", false, floodRequest{rate: 1, secs: 1}, true},
		{"flood -5 -5\n", false, floodRequest{rate: 1, secs: 1}, true},
		{"flood 1000000 1000\n", false, floodRequest{rate: 5000, secs: 60}, true},
		{"flood 99999999999999999999 -99999999999999999999\n", false, floodRequest{rate: 5000, secs: 1}, true},
		{"flood 1000 5 100", true, floodRequest{rate: 1000, secs: 5, size: 100}, true},
		{"flood 1000 5 1", true, floodRequest{rate: 1000, secs: 5, size: 64}, true},
		{"flood 1000 5 9000", true, floodRequest{rate: 1000, secs: 5, size: 1472}, true},
		{"flood 1000 5", true, floodRequest{}, false},
		{"flood 1000 5 100", false, floodRequest{}, false},
		{"flood", false, floodRequest{}, false},
		{"", false, floodRequest{}, false},
		{"flood 1e3 5", false, floodRequest{}, false},
		{"flood +1000 5", false, floodRequest{rate: 1000, secs: 5}, true},
		{"flood 1000 5\x00", false, floodRequest{}, false},
		{"echo 1000 5", false, floodRequest{}, false},
	} {
		got, ok := parseFlood(c.line, c.udp, 5000, 60)
		assert.Equal(t, c.ok, ok, "%q", c.line)
		assert.Equal(t, c.want, got, "%q", c.line)
	}
}

func TestPlanServicesStartsAFloodServer(t *testing.T) {
	specs := []cmdline.Spec{{Name: "scenario"}, {Name: "flood", Service: ServiceFlood}}
	services, rest := PlanServices([]string{"scenario=rx", "flood=auto"}, specs, nbdserver.Config{})
	require.Len(t, services, 1)
	assert.IsType(t, &FloodServer{}, services[0])
	assert.Equal(t, []string{"scenario=rx"}, rest)

	services, rest = PlanServices([]string{"flood=10.0.2.2:9"}, specs, nbdserver.Config{})
	assert.Empty(t, services, "the user's own flood server")
	assert.Equal(t, []string{"flood=10.0.2.2:9"}, rest)
}
