package rx

import (
	"fmt"
	"sync/atomic"
)

// The i.MX6 ENET receive ring in legacy buffer descriptor format
// (IMX6ULLRM 22.6.13, "Legacy buffer descriptors"; Table 22-35 for the
// receive status bits). With ECR[DBSWP] set, as TamaGo's driver sets it,
// a descriptor is two little-endian words: data length in bits 0-15 and
// status in bits 16-31 of the first, the buffer's physical address in the
// second. The controller fills a descriptor whose E (empty) bit is set and
// clears E; software reads the frame and sets E again to hand it back,
// then writes RDAR to tell the controller a descriptor is free.
const (
	bdEmpty = 1 << 15 // E: owned by the controller
	bdWrap  = 1 << 13 // W: last descriptor of the ring
	bdLast  = 1 << 11 // L: last buffer of a frame
	bdLG    = 1 << 5  // frame length violation
	bdNO    = 1 << 4  // non-octet aligned frame
	bdCR    = 1 << 2  // CRC or frame error
	bdOV    = 1 << 1  // overrun
	bdTR    = 1 << 0  // truncated

	bdErrors = bdLG | bdNO | bdCR | bdOV | bdTR

	// BufSize is a receive buffer's size: the controller's MRBR as TamaGo
	// sets it (the 1518-byte maximum frame rounded up to 64 bytes).
	BufSize = 1536
	// maxFrame and minFrame bound a frame's length with its 4-byte FCS.
	maxFrame = 1518
	minFrame = 42
	fcsLen   = 4
)

// Ring is a receive descriptor ring that yolk owns: descriptors and
// buffers in memory the controller reads and writes (the DMA region on
// the image), frames handed to a Receiver straight from the buffers.
type Ring struct {
	desc []uint32 // two words per descriptor
	bufs [][]byte // one BufSize buffer per descriptor
	next int
	kick func() // tell the controller descriptors are free (RDAR)
	rx   *Receiver
}

// NewRing lays out a ring of len(bufs) descriptors in desc (two words
// each), bufs[i] at physical address addrs[i], every descriptor empty and
// the last marked wrap. kick is called after Drain hands descriptors back.
func NewRing(desc []uint32, bufs [][]byte, addrs []uint32, kick func(), rx *Receiver) (*Ring, error) {
	n := len(bufs)
	switch {
	case n < 2 || len(desc) < 2*n || len(addrs) != n:
		return nil, fmt.Errorf("rx: ring of %d buffers needs %d descriptor words and %d addresses, have %d and %d", n, 2*n, n, len(desc), len(addrs))
	case kick == nil || rx == nil:
		return nil, fmt.Errorf("rx: ring needs a kick function and a receiver")
	}
	for i, b := range bufs {
		if len(b) < BufSize {
			return nil, fmt.Errorf("rx: buffer %d is %d bytes, want %d", i, len(b), BufSize)
		}
		if addrs[i]%64 != 0 {
			return nil, fmt.Errorf("rx: buffer %d at %#x is not 64-byte aligned", i, addrs[i])
		}
	}
	r := &Ring{desc: desc[:2*n], bufs: bufs, kick: kick, rx: rx}
	for i := range bufs {
		atomic.StoreUint32(&r.desc[2*i+1], addrs[i])
		r.handBack(i)
	}
	return r, nil
}

// Len is the number of descriptors.
func (r *Ring) Len() int { return len(r.bufs) }

func (r *Ring) handBack(i int) {
	st := uint32(bdEmpty)
	if i == len(r.bufs)-1 {
		st |= bdWrap
	}
	// The store is the release: the frame has been copied out (or
	// dropped) before the controller may write the buffer again.
	atomic.StoreUint32(&r.desc[2*i], st<<16)
}

// Drain hands every filled descriptor's frame to the receiver, in ring
// order, returns each descriptor to the controller and reports how many
// it took. A frame the controller flagged, or whose length is out of
// range, is counted and dropped.
func (r *Ring) Drain() int {
	n := 0
	for {
		w := atomic.LoadUint32(&r.desc[2*r.next])
		st, length := w>>16, int(w&0xffff)
		if st&bdEmpty != 0 {
			break
		}
		switch {
		case st&bdLast == 0, st&bdErrors != 0, length < minFrame, length > maxFrame:
			// Frames never span buffers here (MRBR holds the largest), so
			// a descriptor without L is an error too.
			r.rx.RingError()
		default:
			r.rx.Receive(r.bufs[r.next][:length-fcsLen])
		}
		r.handBack(r.next)
		r.next = (r.next + 1) % len(r.bufs)
		n++
	}
	if n > 0 {
		r.kick()
	}
	r.rx.Sweep()
	return n
}
