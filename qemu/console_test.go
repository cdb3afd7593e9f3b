package qemu

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/runtime/result"
)

func TestStdinFeedsTheConsoleUART(t *testing.T) {
	args, err := Args(Config{Image: "ua.elf", Target: "usbarmory", Stdin: strings.NewReader("ps\r")}, "shell")
	require.NoError(t, err)
	joined := strings.Join(args, " ")
	// A pipe: no mux, so every byte is the guest's, Ctrl-A too.
	assert.Contains(t, joined, "-chardev stdio,id=console,signal=off,mux=off -serial null -serial chardev:console")

	tty, err := os.Open("/dev/null") // a character device, as a terminal is
	require.NoError(t, err)
	defer tty.Close()
	args, err = Args(Config{Image: "yolk.elf", Stdin: tty}, "shell")
	require.NoError(t, err)
	assert.Contains(t, strings.Join(args, " "), "-chardev stdio,id=console,signal=off,mux=on -serial chardev:console -serial null")
}

func TestVerdictIsTheLastResult(t *testing.T) {
	run := &Run{Results: []result.Line{
		result.New("result", "scenario", "sleep", "status", "pass", "code", 0),
		result.New("result", "scenario", "shell", "status", "exit", "code", 3),
		result.New("exit", "code", 3),
	}}
	v, ok := run.Verdict()
	require.True(t, ok)
	assert.Equal(t, "shell", v.Value("scenario"))
	_, ok = (&Run{}).Verdict()
	assert.False(t, ok)
}
