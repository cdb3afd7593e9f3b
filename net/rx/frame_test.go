package rx

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ipv4Frame builds an Ethernet frame carrying an IPv4 packet of proto with
// l4 as its transport bytes.
func ipv4Frame(proto byte, src, dst [4]byte, l4 []byte) []byte {
	f := make([]byte, 14+20+len(l4))
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+len(l4)))
	ip[8] = 64
	ip[9] = proto
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	copy(ip[20:], l4)
	return f
}

func tcpHeader(sport, dport uint16, flags byte, data int) []byte {
	h := make([]byte, 20+data)
	binary.BigEndian.PutUint16(h[0:2], sport)
	binary.BigEndian.PutUint16(h[2:4], dport)
	h[12] = 5 << 4
	h[13] = flags
	return h
}

func TestParse(t *testing.T) {
	peer, us := [4]byte{10, 0, 2, 2}, [4]byte{10, 0, 2, 15}
	f, err := Parse(ipv4Frame(protoTCP, peer, us, tcpHeader(10809, 40000, tcpACK, 100)))
	require.NoError(t, err)
	assert.Equal(t, KindTCP, f.Kind)
	assert.Equal(t, Tuple{Proto: protoTCP, Local: netip.MustParseAddrPort("10.0.2.15:40000"), Remote: netip.MustParseAddrPort("10.0.2.2:10809")}, f.Tuple)
	assert.Equal(t, 14+20+20, f.Data)
	assert.Equal(t, 14+20+20+100, f.End)

	// Ethernet padding after a short datagram is not payload.
	udp := make([]byte, 8+4)
	binary.BigEndian.PutUint16(udp[0:2], 53)
	binary.BigEndian.PutUint16(udp[2:4], 9000)
	binary.BigEndian.PutUint16(udp[4:6], 12)
	frame := append(ipv4Frame(protoUDP, peer, us, udp), make([]byte, 14)...)
	f, err = Parse(frame)
	require.NoError(t, err)
	assert.Equal(t, KindUDP, f.Kind)
	assert.Equal(t, 14+20+8+4, f.End)

	frag := ipv4Frame(protoTCP, peer, us, tcpHeader(1, 2, tcpSYN|tcpACK, 0))
	frag[14+6] = 0x20 // more fragments
	f, err = Parse(frag)
	require.NoError(t, err)
	assert.Equal(t, KindFragment, f.Kind, "a first fragment is a fragment, ports or not")

	for name, b := range map[string][]byte{
		"runt":           make([]byte, 13),
		"ip short":       ipv4Frame(protoTCP, peer, us, nil)[:30],
		"tcp short":      ipv4Frame(protoTCP, peer, us, make([]byte, 10)),
		"udp short":      ipv4Frame(protoUDP, peer, us, make([]byte, 4)),
		"arp short":      append([]byte{12: 0x08, 13: 0x06}, make([]byte, 20)...),
		"total too long": func() []byte { b := ipv4Frame(protoUDP, peer, us, udp); b[16] = 0xff; return b }(),
	} {
		_, err := Parse(b)
		assert.ErrorIs(t, err, ErrShort, name)
	}
	for name, b := range map[string][]byte{
		"ihl 4": func() []byte { b := ipv4Frame(protoTCP, peer, us, tcpHeader(1, 2, 0, 0)); b[14] = 0x44; return b }(),
		"ipv6 in v4 type": func() []byte {
			b := ipv4Frame(protoTCP, peer, us, tcpHeader(1, 2, 0, 0))
			b[14] = 0x65
			return b
		}(),
		"tcp offset past end": func() []byte {
			b := ipv4Frame(protoTCP, peer, us, tcpHeader(1, 2, 0, 0))
			b[14+20+12] = 15 << 4
			return b
		}(),
		"udp length 3": func() []byte {
			b := ipv4Frame(protoUDP, peer, us, udp)
			binary.BigEndian.PutUint16(b[14+20+4:], 3)
			return b
		}(),
	} {
		_, err := Parse(b)
		assert.ErrorIs(t, err, ErrBadHeader, name)
	}
}

func TestRegistry(t *testing.T) {
	var r Registry
	conn := Tuple{Proto: protoTCP, Local: netip.MustParseAddrPort("10.0.2.15:40000"), Remote: netip.MustParseAddrPort("10.0.2.2:10809")}
	seg := func(local uint16, flags byte) *Frame {
		f := Frame{Kind: KindTCP, TCPFlags: flags, Tuple: conn}
		f.Tuple.Local = netip.AddrPortFrom(conn.Local.Addr(), local)
		return &f
	}
	assert.False(t, r.Memalloc(seg(40000, tcpACK)), "an empty registry")
	unregister := r.Register(conn)
	assert.Equal(t, 1, r.Len())
	assert.True(t, r.Memalloc(seg(40000, tcpACK)))
	assert.False(t, r.Memalloc(seg(40001, tcpACK)), "data on another connection to the same server")
	assert.True(t, r.Memalloc(seg(40001, tcpSYN|tcpACK)), "a reconnect's SYN-ACK from the server")
	assert.True(t, r.Memalloc(seg(40001, tcpRST)), "a reset from the server")
	assert.False(t, r.Memalloc(seg(40001, tcpSYN)), "a SYN from the server is a new passive connection")
	udp := *seg(40000, 0)
	udp.Kind, udp.Tuple.Proto = KindUDP, protoUDP
	assert.False(t, r.Memalloc(&udp), "UDP is never memalloc")
	frag := *seg(40000, tcpACK)
	frag.Kind = KindFragment
	assert.False(t, r.Memalloc(&frag), "fragments never are")

	again := r.Register(conn)
	unregister()
	unregister()
	assert.True(t, r.Memalloc(seg(40000, tcpACK)), "registered twice, unregistered once")
	again()
	assert.False(t, r.Memalloc(seg(40000, tcpACK)))
	assert.False(t, r.Memalloc(seg(40001, tcpSYN|tcpACK)))
	assert.Zero(t, r.Len())
}

// FuzzParse feeds the classifier arbitrary frames. It must never panic,
// never read past the frame (the frame is cut from a larger buffer with
// no spare capacity, and what lies beyond must not change the result),
// and what it reports must lie within the frame.
func FuzzParse(f *testing.F) {
	peer, us := [4]byte{10, 0, 2, 2}, [4]byte{10, 0, 2, 15}
	f.Add(ipv4Frame(protoTCP, peer, us, tcpHeader(10809, 40000, tcpACK, 10)))
	f.Add(ipv4Frame(protoUDP, peer, us, []byte{0, 53, 0x23, 0x28, 0, 8, 0, 0}))
	f.Add(append([]byte{12: 0x08, 13: 0x06}, []byte{0, 1, 8, 0, 6, 4, 0, 1, 27: 0}...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		big := append(append([]byte{}, b...), 0xff, 0xff, 0xff, 0xff)
		frame := big[:len(b):len(b)]
		got, err := Parse(frame)
		for i := range big[len(b):] {
			big[len(b)+i] = 0
		}
		again, err2 := Parse(big[:len(b):len(b)])
		if got != again || (err == nil) != (err2 == nil) {
			t.Fatalf("result depends on bytes past the frame: %+v / %+v", got, again)
		}
		if err != nil {
			return
		}
		switch got.Kind {
		case KindTCP, KindUDP:
			if got.Data < etherHeaderLen+ipv4MinLen || got.Data > got.End || got.End > len(b) {
				t.Fatalf("payload [%d:%d] outside a %d-byte frame", got.Data, got.End, len(b))
			}
			if got.Tuple.Proto != protoTCP && got.Tuple.Proto != protoUDP {
				t.Fatalf("tuple protocol %d", got.Tuple.Proto)
			}
		case KindARP:
			if len(b) < etherHeaderLen+arpLen {
				t.Fatalf("ARP in %d bytes", len(b))
			}
		}
		var r Registry
		r.Register(got.Tuple)
		if (got.Kind == KindFragment || got.Kind == KindUDP) && r.Memalloc(&got) {
			t.Fatal("a fragment or UDP datagram judged memalloc")
		}
	})
}
