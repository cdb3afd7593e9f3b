// Package rx is yolk's network receive path: the ENET receive ring, a
// classifier that reads each frame's headers where the controller wrote
// them, and the charging of receive memory to the page pool, so that
// receiving never takes the memory reclaim needs, and the replies reclaim
// waits for always get through.
//
// # The deadlock
//
// Reclaim writes pages to a network block device; a write completes when
// the server's reply is received; receiving needs memory; memory is what
// reclaim is freeing. If receive memory comes from the same pool as
// everything else and unrelated traffic may take the last of it, the reply
// is dropped, the write never completes, and the machine stops (Linux's
// swap-over-NBD threads of 2006-2012, ending in Mel Gorman's series in
// 3.6). Linux's answer marks the block device's sockets SOCK_MEMALLOC,
// lets every receive allocation dip into the reserve while such sockets
// exist, and drops a reserve-backed skb at the socket if it is not for one
// of them: after it has been allocated and filled. yolk decides first.
//
// # What a frame goes through
//
//  1. The controller writes it into a Ring buffer (DMA memory yolk owns)
//     and raises RXF; the board's interrupt goroutine runs Ring.Drain.
//  2. Parse reads Ethernet, ARP, IPv4 and TCP/UDP headers in place, with
//     bounds checks, allocating nothing (FuzzParse).
//  3. The frame is critical if it is TCP for a memalloc connection (the
//     Registry: a 4-tuple set the NBD client fills when it backs swap),
//     or a SYN-ACK or RST from the server end of one (so reconnects work
//     under pressure), or ARP for our address within a rate. Fragments
//     and UDP never are.
//  4. It is charged one 2 KiB slot of a frame of the pool: an ordinary
//     frame as phys.Atomic, which stops at 3/8 of min; a critical one
//     with phys.Memalloc, which may go below min, into the reserve, while
//     the network holds fewer reserve frames than its bound. A frame that
//     cannot be charged is dropped there, before any copy: its descriptor
//     goes straight back to the controller.
//  5. Only then is it copied into a gVisor packet and injected into the
//     stack, and the receiver's reference released after delivery.
//  6. The charge lasts as long as the stack holds the memory: until the
//     packet is released and, for TCP and UDP, until no transport queue
//     holds a clone of its payload any more (gVisor's TCP clones every
//     segment in newIncomingSegment; the receive and out-of-order queues
//     keep the clone until the application reads it). The payload gets a
//     chunk of its own and the receiver watches its reference count
//     (chunkref.go). gVisor runs a packet's release callback before the
//     packet lets go of its own views, so a released charge is judged
//     just after: by Receive as soon as its own reference is dropped (a
//     frame the stack was done with, or one dropped after its copy, is
//     uncharged before the next frame is looked at), and by Sweep for
//     packets released later on other goroutines; Sweep also returns
//     the charges whose chunks only the receiver still references.
//
// AllocThenDrop runs Linux's order instead, for comparison: every frame
// charged with Memalloc, copied, then dropped if its frame came from the
// reserve and it is not for a memalloc socket. Its counters show the
// difference: AllocatedThenDropped is always zero for ClassifyFirst.
//
// # Where the memory lives
//
// The bytes themselves are in gVisor's chunk pools on the Go heap, which
// yolk cannot place in the page pool; the charge takes from the pool as
// many frames as the stack holds, so the pool's free count, its
// watermarks, kswapd and the OOM killer all see receive memory, and the
// heap the network can grow is bounded by what the pool lets it charge.
// One slot per frame overcharges small frames (an ACK sits in a 64-byte
// chunk) and never undercharges one: a 1514-byte frame's payload is a
// 2 KiB chunk.
//
// # Bound on reserve use
//
// The network never holds more than ReserveFrames frames of the reserve
// (default 64, 256 KiB; phys marks each one PGPfmemalloc and the charger
// counts them). Past the bound a critical frame is charged as an ordinary
// one and dropped if that fails; TCP retransmits it. The bound caps what
// the network may take, not what the pool has: on a small pool the
// reserve below the atomic watermark may hold fewer frames than the
// bound, and a frame that finds it empty is dropped as reserve_empty.
// Frames for no memalloc socket never hold reserve frames under
// ClassifyFirst (ReservePeakOther stays zero); under AllocThenDrop they
// hold one each from the copy to the drop. For the bound to be
// enough, a memalloc connection's receive window must fit in it with
// room to spare (MemallocWindow): otherwise segments held out of order can
// fill the reserve while the retransmission that would let them be read
// is dropped, every time.
//
// # Locks
//
// Receiver.mu guards the charger, the fresh and held lists and the
// counters; it is taken with no other lock held and, inside it, only the
// pool's own lock is taken (by AllocPage and Put). It is never held
// across a call into gVisor's stack: the stack's release callbacks,
// which may run on any goroutine and within InjectInbound itself, take
// it afresh. (Releasing one of the receiver's own views under it only
// hands a chunk back to gVisor's buffer pool.) Registry.mu only
// serialises writers; readers load a snapshot.
//
// # The image
//
// On the image, net/stack builds gVisor's stack on an Endpoint and hands
// this package the ENET's receive side. From TamaGo's and imx-enet's
// drivers yolk still uses the controller initialisation (clocks, PHY,
// MAC, MII), the transmit ring and imx-enet's transmit notification, and
// imx-enet's net.Conn adapters; not TamaGo's ENET.Rx, which allocates a
// slice per frame before anyone has looked at it, nor imx-enet's NIC.Rx,
// which copies that again and never releases the packet.
package rx
