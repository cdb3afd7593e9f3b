package rx

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"yolk/mm/phys"
)

// Mode is where the decision to drop a frame is taken.
type Mode uint8

const (
	// ClassifyFirst (yolk's way) reads the headers in the ring buffer,
	// decides whether the frame is for a memalloc socket, and charges it
	// in that socket's context; a frame that cannot be charged is dropped
	// before anything is copied or allocated.
	ClassifyFirst Mode = iota
	// AllocThenDrop is Linux's (since 3.6): every frame is charged as if
	// it might be critical, reserve included, copied into a packet, and
	// only then dropped if its memory came from the reserve and it is not
	// for a memalloc socket (sk_filter_trim_cap's skb_pfmemalloc check).
	AllocThenDrop
)

func (m Mode) String() string {
	if m == AllocThenDrop {
		return "alloc-then-drop"
	}
	return "classify-first"
}

// Config configures a Receiver.
type Config struct {
	// Pool is the pool receive memory is charged to. Nil charges nothing:
	// frames are delivered on the Go heap alone, as before yolk owned the
	// ring (counted as uncharged).
	Pool *phys.Pool
	Mode Mode
	// ReserveFrames bounds the frames below min the network may hold at
	// once (default DefaultReserveFrames).
	ReserveFrames int
	// Addr is the interface's IPv4 address: ARP for it is critical.
	Addr netip.Addr
	// ARPPerSecond bounds the ARP frames a second treated as critical
	// (default 10, burst as large); the rest are charged as ordinary.
	ARPPerSecond int
	// Registry is the memalloc socket set (default: a new, empty one).
	Registry *Registry
}

// DefaultReserveFrames is the default bound on the reserve the network may
// hold: 64 frames, 256 KiB, room for 128 full-size segments in flight on
// memalloc connections. The swap writer keeps at most 64 requests in
// flight, each answered by one small reply.
const DefaultReserveFrames = 64

// MemallocWindow is the TCP receive buffer a memalloc connection may have
// for the default bound. A connection's out-of-order queue can hold a
// whole window; if the window's segments could fill the reserve, the one
// segment that lets them be read (the retransmission of the gap) would
// find the reserve full and be dropped, every time. 64 KiB of gVisor's
// receive buffer (which counts each segment's overhead too) is at most 44
// full-size segments, 22 frames: two connections and ARP fit in 64.
const MemallocWindow = 64 << 10

// Inbound is where delivered packets go: the link endpoint's dispatcher
// (channel.Endpoint.InjectInbound, or Endpoint's).
type Inbound interface {
	InjectInbound(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)
}

// Receiver classifies, charges and delivers received frames. Its methods
// are safe for concurrent use; Receive is called by one ring drainer at a
// time.
type Receiver struct {
	link Inbound
	reg  *Registry
	now  func() time.Time

	mu     sync.Mutex // the charger, the fresh and held lists, the counters, cfg.Pool, cfg.Mode
	cfg    Config
	c      charger
	fresh  []heldCharge  // released packets whose own views were not yet released (see released)
	held   []*heldCharge // packets released by the stack whose memory it still holds
	heldCh chan struct{} // signalled when fresh or held becomes non-empty (for the sweeper)
	stats  Stats
	arpTok float64
	arpAt  time.Time
}

// heldCharge is a charge whose packet gVisor released while a clone of it
// lives on (TCP's receive and out-of-order queues hold a clone of every
// segment: newIncomingSegment). Its chunk is watched through our own view
// of it until we hold the last reference.
type heldCharge struct {
	ch   *charge
	view *buffer.View
}

// New returns a Receiver delivering to link.
func New(cfg Config, link Inbound) *Receiver {
	if cfg.ReserveFrames <= 0 {
		cfg.ReserveFrames = DefaultReserveFrames
	}
	if cfg.ARPPerSecond <= 0 {
		cfg.ARPPerSecond = 10
	}
	if cfg.Registry == nil {
		cfg.Registry = new(Registry)
	}
	r := &Receiver{link: link, reg: cfg.Registry, now: time.Now, cfg: cfg, heldCh: make(chan struct{}, 1)}
	r.c = charger{pool: cfg.Pool, bound: cfg.ReserveFrames, accts: map[Tuple]*account{}, other: account{other: true}, byPool: map[*phys.Pool]int{}}
	r.arpTok = float64(cfg.ARPPerSecond)
	return r
}

// Registry is the memalloc socket set the receiver consults.
func (r *Receiver) Registry() *Registry { return r.reg }

// SetPool charges receive memory to p from now on (nil: to nothing).
// Charges taken before stay with the pool they came from.
func (r *Receiver) SetPool(p *phys.Pool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg.Pool, r.c.pool = p, p
}

// Pool is the pool receive memory is charged to now.
func (r *Receiver) Pool() *phys.Pool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg.Pool
}

// ChargedIn is the number of p's frames the receive path holds now.
func (r *Receiver) ChargedIn(p *phys.Pool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c.byPool[p]
}

// ResetPeaks starts the peak figures (charged and reserve frames) again
// from what is held now, for a run that wants its own.
func (r *Receiver) ResetPeaks() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.c.peak, r.c.pagePk, r.c.otherResPk = r.c.reserve, r.c.pages, r.c.otherRes
}

// SetMode changes where frames are dropped.
func (r *Receiver) SetMode(m Mode) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg.Mode = m
}

// SetReserveFrames changes the bound on the reserve the network holds.
func (r *Receiver) SetReserveFrames(n int) {
	if n <= 0 {
		n = DefaultReserveFrames
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg.ReserveFrames, r.c.bound = n, n
}

// Receive handles one frame (without its frame check sequence) in a ring
// buffer. It does not keep frame: on return the buffer may go back to the
// hardware.
func (r *Receiver) Receive(frame []byte) {
	f, perr := Parse(frame)

	r.mu.Lock()
	r.stats.Frames++
	memalloc := perr == nil && r.critical(&f)
	cl := classOrdinary
	if memalloc || r.cfg.Mode == AllocThenDrop {
		cl = classMemalloc
	}
	if perr != nil && r.cfg.Mode == ClassifyFirst {
		r.drop(DropMalformed, false)
		r.mu.Unlock()
		return
	}
	var ch *charge
	if r.c.pool != nil {
		var cerr chargeError
		if ch, cerr = r.c.take(cl, &f, memalloc); cerr != chargeOK {
			switch cerr {
			case chargeReserveBound:
				r.drop(DropReserveBound, false)
			case chargeReserveEmpty:
				r.drop(DropReserveEmpty, false)
			default:
				r.drop(DropWatermark, false)
			}
			if memalloc {
				r.stats.MemallocDrops++
			}
			r.mu.Unlock()
			return
		}
	} else {
		r.stats.Uncharged++
	}
	r.mu.Unlock()

	// The copy: from here on the frame has memory of its own.
	pkt := r.packet(frame, &f, ch)

	if r.cfg.Mode == AllocThenDrop {
		// Linux's order: the packet exists, then the socket layer looks.
		reason := dropNone
		switch {
		case perr != nil:
			reason = DropMalformed
		case ch != nil && ch.page.pfmem && !memalloc:
			reason = DropPfmemalloc
		}
		if reason != dropNone {
			r.mu.Lock()
			r.drop(reason, true)
			r.mu.Unlock()
			pkt.DecRef()
			r.settle() // uncharges
			return
		}
	}

	r.mu.Lock()
	r.stats.Delivered++
	if ch != nil && ch.page.pfmem {
		r.stats.PfmemallocAdmits++
	}
	if memalloc {
		r.stats.MemallocFrames++
	}
	r.mu.Unlock()

	r.link.InjectInbound(tcpip.NetworkProtocolNumber(binary.BigEndian.Uint16(frame[12:14])), pkt)
	pkt.DecRef()
	r.settle()
}

// packet copies frame into a packet for the stack. A TCP or UDP payload
// gets a view (and a chunk) of its own, and hold is a second view of it:
// the headers are pulled up and parsed in their own view, which the
// stack may rewrite or copy at will, while the payload's chunk is only
// ever shared, by the clones transport queues keep, so its reference
// count says when the stack has let go of the payload. (A view shared
// while its headers are pulled up would be copied by gVisor, on write.)
//
// The packet's release runs released, which returns ch when the stack no
// longer holds the payload; with no charge there is nothing to watch.
func (r *Receiver) packet(frame []byte, f *Frame, ch *charge) *stack.PacketBuffer {
	opts := stack.PacketBufferOptions{ReserveHeaderBytes: etherHeaderLen}
	if f.Data > 0 && f.End > f.Data {
		opts.Payload = buffer.MakeWithView(buffer.NewViewWithData(frame[etherHeaderLen:f.Data]))
		data := buffer.NewViewWithData(frame[f.Data:f.End])
		if ch != nil {
			hold := data.Clone()
			opts.OnRelease = func() { r.released(ch, hold) }
		}
		tail := buffer.MakeWithView(data)
		opts.Payload.Merge(&tail) // moves the view: no copy, unlike Append
	} else {
		opts.Payload = buffer.MakeWithData(frame[min(etherHeaderLen, len(frame)):])
		if ch != nil {
			opts.OnRelease = func() { r.released(ch, nil) }
		}
	}
	pkt := stack.NewPacketBuffer(opts)
	copy(pkt.LinkHeader().Push(etherHeaderLen), frame[:min(etherHeaderLen, len(frame))])
	return pkt
}

// critical reports whether f may be charged below min. Called with r.mu
// held.
func (r *Receiver) critical(f *Frame) bool {
	switch f.Kind {
	case KindTCP:
		return r.reg.Memalloc(f)
	case KindARP:
		if f.ARPTarget != r.cfg.Addr || !r.cfg.Addr.IsValid() {
			return false
		}
		// A token bucket: ARP for us is critical (without it the server's
		// replies cannot be routed back) but a flood of it is not.
		now := r.now()
		if !r.arpAt.IsZero() {
			r.arpTok = min(float64(r.cfg.ARPPerSecond), r.arpTok+now.Sub(r.arpAt).Seconds()*float64(r.cfg.ARPPerSecond))
		}
		r.arpAt = now
		if r.arpTok < 1 {
			r.stats.ARPRateLimited++
			return false
		}
		r.arpTok--
		return true
	}
	return false
}

func (r *Receiver) drop(reason DropReason, allocated bool) {
	r.stats.Drops[reason]++
	if allocated {
		r.stats.AllocatedThenDropped++
	}
}

// released runs when gVisor frees the packet Receive delivered: as the
// last reference to it is dropped, on whichever goroutine drops it, and
// before the packet releases its own views (PacketBuffer.DecRef runs
// OnRelease first). So the payload's chunk is still the packet's here,
// and whether a clone lives on cannot be told yet: the charge waits on
// the fresh list for settle, which Receive runs as soon as its own
// DecRef returns and Sweep runs for releases on other goroutines.
func (r *Receiver) released(ch *charge, hold *buffer.View) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if hold == nil {
		r.c.release(ch)
		return
	}
	r.fresh = append(r.fresh, heldCharge{ch: ch, view: hold})
	if len(r.fresh) == 1 {
		r.wakeSweeper() // for a release no Receive follows
	}
}

// wakeSweeper tells StartSweeper's goroutine there is something to look
// at. Called with r.mu held.
func (r *Receiver) wakeSweeper() {
	select {
	case r.heldCh <- struct{}{}:
	default:
	}
}

// settle judges the fresh charges: one whose chunk only our view still
// references is returned at once, one that a transport queue's clone
// holds goes on the held list for Sweep. A packet released on another
// goroutine may not have released its views yet: it goes on the held
// list too, and the next sweep returns it.
func (r *Receiver) settle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.settleLocked()
}

func (r *Receiver) settleLocked() {
	for _, f := range r.fresh {
		if chunkRefs(f.view) > 1 {
			r.held = append(r.held, &heldCharge{ch: f.ch, view: f.view})
			if len(r.held) == 1 {
				r.wakeSweeper()
			}
			continue
		}
		f.view.Release()
		r.c.release(f.ch)
	}
	clear(r.fresh)
	r.fresh = r.fresh[:0]
}

// Sweep uncharges the frames whose memory the stack has let go of since it
// released their packets, and reports how many charges it still holds
// that way. The ring drainer calls it on each interrupt, and Start's
// sweeper while any are held.
func (r *Receiver) Sweep() (held int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.settleLocked()
	keep := r.held[:0]
	for _, h := range r.held {
		if chunkRefs(h.view) > 1 {
			keep = append(keep, h)
			continue
		}
		h.view.Release()
		r.c.release(h.ch)
	}
	clear(r.held[len(keep):])
	r.held = keep
	return len(keep)
}

// StartSweeper runs Sweep every period while the stack holds charged
// memory, until stop is closed (nil: never): a connection whose
// application reads its data long after the last frame arrived must still
// get its charge back. With nothing held it sleeps until something is.
func (r *Receiver) StartSweeper(period time.Duration, stop <-chan struct{}) {
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-r.heldCh:
			}
			for held := 1; held > 0; held = r.Sweep() {
				select {
				case <-stop:
					return
				case <-time.After(period):
				}
			}
		}
	}()
}
