package rx

import (
	"fmt"
	"io"
	"slices"
)

// DropReason says why a frame was dropped before the stack saw it.
type DropReason uint8

const (
	dropNone DropReason = iota
	// DropMalformed: headers that do not fit the frame.
	DropMalformed
	// DropRingError: the controller flagged the frame (CRC, overrun,
	// truncated, too long or short).
	DropRingError
	// DropWatermark: an ordinary frame whose charge would take the pool
	// below its watermark.
	DropWatermark
	// DropReserveBound: a memalloc frame with the pool below its
	// watermark and the network's reserve at its bound.
	DropReserveBound
	// DropPfmemalloc: (AllocThenDrop) a frame charged to the reserve that
	// is not for a memalloc socket, dropped after its copy.
	DropPfmemalloc
	// DropReserveEmpty: a frame that could be charged to the reserve
	// (a memalloc one, or any under AllocThenDrop), within the bound, with
	// the pool's reserve exhausted: no frame left even below min.
	DropReserveEmpty
	// NrDropReasons bounds the reasons (Stats.Drops is indexed by them;
	// its element 0 is unused).
	NrDropReasons
)

var dropNames = [NrDropReasons]string{"", "malformed", "ring_error", "watermark", "reserve_bound", "pfmemalloc", "reserve_empty"}

func (d DropReason) String() string {
	if d < NrDropReasons {
		return dropNames[d]
	}
	return fmt.Sprintf("drop(%d)", uint8(d))
}

// Stats are the receive path's counters; frames are pool frames (4 KiB),
// slots are 2 KiB halves of them, one per received frame held.
type Stats struct {
	Frames    uint64 // frames handed to Receive
	Delivered uint64 // handed to the stack
	Drops     [NrDropReasons]uint64
	// AllocatedThenDropped counts drops that came after the copy
	// (AllocThenDrop's); ClassifyFirst keeps it at zero.
	AllocatedThenDropped uint64
	PfmemallocAdmits     uint64 // delivered on reserve frames (Linux's PFMEMALLOC skbs)
	MemallocFrames       uint64 // delivered for memalloc sockets
	MemallocDrops        uint64 // frames for memalloc sockets dropped (at the reserve bound, or with the reserve empty)
	ARPRateLimited       uint64 // ARP for us past the rate, charged as ordinary
	Uncharged            uint64 // delivered with no pool to charge

	MemallocSocks int // registered memalloc connections
	Charged       int // frames held now
	ChargedPeak   int
	Slots         int // slots held now
	Held          int // of Slots, those whose packets the stack released but whose memory a TCP queue still holds
	Reserve       int // reserve frames held now
	ReservePeak   int
	// ReservePeakOther is the most received frames for no memalloc socket
	// held on reserve frames at once: AllocThenDrop's copies before it
	// drops them. ClassifyFirst never charges such a frame to the
	// reserve, so it keeps this at zero.
	ReservePeakOther int
	ReserveBound     int
	FreeErrors       uint64 // frames the pool refused back (a bug)
}

// Dropped is the total of drops for every reason.
func (s Stats) Dropped() uint64 {
	var n uint64
	for _, d := range s.Drops {
		n += d
	}
	return n
}

// Stats returns a snapshot of the counters.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.MemallocSocks = r.reg.Len()
	s.Charged, s.ChargedPeak, s.Slots = r.c.pages, r.c.pagePk, r.c.slots
	s.Held = len(r.held) + len(r.fresh)
	s.Reserve, s.ReservePeak, s.ReserveBound = r.c.reserve, r.c.peak, r.c.bound
	s.ReservePeakOther = r.c.otherResPk
	s.FreeErrors = r.c.freeErrors
	return s
}

// RingError counts a frame the controller flagged as bad.
func (r *Receiver) RingError() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Frames++
	r.drop(DropRingError, false)
}

// SocketCharge is one socket's charge now.
type SocketCharge struct {
	Tuple    Tuple
	Memalloc bool
	Slots    int
	Reserve  int // slots on reserve frames
}

// Sockets returns the sockets with memory charged, sorted by tuple; the
// charge of frames that belong to no socket (ARP, ICMP, fragments) is the
// entry with a zero Tuple.
func (r *Receiver) Sockets() []SocketCharge {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []SocketCharge
	if o := r.c.other; o.slots > 0 {
		out = append(out, SocketCharge{Slots: o.slots, Reserve: o.reserve})
	}
	for _, a := range r.c.accts {
		out = append(out, SocketCharge{Tuple: a.tuple, Memalloc: a.memalloc || r.reg.isRegistered(a.tuple), Slots: a.slots, Reserve: a.reserve})
	}
	slices.SortFunc(out, func(a, b SocketCharge) int {
		if c := a.Tuple.Local.Compare(b.Tuple.Local); c != 0 {
			return c
		}
		return a.Tuple.Remote.Compare(b.Tuple.Remote)
	})
	return out
}

// WriteProc writes the counters as /proc/net/yolk_rx: one "Name: value"
// line each, as /proc/meminfo and /proc/net/snmp readers expect, then a
// table of the sockets holding charged memory.
func (r *Receiver) WriteProc(w io.Writer) error {
	s := r.Stats()
	lines := []struct {
		name string
		v    uint64
	}{
		{"RxFrames", s.Frames},
		{"RxDelivered", s.Delivered},
		{"RxDropped", s.Dropped()},
	}
	for d := DropReason(1); d < NrDropReasons; d++ {
		lines = append(lines, struct {
			name string
			v    uint64
		}{"Drop_" + d.String(), s.Drops[d]})
	}
	for _, l := range []struct {
		name string
		v    uint64
	}{
		{"AllocatedThenDropped", s.AllocatedThenDropped},
		{"PfmemallocAdmits", s.PfmemallocAdmits},
		{"MemallocFrames", s.MemallocFrames},
		{"MemallocDrops", s.MemallocDrops},
		{"ARPRateLimited", s.ARPRateLimited},
		{"Uncharged", s.Uncharged},
		{"MemallocSocks", uint64(s.MemallocSocks)},
		{"ChargedFrames", uint64(s.Charged)},
		{"ChargedPeak", uint64(s.ChargedPeak)},
		{"ChargedSlots", uint64(s.Slots)},
		{"HeldByStack", uint64(s.Held)},
		{"ReserveFrames", uint64(s.Reserve)},
		{"ReservePeak", uint64(s.ReservePeak)},
		{"ReservePeakOther", uint64(s.ReservePeakOther)},
		{"ReserveBound", uint64(s.ReserveBound)},
	} {
		lines = append(lines, l)
	}
	for _, l := range lines {
		if _, err := fmt.Fprintf(w, "%-22s %d\n", l.name+":", l.v); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintf(w, "%-5s %-21s %-21s %-8s %5s %7s\n", "proto", "local", "remote", "memalloc", "slots", "reserve"); err != nil {
		return err
	}
	for _, sc := range r.Sockets() {
		proto, local, remote := "-", "-", "-"
		if sc.Tuple.Proto != 0 {
			proto, local, remote = "tcp", sc.Tuple.Local.String(), sc.Tuple.Remote.String()
			if sc.Tuple.Proto == protoUDP {
				proto = "udp"
			}
		}
		m := 0
		if sc.Memalloc {
			m = 1
		}
		if _, err := fmt.Fprintf(w, "%-5s %-21s %-21s %-8d %5d %7d\n", proto, local, remote, m, sc.Slots, sc.Reserve); err != nil {
			return err
		}
	}
	return nil
}

// StatKV is the receive path's part of a "yolk: stat" line.
func (s Stats) StatKV() []any {
	return []any{
		"rx_frames", s.Frames, "rx_drop", s.Dropped(),
		"rx_drop_wmark", s.Drops[DropWatermark], "rx_drop_bound", s.Drops[DropReserveBound], "rx_drop_empty", s.Drops[DropReserveEmpty],
		"rx_drop_pfmem", s.Drops[DropPfmemalloc], "rx_alloc_drop", s.AllocatedThenDropped,
		"rx_pfmem", s.PfmemallocAdmits, "rx_memalloc_socks", s.MemallocSocks, "rx_memalloc_drop", s.MemallocDrops,
		"rx_charged", s.Charged, "rx_reserve", s.Reserve, "rx_reserve_peak", s.ReservePeak,
	}
}
