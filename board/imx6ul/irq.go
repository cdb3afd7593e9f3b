//go:build tamago && arm

package imx6ul

import (
	"runtime/goos"
	"sync"
	"sync/atomic"

	"github.com/usbarmory/tamago/arm"
	"github.com/usbarmory/tamago/soc/nxp/imx6ul"
)

// Interrupts and idle.
//
// TamaGo's default idle governor only waits for an interrupt when the Go
// scheduler has no timer at all; with any timer pending (a sleep, a TCP
// retransmit, a deadline) it returns at once and the scheduler spins the
// only core until the timer is due. yolk replaces it at boot: the generic
// timer is armed for the next Go timer and the core waits in WFI, so an
// idle image costs nothing and a busy one keeps its core for faults and
// reclaim.
//
// Device interrupts are taken the TamaGo way: the IRQ exception wakes one
// goroutine parked in arm.ServiceInterrupts, which reads the GIC and calls
// the handler registered for that interrupt. Handlers therefore run as an
// ordinary goroutine, not in exception context, and may take locks.

var (
	handlerMu sync.Mutex
	handlers  = map[int]func(){}
	started   atomic.Bool

	// Spurious counts interrupts with no handler.
	Spurious atomic.Uint64
)

// StartInterrupts initialises the GIC, installs the WFI idle governor and
// starts the interrupt service goroutine. Later calls do nothing.
func StartInterrupts() {
	if !started.CompareAndSwap(false, true) {
		return
	}
	imx6ul.GIC.Init(true, false)
	imx6ul.GIC.EnableInterrupt(arm.TIMER_IRQ, true)
	goos.Idle = idle
	go arm.ServiceInterrupts(serviceInterrupt)
}

// HandleInterrupt routes GIC interrupt id to fn and enables it.
func HandleInterrupt(id int, fn func()) {
	handlerMu.Lock()
	handlers[id] = fn
	handlerMu.Unlock()
	imx6ul.GIC.EnableInterrupt(id, true)
}

// idle waits for the next interrupt, with the timer armed for the next Go
// timer (pollUntil, in ns of the runtime clock). Zero means work is ready.
func idle(pollUntil int64) {
	if pollUntil == 0 {
		return
	}
	imx6ul.ARM.SetAlarm(pollUntil)
	imx6ul.ARM.WaitInterrupt()
}

func serviceInterrupt() {
	id := imx6ul.GIC.GetInterrupt(true)
	if id == arm.TIMER_IRQ {
		// The alarm only exists to end WFI; disarm it until the next idle.
		imx6ul.ARM.SetAlarm(0)
		return
	}
	handlerMu.Lock()
	fn := handlers[id]
	handlerMu.Unlock()
	if fn == nil {
		Spurious.Add(1)
		return
	}
	fn()
}
