package qemu

import (
	"bufio"
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu/nbdserver"
	"yolk/runtime/cmdline"
)

func TestArgsAreTheKnownGoodLine(t *testing.T) {
	args, err := Args(Config{Image: "yolk.elf"}, "scenario=selftest host=10.0.2.2:1")
	require.NoError(t, err)
	assert.Equal(t, "-machine mcimx6ul-evk -cpu cortex-a7 -m 512M -nographic -monitor none -semihosting "+
		"-serial stdio -serial null -net nic,model=imx.enet,netdev=net0 -netdev user,id=net0 "+
		"-append scenario=selftest host=10.0.2.2:1 -kernel yolk.elf", strings.Join(args, " "))

	args, err = Args(Config{Image: "ua.elf", Target: "usbarmory", Memory: "1G"}, "")
	require.NoError(t, err)
	joined := strings.Join(args, " ")
	assert.Contains(t, joined, "-serial null -serial stdio", "USB armory prints on UART2")
	assert.Contains(t, joined, "-m 1G")
	assert.NotContains(t, joined, "-append")

	_, err = Args(Config{Image: "x", Target: "pi"}, "")
	assert.ErrorContains(t, err, `unknown target "pi"`)
	_, err = Args(Config{}, "")
	assert.Error(t, err)
}

func TestEchoServer(t *testing.T) {
	e := &EchoServer{IdleTimeout: 5 * time.Second}
	params, err := e.Start()
	require.NoError(t, err)
	defer e.Close()
	_, port, _ := net.SplitHostPort(e.Addr())
	assert.Equal(t, []string{"host=10.0.2.2:" + port}, params)

	c, err := net.Dial("tcp", e.Addr())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("ping\n"))
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "ping\n", line)
	require.Eventually(t, func() bool { return e.Echoed() == 5 }, 5*time.Second, 10*time.Millisecond)
}

func TestEchoServerWrongPortAndClose(t *testing.T) {
	e := &EchoServer{Param: "echo", Port: 9}
	params, err := e.Start()
	require.NoError(t, err)
	assert.Equal(t, []string{"echo=10.0.2.2:9"}, params)

	c, err := net.Dial("tcp", e.Addr())
	require.NoError(t, err)
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- e.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with a connection open")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "open connections are closed by Close")
}

func TestReadConsoleParsesResultLines(t *testing.T) {
	console := "TamaGo boot\r\nyolk: banner board=x\r\nyolk: Broken!\r\nyolk: exit code=3\r\npartial"
	run := &Run{}
	readConsole(strings.NewReader(console), run, time.Now(), nil, func() {})
	assert.Equal(t, []string{"TamaGo boot", "yolk: banner board=x", "yolk: Broken!", "yolk: exit code=3", "partial"}, run.Lines)
	require.Len(t, run.Results, 2, "the malformed line is console text, not a result")
	assert.NotZero(t, run.Banner)
	l, ok := run.Find("exit", "code", "3")
	assert.True(t, ok)
	assert.Equal(t, "3", l.Value("code"))
	_, ok = run.Find("exit", "code", "4")
	assert.False(t, ok)
	assert.Equal(t, "yolk: exit code=3\npartial", run.Tail(2))
}

func TestBootReportsAMissingEmulator(t *testing.T) {
	_, err := Boot(context.Background(), Config{Image: "x.elf", QEMU: filepath.Join(t.TempDir(), "no-qemu-here")})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no-qemu-here")
}

func TestBootClosesServicesOnFailure(t *testing.T) {
	e := &EchoServer{}
	_, err := Boot(context.Background(), Config{Image: "x.elf", QEMU: filepath.Join(t.TempDir(), "none"), Services: []Service{e}})
	require.Error(t, err)
	_, err = net.Dial("tcp", e.Addr())
	assert.Error(t, err, "the echo server outlived the run")
}

func TestPlanServices(t *testing.T) {
	selftest := []cmdline.Spec{{Name: "scenario"}, {Name: "host", Service: ServiceEcho}, {Name: "timeout"}}
	journal := []cmdline.Spec{{Name: "scenario"}, {Name: "nbd", Service: ServiceNBD}, {Name: "export", Service: ServiceNBD}, {Name: "tx"}}
	nbd := nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: 1 << 20}
	kinds := func(ss []Service) []string {
		var out []string
		for _, s := range ss {
			switch s := s.(type) {
			case *EchoServer:
				out = append(out, "echo")
			case *NBDServer:
				assert.Equal(t, nbd, s.Config)
				out = append(out, "nbd")
			}
		}
		return out
	}
	for _, c := range []struct {
		name  string
		specs []cmdline.Spec
		words []string
		want  []string // services
		rest  []string // words left for the image
	}{
		{"selftest needs an echo server", selftest, nil, []string{"echo"}, nil},
		{"unless host is given", selftest, []string{"host=10.0.2.2:7", "timeout=1s"}, nil, []string{"host=10.0.2.2:7", "timeout=1s"}},
		{"host=auto asks for one", selftest, []string{"host=auto", "timeout=1s"}, []string{"echo"}, []string{"timeout=1s"}},
		{"the journal needs an NBD server", journal, []string{"scenario=journal", "tx=5"}, []string{"nbd"}, []string{"scenario=journal", "tx=5"}},
		{"nbd=auto, as the README has it", journal, []string{"scenario=journal", "nbd=auto"}, []string{"nbd"}, []string{"scenario=journal"}},
		{"the user's own server", journal, []string{"scenario=journal", "nbd=10.0.2.2:10809", "export=disk"}, nil, []string{"scenario=journal", "nbd=10.0.2.2:10809", "export=disk"}},
		{"an export names the user's server too", journal, []string{"export=disk"}, nil, []string{"export=disk"}},
		{"no services, no servers", []cmdline.Spec{{Name: "scenario"}}, []string{"scenario=vm"}, nil, []string{"scenario=vm"}},
	} {
		services, rest := PlanServices(c.words, c.specs, nbd)
		assert.Equal(t, c.want, kinds(services), c.name)
		assert.Equal(t, c.rest, rest, c.name)
	}
}

func TestImageStatus(t *testing.T) {
	for _, c := range []struct {
		run  Run
		code int
		ok   bool
	}{
		{Run{ExitCode: 1, Banner: time.Second}, 1, true},
		{Run{ExitCode: 4, Banner: time.Second}, 4, true},
		{Run{ExitCode: 1}, 0, false}, // QEMU's own failure: no banner
		{Run{ExitCode: -1, Banner: time.Second}, 0, false},
		{Run{ExitCode: -1, Banner: time.Second, TimedOut: true}, 0, false},
	} {
		code, ok := c.run.ImageStatus()
		assert.Equal(t, c.code, code, "%+v", c.run)
		assert.Equal(t, c.ok, ok, "%+v", c.run)
	}
}

// A make run by a test is the one it asks for, whatever make runs the
// tests: nothing of the outer make's flags or variables reaches it.
func TestFreshMakeEnv(t *testing.T) {
	env := freshMakeEnv([]string{"PATH=/bin", "MAKEFLAGS=-j2 --jobserver-auth=3,4 -- BUILD=/elsewhere", "MFLAGS=-j2",
		"MAKELEVEL=1", "MAKEOVERRIDES=${-*-command-variables-*-}", "GNUMAKEFLAGS=-s", "HOME=/root", "MAKEFLAGSX=kept"})
	assert.Equal(t, []string{"PATH=/bin", "HOME=/root", "MAKEFLAGSX=kept"}, env)
}
