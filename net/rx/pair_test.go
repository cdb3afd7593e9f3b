package rx

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"yolk/mm/phys"
)

// fakeNIC is the controller's side of a Ring: it writes a frame into the
// next descriptor the ring has handed it, as the ENET's receive DMA does,
// and drops it (an overrun) when software still owns that descriptor.
type fakeNIC struct {
	desc     []uint32
	bufs     map[uint32][]byte // by physical address
	idx      int
	n        int
	overruns int
	kicks    atomic.Int64
}

func newFakeNIC(n int) (*fakeNIC, []uint32, [][]byte, []uint32) {
	h := &fakeNIC{desc: make([]uint32, 2*n), bufs: map[uint32][]byte{}, n: n}
	bufs := make([][]byte, n)
	addrs := make([]uint32, n)
	for i := range bufs {
		bufs[i] = make([]byte, BufSize)
		addrs[i] = 0x90000000 + uint32(i)*BufSize
		h.bufs[addrs[i]] = bufs[i]
	}
	return h, h.desc, bufs, addrs
}

// deliver writes frame (without FCS) with status bits extra; it reports
// false for an overrun.
func (h *fakeNIC) deliver(frame []byte, extra uint32) bool {
	w := atomic.LoadUint32(&h.desc[2*h.idx])
	if (w>>16)&bdEmpty == 0 {
		h.overruns++
		return false
	}
	buf := h.bufs[atomic.LoadUint32(&h.desc[2*h.idx+1])]
	n := copy(buf, frame)
	st := uint32(bdLast) | (w>>16)&bdWrap | extra
	atomic.StoreUint32(&h.desc[2*h.idx], st<<16|uint32(n+fcsLen))
	if (w>>16)&bdWrap != 0 {
		h.idx = 0
	} else {
		h.idx++
	}
	return true
}

var (
	guestMAC  = tcpip.LinkAddress("\x02\x79\x6f\x6c\x6b\x01")
	peerMAC   = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
	guestAddr = netip.MustParseAddr("10.0.2.15")
	peerAddr  = netip.MustParseAddr("10.0.2.2")
)

// pair is two gVisor stacks on one virtual wire: the guest, receiving
// through a Ring and a Receiver as the image does, and a peer on gVisor's
// own Ethernet endpoint.
type pair struct {
	pool   *phys.Pool
	rx     *Receiver
	ring   *Ring
	nic    *fakeNIC
	guest  *stack.Stack
	peer   *stack.Stack
	gep    *Endpoint
	pep    *channel.Endpoint
	wireMu sync.Mutex // one frame on the wire to the guest at a time
	// toGuest filters frames for the guest; false drops one on the wire.
	toGuest func(frame []byte) bool
}

func newStack(t *testing.T, ep stack.LinkEndpoint, addr netip.Addr) *stack.Stack {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	// The receive window of a memalloc connection must fit in the
	// reserve bound, or segments held out of order can fill the reserve
	// while the one that would let them be read is dropped: the stack's
	// TCP receive buffer is capped as the image caps it.
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: MemallocWindow, Max: MemallocWindow}
	require.Nil(t, s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv))
	require.Nil(t, s.CreateNIC(1, ep))
	a := tcpip.AddrFrom4(addr.As4())
	require.Nil(t, s.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: a, PrefixLen: 24},
	}, stack.AddressProperties{}))
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	t.Cleanup(func() { s.Close(); s.Wait() })
	return s
}

func newPair(t *testing.T, poolKiB int, cfg Config) *pair {
	t.Helper()
	pool, err := phys.New(phys.Config{Mem: make([]byte, poolKiB<<10), Base: 0x80000000})
	require.NoError(t, err)
	p := &pair{pool: pool}
	p.gep = NewEndpoint(256, 1500, guestMAC)
	p.pep = channel.New(256, 1500, peerMAC)
	cfg.Pool, cfg.Addr = pool, guestAddr
	p.rx = New(cfg, p.gep)
	nic, desc, bufs, addrs := newFakeNIC(32)
	p.nic = nic
	p.ring, err = NewRing(desc, bufs, addrs, func() { nic.kicks.Add(1) }, p.rx)
	require.NoError(t, err)
	p.guest = newStack(t, p.gep, guestAddr)
	p.peer = newStack(t, ethernet.New(p.pep), peerAddr)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Add(2)
	go func() { // guest -> peer, framed as imx-enet's NIC.Tx frames them
		defer wg.Done()
		for {
			pkt := p.gep.ReadContext(ctx)
			if pkt == nil {
				return
			}
			frame := make([]byte, 0, header.EthernetMinimumSize+pkt.Size())
			frame = append(frame, pkt.EgressRoute.RemoteLinkAddress...)
			frame = append(frame, guestMAC...)
			frame = binary.BigEndian.AppendUint16(frame, uint16(pkt.NetworkProtocolNumber))
			for _, v := range pkt.AsSlices() {
				frame = append(frame, v...)
			}
			pkt.DecRef()
			in := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
			p.pep.InjectInbound(0, in)
			in.DecRef()
		}
	}()
	go func() { // peer -> guest, through the ring
		defer wg.Done()
		for {
			pkt := p.pep.ReadContext(ctx)
			if pkt == nil {
				return
			}
			frame := pkt.ToView().ToSlice()
			pkt.DecRef()
			p.wire(frame, 0)
		}
	}()
	return p
}

// wire puts one frame on the wire to the guest and runs the interrupt
// handler: the NIC fills a descriptor, the ring drains.
func (p *pair) wire(frame []byte, status uint32) {
	p.wireMu.Lock()
	defer p.wireMu.Unlock()
	if p.toGuest != nil && !p.toGuest(frame) {
		return
	}
	p.nic.deliver(frame, status)
	p.ring.Drain()
}

// settle sweeps until want holds of the stats (or 5 s pass) and returns
// the stats it judged.
func (p *pair) settle(t *testing.T, want func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.rx.Sweep()
		s := p.rx.Stats()
		if want(s) || time.Now().After(deadline) {
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
}
