// These tests start NBD servers on the host (qemu/nbdserver), which does
// not build for the image.

//go:build !tamago

package nbd

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
)

// Throughput against nbdkit memory on loopback, beside libnbd's nbdcopy
// doing the same transfer to the same kind of server in the same run:
// nbdcopy is the reference NBD client, so the ratio says how much of the
// link and the server this client leaves unused.

const benchExport = 1 << 30

func startMemory(b *testing.B) *nbdserver.Server {
	b.Helper()
	return nbdservertest.Start(b, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: benchExport})
}

func dialBench(b *testing.B, srv *nbdserver.Server, inFlight int) *Client {
	b.Helper()
	c, err := Dial(context.Background(), Config{Addr: srv.Addr, Export: srv.Export, MaxInFlight: max(inFlight, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// writeLoad issues b.N writes of size bytes from inFlight goroutines, at
// sequential or random offsets, and reports MB/s.
func writeLoad(b *testing.B, c *Client, size, inFlight int, random bool) {
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(rand.Uint32())
	}
	slots := int64(benchExport / size)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for g := range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				slot := i % slots
				if random {
					slot = r.Int64N(slots)
				}
				if err := c.WriteAt(buf, slot*int64(size), 0); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)*float64(size)/el.Seconds()/1e6, "MB/s")
}

// BenchmarkWrite: one op is one write request by this client, of 256 KiB
// at sequential offsets or of 4 KiB at random ones, with 1 or 16 in flight
// on one connection. Reports MB/s; ns/op is the wall time per request (all
// in flight together, so not a latency at 16).
func BenchmarkWrite(b *testing.B) {
	srv := startMemory(b)
	for _, load := range []struct {
		name   string
		size   int
		random bool
	}{{"seq-256KiB", 256 << 10, false}, {"rand-4KiB", 4 << 10, true}} {
		for _, inFlight := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/inflight=%d", load.name, inFlight), func(b *testing.B) {
				c := dialBench(b, srv, inFlight)
				writeLoad(b, c, load.size, inFlight, load.random)
			})
		}
	}
}

// nbdcopyFile makes a file of size random bytes for nbdcopy to send.
func nbdcopyFile(b *testing.B, size int) string {
	b.Helper()
	if err := nbdserver.NbdcopyAvailable(); err != nil {
		if os.Getenv("CI") != "" {
			b.Fatal(err)
		}
		b.Skipf("no nbdcopy to compare with: %v", err)
	}
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(rand.Uint32())
	}
	name := filepath.Join(b.TempDir(), "src")
	if err := os.WriteFile(name, buf, 0o600); err != nil {
		b.Fatal(err)
	}
	return name
}

// nbdcopy copies file to the server with requests of size bytes, inFlight
// at a time on one connection, and returns the time it took.
func nbdcopy(b *testing.B, srv *nbdserver.Server, file string, size, inFlight int) time.Duration {
	d, err := srv.Nbdcopy(file, size, inFlight)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkNbdcopy is libnbd's nbdcopy writing the same requests, one
// process per 64 MiB copy (its start-up is in the figure, as it is for any
// user of it). One op is one copy: 64 MiB in 256 KiB or 4 KiB requests,
// 1 or 16 in flight, at sequential offsets. Reports MB/s; ns/op is the
// time of one 64 MiB copy.
func BenchmarkNbdcopy(b *testing.B) {
	const total = 64 << 20
	srv := startMemory(b)
	file := nbdcopyFile(b, total)
	for _, size := range []int{256 << 10, 4 << 10} {
		for _, inFlight := range []int{1, 16} {
			b.Run(fmt.Sprintf("seq-%dKiB/inflight=%d", size>>10, inFlight), func(b *testing.B) {
				var el time.Duration
				b.SetBytes(total)
				for range b.N {
					el += nbdcopy(b, srv, file, size, inFlight)
				}
				b.ReportMetric(float64(b.N)*total/el.Seconds()/1e6, "MB/s")
			})
		}
	}
}

// BenchmarkVersusNbdcopy sends the same 64 MiB, in 256 KiB writes with 16
// in flight, with this client and with nbdcopy, alternately. One op is
// three rounds of both copies. Reports MB/s (this client), nbdcopy-MB/s
// and x-nbdcopy, their ratio (above 1: this client is faster); ns/op,
// both together, is not reported.
func BenchmarkVersusNbdcopy(b *testing.B) {
	const total, size, inFlight = 64 << 20, 256 << 10, 16
	srv := startMemory(b)
	file := nbdcopyFile(b, total)
	src, err := os.ReadFile(file)
	if err != nil {
		b.Fatal(err)
	}
	c := dialBench(b, srv, inFlight)
	var ours, theirs time.Duration
	b.SetBytes(total)
	const rounds = 3 // each 64 MiB copy takes about a tenth of a second
	b.ResetTimer()
	for range b.N * rounds {
		start := time.Now()
		var wg sync.WaitGroup
		var next atomic.Int64
		for range inFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					off := next.Add(size) - size
					if off >= total {
						return
					}
					if err := c.WriteAt(src[off:off+size], off, 0); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		ours += time.Since(start)
		theirs += nbdcopy(b, srv, file, size, inFlight)
	}
	o := float64(b.N*rounds) * total / ours.Seconds() / 1e6
	n := float64(b.N*rounds) * total / theirs.Seconds() / 1e6
	b.ReportMetric(o, "MB/s")
	b.ReportMetric(n, "nbdcopy-MB/s")
	b.ReportMetric(o/n, "x-nbdcopy")
	b.ReportMetric(0, "ns/op")
}
