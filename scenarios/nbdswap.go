package scenarios

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"yolk/mm/phys"
	"yolk/net/rx"
	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
)

func init() {
	params := append(pressureParams(200, "the working set, in percent of pool= (at least twice the pool)"), []cmdline.Spec{
		{Name: "reserve", Value: cmdline.Choice{"off", "alloc-then-drop", "classify-first"}, Default: "classify-first",
			Help: "the receive path: off (the NBD connection is an ordinary socket), alloc-then-drop (Linux's: charge every frame, reserve included, drop at the socket), classify-first (yolk's: drop before any copy)"},
		{Name: "flood", Value: cmdline.HostPort{}, Service: "flood",
			Help: "the flood server (the harness starts one): TCP into sockets the image never reads, UDP to a socket it never reads"},
		{Name: "flood_kbps", Value: cmdline.Int{Min: 0, Max: 4096}, Default: "0",
			Help: "the UDP flood's rate in KiB/s (0: no flood at all)"},
		{Name: "watchdog", Value: cmdline.Int{Min: 1, Max: 600}, Default: "8",
			Help: "seconds without swap I/O or checked pages, with free memory at or below min, after which the run ends with status 5"},
		{Name: "min_free_kbytes", Value: cmdline.Int{Min: 0, Max: 65536}, Default: "0",
			Help: "the pool's vm.min_free_kbytes (0: Linux's default for its size)"},
		{Name: "rx_reserve", Value: cmdline.Int{Min: 1, Max: 4096}, Default: fmt.Sprint(rx.DefaultReserveFrames),
			Help: "the most reserve frames the network may hold at once"},
	}...)
	scenario.Register(scenario.Scenario{
		Name:    "nbdswap",
		Help:    "the swap-over-NBD deadlock, shown and cured: the pressure scenario's working set, at least twice its pool= MiB pool, swapped to nbd= while flood= sends unrelated traffic, with the receive path's reserve= mode; a watchdog ends a stalled run with status 5",
		Params:  params,
		NBDSize: pressureNBDSize,
		Run:     nbdswapScenario,
	})
}

// The nbdswap scenario is the pressure scenario with the network's receive
// memory on the pool's books (see net/rx): the NBD connection that swap
// depends on, marked memalloc or not, and a flood of traffic nobody reads
// competing with it for the last frames below min. With reserve=off the
// server's replies are ordinary frames: once the flood's unread data has
// taken the pool down to the atomic watermark they are dropped before the
// stack sees them, no swap write completes, reclaim frees nothing, and
// the watchdog ends the run. With either reserve mode the replies are
// charged to the reserve, within its bound, and the run completes.
func nbdswapScenario(env *scenario.Env) error {
	if env.Rx == nil {
		return fmt.Errorf("no receive path to put on the pool's books: %v", env.NetErr)
	}
	plan := &rxPlan{
		rx:        env.Rx,
		mode:      env.Args.String("reserve"),
		flood:     env.Args.String("flood"),
		floodKBps: env.Args.Int("flood_kbps"),
		watchdog:  time.Duration(env.Args.Int("watchdog")) * time.Second,
		bound:     env.Args.Int("rx_reserve"),
	}
	return pressureWith(env, pressureOpts{rx: plan, minFreeK: env.Args.Int("min_free_kbytes")})
}

// The flood: eight TCP connections the image never reads, each fed
// slowly enough (8 KiB/s) that its 64 KiB window fills over the run, not
// before the pool is under pressure, and together able to hold far more
// than the gap between min and the atomic watermark of a small pool; and
// one UDP socket, bound and never read, that the server streams datagrams
// to at flood_kbps for as long as the run.
const (
	floodTCPConns = 8
	floodTCPRate  = 8 << 10
	floodSecs     = 600 // the server's own bound; the run closes first
	floodDatagram = 1024
)

// rxPlan is one nbdswap run's receive-path set-up.
type rxPlan struct {
	rx        *rx.Receiver
	mode      string
	flood     string
	floodKBps int
	watchdog  time.Duration
	bound     int

	board   *phys.Pool // the pool rx charged before the run, charged again after
	conns   []net.Conn // the flood's
	stalled bool
}

func (p *rxPlan) attach(pool *phys.Pool) {
	p.board = p.rx.Pool()
	if p.mode == "alloc-then-drop" {
		p.rx.SetMode(rx.AllocThenDrop)
	} else {
		p.rx.SetMode(rx.ClassifyFirst)
	}
	p.rx.SetReserveFrames(p.bound)
	p.rx.ResetPeaks()
	p.rx.SetPool(pool)
}

// memalloc is the NBD client's Memalloc hook, or nil with reserve=off.
func (p *rxPlan) memalloc() func(net.Conn) (func(), error) {
	if p.mode == "off" {
		return nil
	}
	return p.rx.Registry().RegisterConn
}

func (p *rxPlan) startFlood(env *scenario.Env) error {
	if p.floodKBps == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), jDialTimeout)
	defer cancel()
	for range floodTCPConns {
		c, err := env.Net.DialContext(ctx, "tcp", p.flood)
		if err != nil {
			return fmt.Errorf("flood: %w", err)
		}
		p.conns = append(p.conns, c)
		if _, err := fmt.Fprintf(c, "flood %d %d\n", floodTCPRate, floodSecs); err != nil {
			return fmt.Errorf("flood: %w", err)
		}
	}
	u, err := net.Dial("udp", p.flood)
	if err != nil {
		return fmt.Errorf("flood: %w", err)
	}
	p.conns = append(p.conns, u)
	if _, err := fmt.Fprintf(u, "flood %d %d %d", p.floodKBps<<10, floodSecs, floodDatagram); err != nil {
		return fmt.Errorf("flood: %w", err)
	}
	env.Report("flood", "server", p.flood, "tcp_conns", floodTCPConns, "udp_kbps", p.floodKBps, "datagram", floodDatagram)
	return nil
}

// startWatchdog watches the run for progress: swap I/O completed on the
// device, or pages checked by the workload. If neither moves for the
// watchdog's time while free memory is at or below min, the machine is
// stalled: it reports what the receive path and the device were doing and
// halts the image with ExitStall (or, where it cannot, only reports).
func (p *rxPlan) startWatchdog(r *pressureRun) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	progress := func() uint64 {
		st := r.dev.Stats()
		r.mu.Lock()
		defer r.mu.Unlock()
		return st.BytesRead + st.BytesWritten + uint64(r.checked)
	}
	go func() {
		defer close(done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		last, since := progress(), time.Now()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			now := progress()
			if now != last || r.pool.FreeFrames() > r.pool.Watermarks().Min {
				last, since = now, time.Now()
				continue
			}
			if time.Since(since) < p.watchdog {
				continue
			}
			p.stalled = true
			st := p.rx.Stats()
			ns := r.dev.Stats()
			kv := []any{"stalled_ms", time.Since(since).Milliseconds(), "free_kb", r.pool.FreeFrames() * 4,
				"min_kb", r.pool.Watermarks().Min * 4, "reserve", p.mode,
				"nbd_timeouts", ns.Timeouts, "nbd_reconnects", ns.Reconnects}
			r.env.Report("watchdog", append(kv, st.StatKV()...)...)
			r.stat()
			var b strings.Builder
			if p.rx.WriteProc(&b) == nil {
				r.env.Report("proc", "file", "/proc/net/yolk_rx", "lines", strings.Count(b.String(), "\n"))
				r.env.Text(b.String())
			}
			err := fmt.Errorf("no swap I/O and no page checked for %v with free memory at or below min", p.watchdog)
			r.env.Check("nbdswap-progress", err)
			if r.env.Halt != nil {
				r.env.Halt(scenario.ExitStall, fmt.Errorf("watchdog: %w", err))
			}
			return
		}
	}()
	return func() { close(quit); <-done }
}

// detach closes the flood, waits for every charge to come back, checks
// the run's receive-path figures and hands the receive path back to the
// board's pool.
func (p *rxPlan) detach(env *scenario.Env) {
	for _, c := range p.conns {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.rx.Sweep(); time.Now().Before(deadline); p.rx.Sweep() {
		if s := p.rx.Stats(); s.Slots == 0 && s.Charged == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s := p.rx.Stats()
	env.Check("rx-charges-zero", errIf(s.Slots != 0 || s.Charged != 0, "%d slots in %d frames still charged after the traffic stopped", s.Slots, s.Charged),
		"charged", s.Charged, "slots", s.Slots, "held", s.Held)
	env.Check("rx-reserve-bound", errIf(s.ReservePeak > s.ReserveBound, "the network held %d reserve frames, over its bound of %d", s.ReservePeak, s.ReserveBound),
		"reserve_peak", s.ReservePeak, "reserve_bound", s.ReserveBound)
	if p.mode != "off" {
		env.Check("rx-memalloc-drops", errIf(s.MemallocDrops != 0, "%d frames of the NBD connection dropped", s.MemallocDrops), "memalloc_drops", s.MemallocDrops)
	}
	if p.mode == "classify-first" {
		env.Check("rx-no-alloc-for-drops", errIf(s.AllocatedThenDropped != 0, "%d frames copied and then dropped", s.AllocatedThenDropped),
			"alloc_then_dropped", s.AllocatedThenDropped)
	}
	kv := []any{"reserve", p.mode, "flood_kbps", p.floodKBps, "frames", s.Frames, "delivered", s.Delivered, "dropped", s.Dropped()}
	for d := rx.DropReason(1); d < rx.NrDropReasons; d++ {
		kv = append(kv, "drop_"+d.String(), s.Drops[d])
	}
	kv = append(kv, "alloc_then_dropped", s.AllocatedThenDropped, "pfmemalloc_admits", s.PfmemallocAdmits,
		"memalloc_frames", s.MemallocFrames, "memalloc_drops", s.MemallocDrops, "charged_peak", s.ChargedPeak,
		"reserve_peak", s.ReservePeak, "reserve_bound", s.ReserveBound)
	env.Report("nbdswap", kv...)
	p.rx.SetPool(p.board)
}
