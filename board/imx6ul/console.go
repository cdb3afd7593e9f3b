//go:build tamago && arm

package imx6ul

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/usbarmory/tamago/soc/nxp/uart"

	"yolk/board/mmio"
)

// Console input.
//
// TamaGo's UART driver only polls (Rx reads one character if the FIFO
// has one, Read calls runtime.Gosched when it has none), and TamaGo never
// preempts: a reader looping on it would keep the only core from
// everything else. The console here takes the receive interrupt instead:
// the UART raises it while its RX FIFO holds a character (RRDY, with
// TamaGo's RX trigger level of one), the handler (a goroutine, see
// irq.go) drains the FIFO into a buffer and wakes the reader, and the
// reader sleeps in between. QEMU's imx-serial hands the guest one
// character at a time and raises the same interrupt for each.
//
// The reader also drains the FIFO itself every pollInterval, so a lost
// interrupt costs latency, not input.

// pollInterval is how often a waiting reader looks at the FIFO without
// an interrupt.
const pollInterval = 50 * time.Millisecond

// consoleBuffer is how many received bytes wait for the reader before
// the oldest are dropped (a paste into an idle shell fits).
const consoleBuffer = 4096

const (
	regUCR1 = 0x80 // UART Control Register 1 (IMX6ULRM 55.15.5)
)

// Console is a UART's receive side as an io.Reader.
type Console struct {
	uart *uart.UART
	irq  int

	mu    sync.Mutex
	buf   []byte
	ready chan struct{} // a byte arrived

	// Dropped counts bytes lost to a full buffer.
	Dropped atomic.Uint64
}

// NewConsole returns the input of u, whose receive interrupt is irq.
// The board must have initialised u (TamaGo's board packages do, for
// their console), and interrupts must be running (StartInterrupts).
func NewConsole(u *uart.UART, irq int) *Console {
	c := &Console{uart: u, irq: irq, ready: make(chan struct{}, 1)}
	HandleInterrupt(irq, c.interrupt)
	// RRDYEN: interrupt while the RX FIFO is at or above its trigger.
	ucr1 := mmio.Reg(u.Base + regUCR1)
	ucr1.Write(ucr1.Read() | 1<<uart.UCR1_RRDYEN)
	return c
}

func (c *Console) interrupt() {
	if c.drain() {
		select {
		case c.ready <- struct{}{}:
		default:
		}
	}
}

// drain moves what the FIFO holds into the buffer; it reports whether
// there was anything.
func (c *Console) drain() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	got := false
	for {
		b, ok := c.uart.Rx()
		if !ok {
			return got
		}
		got = true
		if len(c.buf) == consoleBuffer {
			c.Dropped.Add(1)
			continue
		}
		c.buf = append(c.buf, b)
	}
}

// Read waits for at least one byte and returns what has arrived. It never
// fails: a serial line has no end.
func (c *Console) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		c.drain()
		c.mu.Lock()
		n := copy(p, c.buf)
		c.buf = c.buf[:copy(c.buf, c.buf[n:])]
		c.mu.Unlock()
		if n > 0 {
			return n, nil
		}
		select {
		case <-c.ready:
		case <-time.After(pollInterval):
		}
	}
}
