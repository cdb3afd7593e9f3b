// Package stack brings up yolk's TCP/IP stack: gVisor's netstack, attached
// on the image to an i.MX6 ENET controller.
//
// Addressing is static. The defaults suit QEMU user networking, whose
// virtual LAN is 10.0.2.0/24 with the gateway (and the host's loopback) at
// 10.0.2.2; the guest takes 10.0.2.15, the address QEMU's DHCP server
// would have given it. Boot parameters ip=, netmask=, gw= and mac=
// override them for a real network; ip=off, as on Linux, leaves the
// network down.
//
// yolk owns the receive ring: 64 legacy descriptors and their 1536-byte
// buffers in the board's DMA region, laid out by net/rx's Ring, which
// hands each frame to net/rx's Receiver straight from its buffer. The
// Receiver classifies the frame, charges it (once a pool is attached) and
// copies it once into a gVisor packet; the buffer goes back to the
// controller at once. Start points the controller at this ring after
// TamaGo has set it up, by restarting it (ECR[ETHEREN]) with a new RDSR.
//
// The rest is still TamaGo's enet and imx-enet:
//   - TamaGo's ENET.Init, through imx-enet's NIC.Init: clocks, reset, MAC
//     address, MII and PHY setup;
//   - TamaGo's transmit ring and ENET.Tx, fed by imx-enet's notification,
//     which moves each packet gVisor queues on the channel endpoint to it;
//   - imx-enet's Interface as the adapter for DialContext and for the Go
//     runtime's net package (net.SocketFunc).
//
// Not used: TamaGo's receive ring and ENET.Rx, which allocates a slice per
// frame, and imx-enet's NIC.Rx, which copies it again into a packet it
// never releases. TamaGo's receive ring stays reserved in the DMA region,
// idle.
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
	"errors"
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
	// Off leaves the network down (ip=off); the addresses are unset.
	Off bool
}

// Default is the QEMU user-networking configuration. The MAC is locally
// administered ("79:6f:6c:6b" spells yolk).
var Default = Config{
	Addr:    "10.0.2.15",
	Netmask: "255.255.255.0",
	Gateway: "10.0.2.2",
	MAC:     "02:79:6f:6c:6b:01",
}

// Params are the image's network parameters, with Default's values.
var Params = []cmdline.Spec{
	{Name: "ip", Value: addrOrOff{}, Default: Default.Addr, Help: "the interface's IPv4 address, or off to leave the network down"},
	{Name: "netmask", Value: netmask{}, Default: Default.Netmask, Help: "the interface's netmask"},
	{Name: "gw", Value: cmdline.IPv4{}, Default: Default.Gateway, Help: "the default gateway, on the interface's subnet"},
	{Name: "mac", Value: cmdline.MAC{}, Default: Default.MAC, Help: "the interface's MAC address"},
}

// FromArgs returns the configuration the parameters ask for, or one with
// Off set for ip=off, and checks what no single parameter can: that the
// gateway is on the interface's subnet and is not the interface itself.
func FromArgs(a cmdline.Args) (Config, error) {
	c := Config{
		Addr:    a.String("ip"),
		Netmask: a.String("netmask"),
		Gateway: a.String("gw"),
		MAC:     a.String("mac"),
	}
	if c.Addr == "off" {
		return Config{Off: true}, nil
	}
	return c, c.Validate()
}

// Validate checks that the addresses are IPv4, the netmask is contiguous,
// the gateway is on the interface's subnet and the MAC is unicast. Its
// errors name the parameter, its value and what is wanted.
func (c Config) Validate() error {
	if c.Off {
		return nil
	}
	for _, p := range []struct {
		key, v string
		value  cmdline.Value
	}{{"ip", c.Addr, cmdline.IPv4{}}, {"netmask", c.Netmask, netmask{}}, {"gw", c.Gateway, cmdline.IPv4{}}, {"mac", c.MAC, cmdline.MAC{}}} {
		if err := p.value.Check(p.v); err != nil {
			return &cmdline.ParamError{Key: p.key, Value: p.v, Reason: err, Allowed: p.value.String()}
		}
	}
	ip, mask, gw := net.ParseIP(c.Addr).To4(), net.IPMask(net.ParseIP(c.Netmask).To4()), net.ParseIP(c.Gateway).To4()
	subnet := net.IPNet{IP: ip.Mask(mask), Mask: mask}
	if !subnet.Contains(gw) {
		return fmt.Errorf("gw=%s is not on %s, the subnet of ip=%s netmask=%s: want an address on it", c.Gateway, subnet.String(), c.Addr, c.Netmask)
	}
	if gw.Equal(ip) {
		return fmt.Errorf("gw=%s is the interface's own address ip=%s: want another address on %s", c.Gateway, c.Addr, subnet.String())
	}
	return nil
}

// addrOrOff is ip='s value: an IPv4 address, or off.
type addrOrOff struct{}

func (addrOrOff) Check(s string) error {
	if s == "off" {
		return nil
	}
	return cmdline.IPv4{}.Check(s)
}

func (addrOrOff) String() string { return "an IPv4 address, or off" }

// netmask is a contiguous IPv4 netmask of /1 to /32.
type netmask struct{}

func (netmask) Check(s string) error {
	if err := (cmdline.IPv4{}).Check(s); err != nil {
		return err
	}
	ones, bits := net.IPMask(net.ParseIP(s).To4()).Size()
	if bits == 0 || ones == 0 {
		return errors.New("not a contiguous netmask")
	}
	return nil
}

func (netmask) String() string { return "a contiguous IPv4 netmask (e.g. 255.255.255.0)" }

// Prefix returns the interface address in CIDR notation.
func (c Config) Prefix() string {
	ones, _ := net.IPMask(net.ParseIP(c.Netmask).To4()).Size()
	return fmt.Sprintf("%s/%d", c.Addr, ones)
}
