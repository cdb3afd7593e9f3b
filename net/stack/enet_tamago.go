//go:build tamago && arm

package stack

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"

	imxenet "github.com/usbarmory/imx-enet"
	"github.com/usbarmory/tamago/soc/nxp/enet"
)

// Interface is a running gVisor stack on one ENET controller.
type Interface struct {
	Config Config
	iface  *imxenet.Interface
}

// DialContext opens a TCP connection ("tcp" or "tcp4" only).
func (i *Interface) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4":
		return i.iface.DialContextTCP4(ctx, address)
	}
	return nil, fmt.Errorf("net: network %q is not supported", network)
}

var started atomic.Bool

// Start brings up gVisor on eth with the given configuration and routes
// the controller's interrupt to the receive path through handle (the
// board's interrupt registration). It may be called once per image; a
// controller that cannot be initialised is an error, not a panic.
func Start(eth *enet.ENET, cfg Config, handle func(irq int, fn func())) (iface *Interface, err error) {
	if cfg.Off {
		return nil, fmt.Errorf("net: the configuration is ip=off")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if eth == nil {
		return nil, fmt.Errorf("net: no Ethernet controller")
	}
	if !started.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("net: stack already started")
	}
	defer func() {
		// TamaGo's ENET driver panics on a controller it cannot use.
		if r := recover(); r != nil {
			iface, err = nil, fmt.Errorf("net: ENET%d initialisation: %v", eth.Index, r)
		}
	}()

	ii := &imxenet.Interface{}
	if err := ii.Init(eth, cfg.Addr, cfg.Netmask, cfg.MAC, cfg.Gateway); err != nil {
		return nil, fmt.Errorf("net: ENET%d: %w", eth.Index, err)
	}
	if err := ii.EnableICMP(); err != nil {
		return nil, err
	}

	handle(eth.IRQ, func() { receive(eth) })
	eth.EnableInterrupt(enet.IRQ_RXF)
	eth.Start(false)

	// Hand the stack to the Go runtime too, so net.Dial works on the image.
	net.SocketFunc = ii.Socket

	return &Interface{Config: cfg, iface: ii}, nil
}

// receive acknowledges RXF before draining the ring, so a frame that lands
// after the last pop raises the interrupt again instead of waiting for the
// next one.
func receive(eth *enet.ENET) {
	eth.ClearInterrupt(enet.IRQ_RXF)
	for buf := eth.Rx(); buf != nil; buf = eth.Rx() {
		eth.RxHandler(buf)
	}
}
