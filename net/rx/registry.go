package rx

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Registry is the set of memalloc sockets (Linux's sk_set_memalloc): the
// TCP connections whose received data frees memory, such as the NBD
// connection behind swap. Frames for them may be charged below min.
//
// Lookups run on the receive path for every frame and take no lock: the
// set is an immutable snapshot replaced on each change, which is rare (a
// connect or reconnect of a block device).
type Registry struct {
	mu   sync.Mutex // serialises writers
	snap atomic.Pointer[registrySnap]
}

type registrySnap struct {
	conns map[Tuple]int // a tuple may be registered more than once
	// remotes counts registered connections per remote endpoint: a
	// SYN-ACK or RST from one is critical whatever our port, so that a
	// reconnect completes, and a reset is seen, under pressure.
	remotes map[netip.AddrPort]int
}

// Register marks t memalloc until the returned function is called (once).
func (r *Registry) Register(t Tuple) (unregister func()) {
	r.update(func(s *registrySnap) {
		s.conns[t]++
		s.remotes[t.Remote]++
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			r.update(func(s *registrySnap) {
				if s.conns[t]--; s.conns[t] <= 0 {
					delete(s.conns, t)
				}
				if s.remotes[t.Remote]--; s.remotes[t.Remote] <= 0 {
					delete(s.remotes, t.Remote)
				}
			})
		})
	}
}

// RegisterConn registers a TCP connection by its addresses; it is the
// hook a block device client calls on each connection it makes.
func (r *Registry) RegisterConn(c net.Conn) (unregister func(), err error) {
	local, err1 := addrPort(c.LocalAddr())
	remote, err2 := addrPort(c.RemoteAddr())
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("rx: memalloc needs a TCP/IPv4 connection: local %v, remote %v", c.LocalAddr(), c.RemoteAddr())
	}
	return r.Register(Tuple{Proto: protoTCP, Local: local, Remote: remote}), nil
}

func addrPort(a net.Addr) (netip.AddrPort, error) {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("not a TCP address: %v", a)
	}
	ap := t.AddrPort()
	if !ap.Addr().Unmap().Is4() {
		return netip.AddrPort{}, fmt.Errorf("not IPv4: %v", a)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func (r *Registry) update(change func(*registrySnap)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := &registrySnap{conns: map[Tuple]int{}, remotes: map[netip.AddrPort]int{}}
	if old := r.snap.Load(); old != nil {
		for k, v := range old.conns {
			next.conns[k] = v
		}
		for k, v := range old.remotes {
			next.remotes[k] = v
		}
	}
	change(next)
	r.snap.Store(next)
}

// Len is the number of memalloc connections registered.
func (r *Registry) Len() int {
	if s := r.snap.Load(); s != nil {
		return len(s.conns)
	}
	return 0
}

// Memalloc reports whether f is for a memalloc connection: a TCP segment
// of a registered connection, or a SYN-ACK or RST from the remote end of
// one. Nothing else is, UDP and fragments included.
func (r *Registry) Memalloc(f *Frame) bool {
	s := r.snap.Load()
	if s == nil || f.Kind != KindTCP {
		return false
	}
	if _, ok := s.conns[f.Tuple]; ok {
		return true
	}
	synAck := f.TCPFlags&(tcpSYN|tcpACK) == tcpSYN|tcpACK
	if synAck || f.TCPFlags&tcpRST != 0 {
		_, ok := s.remotes[f.Tuple.Remote]
		return ok
	}
	return false
}

func (r *Registry) isRegistered(t Tuple) bool {
	if s := r.snap.Load(); s != nil {
		_, ok := s.conns[t]
		return ok
	}
	return false
}
