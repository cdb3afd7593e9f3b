package rx

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Endpoint is the gVisor link endpoint of an interface whose receive ring
// yolk owns. Transmit is gVisor's channel endpoint: the stack queues
// outgoing packets on it and the driver's notification drains them to the
// controller. Receive is the Receiver's alone: it injects packets it has
// charged and releases its own reference to each after delivery, as
// gVisor's own link endpoints do.
type Endpoint struct {
	*channel.Endpoint
}

// NewEndpoint returns an Ethernet endpoint with a transmit queue of
// txQueue packets. Link-layer address resolution (ARP) is the stack's.
func NewEndpoint(txQueue int, mtu uint32, mac tcpip.LinkAddress) *Endpoint {
	ch := channel.New(txQueue, mtu, mac)
	ch.LinkEPCapabilities |= stack.CapabilityResolutionRequired
	return &Endpoint{Endpoint: ch}
}
