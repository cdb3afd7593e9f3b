// Package nbdserver starts real NBD servers on the host, on loopback ports
// it picks, for the tests and benchmarks of yolk's NBD client: nbdkit (its
// memory and file plugins, with any of its filters), qemu-nbd and
// nbd-server, as Debian packages them (nbdkit, qemu-utils, nbd-server).
// Testing against the servers themselves, rather than a fake, is the
// point: they differ in what they advertise and in how they answer.
//
//	s, err := nbdserver.Start(nbdserver.Config{Kind: nbdserver.QemuNBD})
//	// connect to s.Addr, export s.Export; or nbdcopy / nbdinfo s.URI()
//	s.Kill()    // crash: connections drop, nothing listens
//	s.Restart() // same address, same backing file
//	s.Stop()    // and its scratch directory is gone
//
// A server whose program is missing or that does not come up is a
// *StartError, with one line saying why (e.g. "nbd-server not installed
// (Debian package nbd-server)") and the server's output. The package is a
// plain library, used by the QEMU harness as well as by tests; tests start
// servers with nbdservertest.Start, which stops them in the test's cleanup
// and skips (or, under CI, fails) on a StartError.
//
// # Ports
//
// A port is picked by listening on 127.0.0.1:0 and closing the listener,
// then given to the server, which binds 127.0.0.1 only. Someone else may
// bind the port in between; the server then exits with "Address already in
// use" (or, nbd-server, exits and the port is found busy), and Start tries
// again with a new port, up to five times. Restart never does: a restarted
// server keeps its address, which is what a reconnecting client needs.
//
// # Readiness
//
// A server is ready when its own process owns the listening socket on the
// port (read from /proc/net/tcp and /proc/PID/fd, so that a server on a
// stolen port is never mistaken for ours) and it completes an NBD
// handshake: fixed newstyle, NBD_OPT_GO on the export, then NBD_CMD_DISC.
// That handshake is also where Server.Size comes from. The wait is bounded
// by ReadyTimeout, so the delay filter's delay-open must stay well below it.
// Nothing else is needed: no nbdinfo, no sleeps. nbd-server takes 0.2 to
// 2 s to be ready (the others about 0.1 s): between binding and accepting
// it generates Diffie-Hellman parameters for TLS.
//
// # Processes and cleanup
//
// Every server runs in a process group of its own, and Stop and Kill
// signal the group, then reap every process in it: a stopped server leaves
// no process, zombie or not, and no listener. Kill is SIGKILL at once;
// Stop sends SIGTERM and waits StopGrace before SIGKILL. nbdkit and
// qemu-nbd run in the foreground as our children, with --exit-with-parent
// (nbdkit) and Pdeathsig, so a test binary that dies does not leak them.
//
// nbd-server has no usable foreground mode: -d serves one client session
// and then exits. So it runs as the daemon it wants to be, from a config
// file generated in a temporary directory, with a pid file there; this
// process becomes a child subreaper (PR_SET_CHILD_SUBREAPER, process-wide,
// set the first time an nbd-server starts) so that the daemon and its
// per-connection children are adopted and reaped by us rather than by PID
// 1. Its group is its session (daemon(3) calls setsid), so a test binary
// that dies can leak it. Its daemon logs to syslog only, so Output holds
// nothing from it after it detached. It runs as the invoking user (no
// user= or group= in the config), so it can open any file we can.
//
// # What each kind advertises
//
// Measured on this machine (Debian 12: nbdkit 1.32.5, qemu-nbd 7.2.22,
// nbd-server 3.24; nbdinfo 1.14.2) with nbdinfo --json on servers started
// with this package's defaults; TestFeatures checks the table still holds.
//
//	                      nbdkit-memory  nbdkit-file  qemu-nbd          nbd-server
//	default export        ""             ""           ""                "yolk"
//	structured replies    yes            yes          yes               no
//	meta contexts         base:alloc.    base:alloc.  base:allocation   none
//	flush                 yes            yes          yes               yes (flush = true)
//	FUA                   yes            yes          yes               yes (fua = true)
//	trim                  yes            yes          yes, ignored      yes (trim = true)
//	write zeroes          yes            yes          yes               yes
//	fast zero             yes            no           yes               no
//	DF                    yes            yes          yes               no
//	cache                 yes            yes          yes               no
//	multi-conn            yes            yes          yes               yes
//	read-only             no             no           no                no
//	block size min/pref/max  -           -            1/4096/32 MiB     -
//	size in NBD_OPT_INFO  right          right        right             0
//
// Notes on the table:
//   - DF is advertised only to clients that negotiated structured replies;
//     an NBD_OPT_GO without them gets the same flags minus DF.
//   - Trimmed ranges read back as zeros from nbdkit and nbd-server;
//     qemu-nbd accepts trim and ignores it, the data stays (its --discard
//     defaults to ignore; Args: []string{"--discard=unmap"} passes trims
//     to the file). Measured with qemu-io (qemu-utils) write, discard,
//     read.
//   - nbd-server's flush, fua and trim are off unless its config says so;
//     this package turns them on, and Params (e.g. "trim=false") turn them
//     off again. It never offers structured replies, so no block status.
//   - nbd-server answers NBD_OPT_INFO with size 0: it opens the backing
//     file only on NBD_OPT_GO, whose reply carries the right size. nbdinfo
//     --json shows 0 for it; nbdinfo --size is right.
//   - nbdkit's memory and file plugins serve any export name; -e only sets
//     the name nbdkit lists. qemu-nbd and nbd-server refuse other names.
//   - nbd-server lists its exports only because the config sets allowlist.
//
// # Tools
//
// nbdcopy and nbdinfo (Debian package libnbd-bin) take Server.URI():
// nbdcopy FILE URI writes a file to the export from offset 0, nbdcopy URI
// FILE reads it back, nbdcopy URI null: reads and discards (add
// --no-extents to read holes too, which nbdcopy otherwise skips).
// NbdcopyAvailable and NbdinfoAvailable say whether they are installed.
package nbdserver
