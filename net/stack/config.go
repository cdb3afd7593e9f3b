// Package stack brings up yolk's TCP/IP stack: gVisor's netstack, attached
// on the image to an i.MX6 ENET controller through imx-enet.
//
// Addressing is static. The defaults suit QEMU user networking, whose
// virtual LAN is 10.0.2.0/24 with the gateway (and the host's loopback) at
// 10.0.2.2; the guest takes 10.0.2.15, the address QEMU's DHCP server
// would have given it. Boot parameters ip=, netmask=, gw= and mac=
// override them for a real network.
//
// Receive is interrupt driven, not polled: the ENET raises RXF for each
// received frame; the board's interrupt service goroutine (board/imx6ul) is
// woken by the IRQ, and the handler registered here acknowledges it and
// drains the receive ring into gVisor. The CPU idles in WFI with the
// generic timer armed for the next Go timer, so an idle image does not spin
// the only core, and a frame is handled as soon as the scheduler runs the
// woken goroutine. A paced poll loop would either add its period to every
// round trip or burn the core that reclaim and faults need.
package stack

import (
	"fmt"
	"net"

	"yolk/runtime/cmdline"
)

// Config is the static IPv4 configuration of the interface.
type Config struct {
	Addr    string // e.g. 10.0.2.15
	Netmask string // e.g. 255.255.255.0
	Gateway string // e.g. 10.0.2.2
	MAC     string // locally administered unicast
}

// Default is the QEMU user-networking configuration. The MAC is locally
// administered ("79:6f:6c:6b" spells yolk).
var Default = Config{
	Addr:    "10.0.2.15",
	Netmask: "255.255.255.0",
	Gateway: "10.0.2.2",
	MAC:     "02:79:6f:6c:6b:01",
}

// FromParams overrides Default with ip=, netmask=, gw= and mac= and
// validates the result.
func FromParams(p cmdline.Params) (Config, error) {
	c := Config{
		Addr:    p.String("ip", Default.Addr),
		Netmask: p.String("netmask", Default.Netmask),
		Gateway: p.String("gw", Default.Gateway),
		MAC:     p.String("mac", Default.MAC),
	}
	return c, c.Validate()
}

// Validate checks that the addresses are IPv4, the netmask is contiguous,
// the gateway is on the interface's subnet and the MAC is unicast.
func (c Config) Validate() error {
	ip := net.ParseIP(c.Addr).To4()
	if ip == nil {
		return fmt.Errorf("net: ip=%q is not an IPv4 address", c.Addr)
	}
	mask := net.ParseIP(c.Netmask).To4()
	if mask == nil {
		return fmt.Errorf("net: netmask=%q is not an IPv4 netmask", c.Netmask)
	}
	ones, bits := net.IPMask(mask).Size()
	if bits == 0 || ones == 0 {
		return fmt.Errorf("net: netmask=%q is not contiguous", c.Netmask)
	}
	gw := net.ParseIP(c.Gateway).To4()
	if gw == nil {
		return fmt.Errorf("net: gw=%q is not an IPv4 address", c.Gateway)
	}
	subnet := net.IPNet{IP: ip.Mask(net.IPMask(mask)), Mask: net.IPMask(mask)}
	if !subnet.Contains(gw) {
		return fmt.Errorf("net: gateway %s is not on %s", gw, subnet.String())
	}
	if gw.Equal(ip) {
		return fmt.Errorf("net: gateway and interface share address %s", ip)
	}
	hw, err := net.ParseMAC(c.MAC)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("net: mac=%q is not a 48-bit MAC address", c.MAC)
	}
	if hw[0]&1 != 0 {
		return fmt.Errorf("net: mac=%q is a multicast address", c.MAC)
	}
	return nil
}

// Prefix returns the interface address in CIDR notation.
func (c Config) Prefix() string {
	ones, _ := net.IPMask(net.ParseIP(c.Netmask).To4()).Size()
	return fmt.Sprintf("%s/%d", c.Addr, ones)
}
