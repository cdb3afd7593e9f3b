// Package nbd is an NBD client: a blk.Device whose blocks live on a Network
// Block Device server (nbdkit, qemu-nbd, nbd-server), reached over any
// net.Conn — on the image, a gVisor TCP connection over ENET. It speaks the
// protocol of NetworkBlockDevice/nbd doc/proto.md.
//
// # Handshake
//
// Fixed newstyle: the client answers NBD_FLAG_FIXED_NEWSTYLE and
// NBD_FLAG_NO_ZEROES with their client flags, asks for structured replies
// (NBD_OPT_STRUCTURED_REPLY, unless Config.NoStructuredReplies), then sends
// NBD_OPT_GO for the export with NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE.
// Having asked for block sizes, it must obey them: the device's block size
// is the larger of the server's minimum and Config.BlockSize, and reads and
// writes longer than the maximum payload (32 MiB when not advertised) are
// split into several requests. A server that does not know NBD_OPT_GO
// (NBD_REP_ERR_UNSUP) gets NBD_OPT_EXPORT_NAME, as does a plain newstyle
// server; an unknown export is an *OptionError that is ErrUnknownExport.
//
// The transmission flags become blk.Features. The client never sends a
// command or flag the server did not advertise: a write to a read-only
// export fails with blk.ErrReadOnly, and Trim or WriteZeroes without
// NBD_FLAG_SEND_TRIM or _WRITE_ZEROES fail with blk.ErrUnsupported, all
// without a request on the wire. Flush and FUA follow Linux's blk-flush
// rules instead, since a caller that asks for durability should get it
// whatever the server offers: a server without NBD_FLAG_SEND_FLUSH has no
// volatile cache, so Flush has nothing to send and FUA nothing to add; one
// with it but without NBD_FLAG_SEND_FUA gets a FUA write as the write
// followed by a flush.
//
// # Connections and goroutines
//
// A Client has one connection, or Config.Conns of them when the server
// advertises NBD_FLAG_CAN_MULTI_CONN (its flushes then cover the writes of
// every connection; extra connections the server refuses at Dial leave
// fewer, as Info().Conns says). Each connection slot (type conn) has
//
//   - one goroutine, which reads replies (replyParser) and completes
//     requests, and when the connection fails, tears it down and
//     re-establishes it;
//   - a writer path, not a goroutine: the calling goroutine writes its own
//     request under the slot's write lock, so a write's payload goes from
//     the caller's buffer to the socket and nothing else ever touches it;
//   - at most Config.MaxInFlight requests in flight (a semaphore); concurrent
//     calls are pipelined up to that depth.
//
// Requests are matched to replies by a 64-bit cookie unique on the slot;
// replies come in any order. A call splits into requests, sends them all,
// then waits for all, so no buffer is touched after the call returns.
// Request structures (with their completion channel and deadline timer)
// are recycled through a pool, so the steady state allocates nothing per
// request.
//
// Lock order: conn.mu (state, the registered requests; held briefly) before
// conn.wmu (the socket's write side, held across a write). The goroutine
// never takes wmu while it reads, so a writer blocked on a server that is
// itself waiting for its replies to be read always comes free. The
// barrier's locks (Flush against writes) are taken with neither held.
//
// # Replies
//
// Simple replies and structured replies (NBD_REPLY_TYPE_NONE, OFFSET_DATA,
// OFFSET_HOLE, ERROR, ERROR_OFFSET; NBD_REPLY_FLAG_DONE ends a reply) are
// parsed by replyParser, which checks every length against the request it
// belongs to before reading it: a data chunk outside the request, overlapping
// another, for a request that is not a read, an unknown cookie, a bad magic,
// a missing or wrong length, an oversized message, an unknown chunk type that
// is not an error, a read claimed done without all its data, a read reply
// in more than 16 disjoint pieces at once (a bound that keeps the overlap
// check allocation-free; servers send their chunks in order, one piece) —
// each is a *ProtocolError (blk.ErrProtocol). It fails the request it
// concerns and the connection, which is then re-established like any lost
// connection; the other requests on it are resent. An error chunk of an
// unknown type fails its request only. Server errors are *ServerError, which unwraps to a blk sentinel
// (Errno.Sentinel). Every failed call returns a *blk.RequestError naming the
// call's operation, offset and length.
//
// # Deadlines
//
// Config.RequestTimeout bounds each request from when it is handed to a
// connection (a free in-flight slot) until its reply. A request past it fails
// with blk.ErrTimeout, and since its reply may still come, the connection is
// dropped and re-established; the other requests on it are resent. A write
// stuck on a server that stopped reading fails the same way, at the latest
// a quarter timeout later (the socket's write deadline is set with slack, as
// setting it costs a timer on gVisor). Waiting for a slot is bounded by the
// requests ahead, waiting for a connection by ReconnectTimeout.
// Config.ConnectTimeout bounds each dial plus handshake.
//
// # Reconnecting and the replay rule
//
// When a connection is lost (an I/O error, the server closing it, a protocol
// error, a deadline, NBD_ESHUTDOWN), its goroutine dials again with backoff
// (20ms doubling to 1s) for at most ReconnectTimeout (and
// ReconnectAttempts), and the new connection must show the same export
// (size, block sizes, flags in use); otherwise the slot goes down. A request
// made while a slot is down starts a new reconnect period.
//
// Requests in flight on a lost connection:
//
//   - Reads, writes, trims and write-zeroes are sent again, by their callers,
//     on the new connection (Stats.Resent). Reads are idempotent; so are the
//     others, being absolute data at an absolute offset, and requests in
//     flight together carry no order among themselves (blk's rule), so
//     whatever order the resends execute in, the result is one the caller
//     allowed. A request that cannot be sent again within ReconnectTimeout
//     of its first loss fails with blk.ErrDisconnected.
//   - A request past its deadline fails with blk.ErrTimeout and is not
//     resent.
//   - A flush is not resent: it fails with blk.ErrDisconnected (see below).
//
// # Flush and lost write-back
//
// Flush covers every write, trim and write-zeroes call made before Flush was
// called: those that completed and those still in flight, whose replies
// Flush waits for on every connection before it sends NBD_CMD_FLUSH (on one
// connection; with several, CAN_MULTI_CONN makes it cover all). Calls made
// after Flush was called are not covered; FUA writes need no flush.
//
// A server acknowledges a write once it is in its cache. A connection lost
// while holding acknowledgements that no successful flush has covered may
// have lost them with the server (killed and restarted): the client records
// a write-back error, and the next Flush fails with an error wrapping
// blk.ErrDisconnected — once, like Linux's errseq write-back errors, so the
// Flush after it covers what was written since. A flush in flight when its
// connection is lost fails the same way (and consumes the report). A caller
// that needs durability rewrites what it wrote since its last successful
// Flush, or uses FUA, whose writes are durable when acknowledged. The rule is
// conservative: a connection dropped by the client (a deadline) to a server
// that kept running also reports.
//
// # Close
//
// Close waits for the calls in flight to complete or fail, then sends
// NBD_CMD_DISC on every connection and waits (at most ConnectTimeout) for the
// server to close it (Stats.CleanDisconnect). Later calls fail with
// blk.ErrClosed.
package nbd
