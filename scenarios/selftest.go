// Package scenarios holds the scenarios the image can run (scenario=NAME on
// its command line). Each registers itself at init; the image imports the
// package for its side effect. Scenarios are portable: they reach hardware
// only through scenario.Env, so host tests run them against a byte slab and
// the host's TCP stack.
package scenarios

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"yolk/board"
	"yolk/mm/phys"
	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
)

func init() {
	scenario.Register(scenario.Scenario{
		Name: "selftest",
		Help: "check the memory map and pool, then echo a nonce through host=ADDR:PORT",
		Params: []cmdline.Spec{
			{Name: "host", Value: cmdline.HostPort{}, Service: "echo",
				Help: "a TCP echo server (the harness starts one on the host)"},
			{Name: "timeout", Value: cmdline.Duration{Min: time.Millisecond, Max: 10 * time.Minute}, Default: "10s",
				Help: "the echo's dial and round-trip deadline"},
		},
		Run: selftest,
	})
}

// selftest is the default scenario: it proves that the board's memory map is
// sane, that the pool is real memory, and that TCP reaches the host.
func selftest(env *scenario.Env) error {
	m := env.Board.Memory
	env.Check("memmap", m.Validate(),
		"regions", len(m.Regions()), "pool", board.FormatSize(m.Pool.Size))
	env.Check("pool-size", poolLargeEnough(m), "pool", board.FormatSize(m.Pool.Size), "ram", board.FormatSize(m.RAM.Size))
	// The pool belongs to mm/phys, but nothing has allocated from it yet:
	// the frames written here are free, and whoever gets them will have
	// them zeroed or overwritten.
	env.Check("pool-rw", checkPool(env.Pool, m.Pool), "first", fmt.Sprintf("%#x", m.Pool.Start),
		"last", fmt.Sprintf("%#x", m.Pool.End()-board.PageSize))

	env.Check("phys-orders", allocEveryOrder(env.Phys, env.PhysErr), "orders", phys.NrOrders)

	host := env.Args.String("host")
	start := time.Now()
	err := echo(env, host, env.Args.Duration("timeout"))
	env.Check("echo", err, "host", host, "rtt_us", time.Since(start).Microseconds())
	return nil
}

// poolLargeEnough holds yolk to its promise that the managed pool gets at
// least half of RAM (256 MiB on the 512 MiB boards).
func poolLargeEnough(m board.MemoryMap) error {
	if m.Pool.Size < m.RAM.Size/2 {
		return fmt.Errorf("pool is %s, less than half of RAM (%s)", board.FormatSize(m.Pool.Size), board.FormatSize(m.RAM.Size))
	}
	return nil
}

// checkPool writes a distinct pattern to the first and the last page of the
// pool and reads both back, so a pool that is not there, is read-only, or
// aliases its two ends is caught.
func checkPool(pool []byte, r board.Region) error {
	if pool == nil {
		return errors.New("pool is not mapped")
	}
	if uint64(len(pool)) != r.Size {
		return fmt.Errorf("pool mapping is %d bytes, memory map says %d", len(pool), r.Size)
	}
	first := pool[:board.PageSize]
	last := pool[len(pool)-board.PageSize:]
	fill(first, r.Start)
	fill(last, r.End()-board.PageSize)
	for _, p := range []struct {
		page []byte
		addr uint64
	}{{first, r.Start}, {last, r.End() - board.PageSize}} {
		want := make([]byte, board.PageSize)
		fill(want, p.addr)
		if i := mismatch(p.page, want); i >= 0 {
			return fmt.Errorf("page %#x: byte %d reads %#02x, wrote %#02x", p.addr, i, p.page[i], want[i])
		}
	}
	return nil
}

// allocEveryOrder allocates and frees one block of every order on the
// real memory (compound pages above order 0, all zeroed), writes both ends
// of each and reads them back, then requires the allocator's invariants
// to hold and every frame it started with to be free again.
func allocEveryOrder(p *phys.Pool, setupErr error) error {
	if p == nil {
		return fmt.Errorf("no page allocator: %v", setupErr)
	}
	before := p.FreeFrames()
	for order := 0; order <= phys.MaxOrder; order++ {
		ctx := phys.Kernel | phys.Zeroed
		if order > 0 {
			ctx |= phys.Compound
		}
		f, err := p.Alloc(order, ctx)
		if err != nil {
			return err
		}
		mem, err := p.Block(f, order)
		if err != nil {
			return err
		}
		ends := []*byte{&mem[0], &mem[len(mem)-1]}
		for k, b := range ends {
			if *b != 0 {
				return fmt.Errorf("order-%d block at %v is not zeroed", order, f)
			}
			*b = byte(order<<1 | k | 0x80)
		}
		for k, b := range ends {
			if *b != byte(order<<1|k|0x80) {
				return fmt.Errorf("order-%d block at %v: wrote %#x, read %#x", order, f, order<<1|k|0x80, *b)
			}
		}
		if err := p.Put(f); err != nil {
			return err
		}
	}
	if err := p.Check(); err != nil {
		return err
	}
	if after := p.FreeFrames(); after != before {
		return fmt.Errorf("%d frames were free before, %d after freeing everything", before, after)
	}
	return nil
}

// fill writes a pattern derived from the physical address of each byte.
func fill(page []byte, addr uint64) {
	for i := range page {
		a := addr + uint64(i)
		page[i] = byte(a>>2) ^ byte(a>>12) ^ byte(a>>20) ^ 0x5a
	}
}

func mismatch(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// echo sends a random nonce to an echo server and expects it back intact.
func echo(env *scenario.Env, host string, timeout time.Duration) error {
	if host == "" {
		return errors.New("no host=ADDR:PORT given")
	}
	if env.Net == nil {
		return fmt.Errorf("no network: %v", env.NetErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := env.Net.DialContext(ctx, "tcp", host)
	if err != nil {
		return fmt.Errorf("dial %s: %w", host, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}

	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return fmt.Errorf("nonce: %w", err)
	}
	nonce := []byte(hex.EncodeToString(raw) + "\n")
	if _, err := conn.Write(nonce); err != nil {
		return fmt.Errorf("send nonce: %w", err)
	}
	got := make([]byte, len(nonce))
	if _, err := io.ReadFull(conn, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(got, nonce) {
		return fmt.Errorf("echo mismatch: sent %q, got %q", nonce, got)
	}
	return nil
}
