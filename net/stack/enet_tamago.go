//go:build tamago && arm

package stack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	imxenet "github.com/usbarmory/imx-enet"
	"github.com/usbarmory/tamago/dma"
	"github.com/usbarmory/tamago/soc/nxp/enet"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"yolk/board/mmio"
	"yolk/net/rx"
)

// Interface is a running gVisor stack on one ENET controller.
type Interface struct {
	Config Config
	iface  *imxenet.Interface
	rx     *rx.Receiver
	ring   *rx.Ring
}

// DialContext opens a TCP connection ("tcp" or "tcp4" only).
func (i *Interface) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4":
		return i.iface.DialContextTCP4(ctx, address)
	}
	return nil, fmt.Errorf("net: network %q is not supported", network)
}

// RingSize is the number of receive descriptors yolk gave the controller.
func (i *Interface) RingSize() int { return i.ring.Len() }

// Receiver is the receive path: classifier, memory charger and memalloc
// registry. It charges nothing until a pool is attached with SetPool.
func (i *Interface) Receiver() *rx.Receiver { return i.rx }

// MarkMemalloc marks c as a memalloc connection (Linux's sk_set_memalloc):
// its frames may be charged below the pool's min watermark. unmark undoes
// it; call it when the connection closes.
func (i *Interface) MarkMemalloc(c net.Conn) (unmark func(), err error) {
	return i.rx.Registry().RegisterConn(c)
}

const (
	nicID = tcpip.NICID(1)

	// txQueue is the gVisor channel endpoint's transmit queue, in packets
	// (imx-enet's).
	txQueue = 256

	// ipMTU is the link's MTU as gVisor means it, the IP packet's: TamaGo's
	// enet.MTU (1518), which imx-enet passes, is the largest frame with its
	// header and FCS, and TamaGo's Tx drops anything longer.
	ipMTU = 1500

	// rxRingSize is the number of receive descriptors. Frames queue in the
	// ring between the RXF interrupt and the moment the interrupt
	// goroutine runs, which under TamaGo (no preemption) is when the
	// running goroutine next blocks or yields. At 100 Mb/s a full-size
	// frame takes 123 us on the wire (1538 bytes with preamble and gap),
	// so 64 descriptors hold a 7.9 ms burst at line rate, against 2 ms
	// for TamaGo's default of 16; the cost is 96 KiB of the 4 MiB DMA
	// region.
	rxRingSize = 64

	// sweepPeriod is how often the receiver looks for charged memory the
	// stack has let go of when no frame arrives to trigger the look.
	sweepPeriod = 20 * time.Millisecond
)

// ENET registers yolk writes itself (p879, 22.5 Memory map/register
// definition, IMX6ULLRM); the rest stay TamaGo's.
const (
	// p889, 22.5.1 Interrupt Event Register (ENETx_EIR): write 1 to clear.
	regEIR = 0x0004
	// 22.5, Receive Descriptor Active Register (ENETx_RDAR): a write sets
	// RDAR, telling the controller the ring has empty descriptors.
	regRDAR    = 0x0010
	rdarActive = 1 << 24
	// 22.5, Ethernet Control Register (ENETx_ECR): ETHEREN enables the MAC;
	// clearing it resets the uDMA and the descriptor and FIFO pointers.
	regECR     = 0x0024
	ecrEtherEn = 1 << 1
	// 22.5, Receive Descriptor Ring Start Register (ENETx_RDSR): the
	// ring's address, which should be 64-byte aligned.
	regRDSR = 0x0180
)

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
		// TamaGo's ENET driver panics on a controller it cannot use, and
		// its DMA allocator on a region too small for the rings.
		if r := recover(); r != nil {
			iface, err = nil, fmt.Errorf("net: ENET%d initialisation: %v", eth.Index, r)
		}
	}()

	mac, err := net.ParseMAC(cfg.MAC)
	if err != nil {
		return nil, err
	}
	addr, err := netip.ParseAddr(cfg.Addr)
	if err != nil {
		return nil, err
	}
	ep := rx.NewEndpoint(txQueue, ipMTU, tcpip.LinkAddress(mac))

	// The controller, through imx-enet's NIC: it sets the MAC address,
	// runs TamaGo's ENET.Init (clocks, soft reset, MAC and MII setup, PHY)
	// and registers the notification that moves each packet the stack
	// queues on the channel endpoint to TamaGo's transmit ring. It also
	// sets eth.RxHandler, which nothing calls: TamaGo's receive ring is
	// never read.
	nic := &imxenet.NIC{MAC: mac, Link: ep.Endpoint, Device: eth}
	if err := nic.Init(); err != nil {
		return nil, fmt.Errorf("net: ENET%d: %w", eth.Index, err)
	}
	// TamaGo's Start lays out its transmit ring (TDSR), and a receive ring
	// of its own (RDSR, RDAR) that takeRx replaces at once.
	eth.Start(false)

	recv := rx.New(rx.Config{Addr: addr, Mode: rx.ClassifyFirst}, ep)
	ring, err := takeRx(eth, recv)
	if err != nil {
		return nil, fmt.Errorf("net: ENET%d: %w", eth.Index, err)
	}

	// The stack is created after the controller is set up, so that it has
	// transmitted nothing when takeRx restarts the controller.
	s, err := newStack(ep, cfg)
	if err != nil {
		return nil, err
	}

	// Interrupt driven: RXF wakes the board's interrupt goroutine, which
	// calls this handler; nothing polls the ring.
	handle(eth.IRQ, func() { receive(eth, ring) })
	eth.EnableInterrupt(enet.IRQ_RXF)
	recv.StartSweeper(sweepPeriod, nil)

	// imx-enet's adapters for dialling and for the Go runtime's net
	// package, on our stack.
	ii := &imxenet.Interface{NICID: nicID, NIC: nic, Stack: s, Link: ep.Endpoint}
	net.SocketFunc = ii.Socket

	return &Interface{Config: cfg, iface: ii, rx: recv, ring: ring}, nil
}

// newStack builds gVisor's stack on ep as imx-enet's Interface.Init
// would (its DefaultStackOptions protocols, a static address, a route to
// the subnet and a default route via the gateway). imx-enet's EnableICMP
// endpoint is left out: the stack answers echo requests itself, and the
// endpoint would only take echo replies, which nothing here solicits.
func newStack(ep *rx.Endpoint, cfg Config) (*gstack.Stack, error) {
	s := gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol, icmp.NewProtocol4, udp.NewProtocol},
	})
	// TCP's receive buffer, and so the window a peer may fill, is capped so
	// that a memalloc connection's out-of-order queue fits in the network's
	// reserve bound (see rx.MemallocWindow); every socket gets the cap, as
	// Linux's tcp_rmem applies to all.
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: rx.MemallocWindow, Max: rx.MemallocWindow}
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv); err != nil {
		return nil, fmt.Errorf("net: TCP receive buffer: %v", err)
	}
	if err := s.CreateNIC(nicID, ep); err != nil {
		return nil, fmt.Errorf("net: create NIC: %v", err)
	}
	ip := tcpip.AddressWithPrefix{
		Address:   tcpip.AddrFromSlice(net.ParseIP(cfg.Addr).To4()),
		PrefixLen: tcpip.MaskFromBytes(net.ParseIP(cfg.Netmask).To4()).Prefix(),
	}
	pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: ip}
	if err := s.AddProtocolAddress(nicID, pa, gstack.AddressProperties{}); err != nil {
		return nil, fmt.Errorf("net: address %s: %v", ip, err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: ip.Subnet(), NIC: nicID},
		{Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFromSlice(net.ParseIP(cfg.Gateway).To4()), NIC: nicID},
	})

	return s, nil
}

// takeRx gives the controller a receive ring of yolk's own: descriptors
// and buffers in the DMA region, frames handed to recv straight from the
// buffers by Ring.Drain.
func takeRx(eth *enet.ENET, recv *rx.Receiver) (*rx.Ring, error) {
	const n = rxRingSize
	// One reservation for the descriptors (two 32-bit words each, 64-byte
	// aligned as TamaGo aligns its own) and one for all the buffers.
	descAddr, descMem := dma.Reserve(n*8, 64)
	bufAddr, bufMem := dma.Reserve(n*rx.BufSize, 64)
	desc := unsafe.Slice((*uint32)(unsafe.Pointer(&descMem[0])), 2*n)
	bufs := make([][]byte, n)
	addrs := make([]uint32, n)
	for i := range bufs {
		off := i * rx.BufSize
		bufs[i] = bufMem[off : off+rx.BufSize : off+rx.BufSize]
		addrs[i] = uint32(bufAddr) + uint32(off)
	}
	rdar := mmio.Reg(eth.Base + regRDAR)
	ring, err := rx.NewRing(desc, bufs, addrs, func() { rdar.Write(rdarActive) }, recv)
	if err != nil {
		return nil, err
	}

	// Point the controller at the new ring. Clearing ECR[ETHEREN] stops
	// the controller and resets its descriptor pointers to RDSR and TDSR
	// (ECR, 22.5; QEMU's hw/net/imx_fec.c does the same), so the next
	// frame lands in our first descriptor. The transmit pointer goes back
	// to the start of TamaGo's ring too, where its index also is: nothing
	// has been transmitted yet, since the stack does not exist. The
	// read-modify-write keeps ECR[DBSWP] (bit 8), the little-endian
	// descriptors the ring is laid out for.
	ecr := mmio.Reg(eth.Base + regECR)
	ecr.Write(ecr.Read() &^ ecrEtherEn)
	// RDSR: the ring's start.
	mmio.Reg(eth.Base + regRDSR).Write(uint32(descAddr))
	ecr.Write(ecr.Read() | ecrEtherEn)
	// RDAR: every descriptor is empty.
	rdar.Write(rdarActive)
	return ring, nil
}

// receive acknowledges RXF before draining the ring, so a frame that lands
// after the drain's last look raises the interrupt again instead of
// waiting for the next one. EIR is write-1-to-clear: only RXF is written
// (TamaGo's ClearInterrupt writes back every pending bit).
func receive(eth *enet.ENET, ring *rx.Ring) {
	mmio.Reg(eth.Base + regEIR).Write(1 << enet.IRQ_RXF)
	ring.Drain()
}
