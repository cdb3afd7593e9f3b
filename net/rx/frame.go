package rx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Header sizes and the values the classifier reads, from the wire formats
// (IEEE 802.3, RFC 826, RFC 791, RFC 793, RFC 768).
const (
	etherHeaderLen = 14
	arpLen         = 28 // Ethernet/IPv4 ARP body
	ipv4MinLen     = 20
	tcpMinLen      = 20
	udpLen         = 8

	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeVLAN = 0x8100

	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17

	arpRequest = 1
	arpReply   = 2

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// Kind is what a frame carries, as far as the classifier looks.
type Kind uint8

const (
	KindOther    Kind = iota // an EtherType the stack does not speak (IPv6, VLAN tags, ...)
	KindARP                  // an Ethernet/IPv4 ARP request or reply
	KindIPv4                 // IPv4 with a transport the classifier does not parse (ICMP, ...)
	KindFragment             // an IPv4 fragment: never critical
	KindTCP
	KindUDP
)

var kindNames = [...]string{"other", "arp", "ipv4", "fragment", "tcp", "udp"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Tuple names a TCP or UDP flow from the receiver's side: Local is this
// machine. It is comparable, the key of the memalloc registry and of the
// per-socket accounts.
type Tuple struct {
	Proto  uint8 // 6 (TCP) or 17 (UDP)
	Local  netip.AddrPort
	Remote netip.AddrPort
}

func (t Tuple) String() string {
	p := "tcp"
	if t.Proto == protoUDP {
		p = "udp"
	}
	return fmt.Sprintf("%s %s<-%s", p, t.Local, t.Remote)
}

// Frame is what the classifier read from a frame's headers. It holds no
// reference to the frame.
type Frame struct {
	Kind  Kind
	Tuple Tuple // TCP and UDP
	// TCPFlags are the segment's flags (SYN, ACK, RST, ...).
	TCPFlags uint8
	// ARPOp is 1 (request) or 2 (reply); ARPTarget is the address asked
	// for or answered to.
	ARPOp     uint16
	ARPTarget netip.Addr
	// Dst is the IPv4 destination (IPv4 kinds) and Len the frame length.
	Dst netip.Addr
	Len int
	// For TCP and UDP, the transport payload is frame[Data:End]: after
	// the transport header, up to the IPv4 total length (Ethernet pads
	// short frames past it).
	Data, End int
}

// Errors of Parse: a frame that fails them is malformed and dropped before
// anything is charged for it.
var (
	ErrShort     = errors.New("rx: frame shorter than its headers")
	ErrBadHeader = errors.New("rx: header fields out of range")
)

// Parse reads the Ethernet, ARP, IPv4 and TCP/UDP headers of frame (no
// frame check sequence) in place. It never reads outside frame, never
// allocates and never panics; a frame whose headers do not fit, or whose
// IPv4 lengths disagree with the frame, is an error. The IPv4 header
// checksum is not verified here: the stack does that, and a corrupt
// header at worst makes a frame look critical, which costs reserve only up
// to its bound.
func Parse(frame []byte) (Frame, error) {
	f := Frame{Len: len(frame)}
	if len(frame) < etherHeaderLen {
		return f, ErrShort
	}
	l3 := frame[etherHeaderLen:]
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case etherTypeARP:
		return parseARP(f, l3)
	case etherTypeIPv4:
		return parseIPv4(f, l3)
	}
	return f, nil
}

func parseARP(f Frame, b []byte) (Frame, error) {
	if len(b) < arpLen {
		return f, ErrShort
	}
	// Hardware Ethernet (1), protocol IPv4, address lengths 6 and 4.
	if binary.BigEndian.Uint16(b[0:2]) != 1 || binary.BigEndian.Uint16(b[2:4]) != etherTypeIPv4 || b[4] != 6 || b[5] != 4 {
		return f, ErrBadHeader
	}
	f.Kind = KindARP
	f.ARPOp = binary.BigEndian.Uint16(b[6:8])
	f.ARPTarget = netip.AddrFrom4([4]byte(b[24:28]))
	return f, nil
}

func parseIPv4(f Frame, b []byte) (Frame, error) {
	if len(b) < ipv4MinLen {
		return f, ErrShort
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if b[0]>>4 != 4 || ihl < ipv4MinLen || total < ihl {
		return f, ErrBadHeader
	}
	if total > len(b) {
		// Ethernet pads short frames, so the IP total may be shorter than
		// the frame, never longer.
		return f, ErrShort
	}
	f.Kind = KindIPv4
	f.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	src := netip.AddrFrom4([4]byte(b[12:16]))
	// More fragments, or a fragment offset: part of a datagram, whose
	// ports (if any) only the first fragment carries.
	if frag := binary.BigEndian.Uint16(b[6:8]); frag&0x2000 != 0 || frag&0x1fff != 0 {
		f.Kind = KindFragment
		return f, nil
	}
	l4 := b[ihl:total]
	switch proto := b[9]; proto {
	case protoTCP:
		if len(l4) < tcpMinLen {
			return f, ErrShort
		}
		if off := int(l4[12]>>4) * 4; off < tcpMinLen || off > len(l4) {
			return f, ErrBadHeader
		}
		f.Kind = KindTCP
		f.TCPFlags = l4[13]
		f.Tuple = tuple(proto, f.Dst, src, l4)
		f.Data, f.End = etherHeaderLen+ihl+int(l4[12]>>4)*4, etherHeaderLen+total
	case protoUDP:
		if len(l4) < udpLen {
			return f, ErrShort
		}
		if n := int(binary.BigEndian.Uint16(l4[4:6])); n < udpLen || n > len(l4) {
			return f, ErrBadHeader
		}
		f.Kind = KindUDP
		f.Tuple = tuple(proto, f.Dst, src, l4)
		f.Data, f.End = etherHeaderLen+ihl+udpLen, etherHeaderLen+total
	}
	return f, nil
}

func tuple(proto uint8, dst, src netip.Addr, l4 []byte) Tuple {
	return Tuple{
		Proto:  proto,
		Local:  netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4])),
		Remote: netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:2])),
	}
}
