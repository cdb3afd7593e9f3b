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

// The flood: sixteen TCP connections the image never reads, and one UDP
// socket, bound and never read, that the server streams datagrams to at
// flood_kbps for as long as the run.
//
// The deadlock needs the flood's unread data to grow while reclaim waits
// on the NBD server's replies: from min, some 40 frames of it take a
// 4 MiB pool to the atomic watermark, where every ordinary frame is
// dropped, the replies included, and nothing frees a page again. Data
// that arrives while the pool is free only makes the working set's share
// smaller, and once the flood's sockets are full it holds no more and
// reclaim has the rest of the pool to work in. Started with the workload
// and fed slowly (8 KiB/s a connection), the flood raced it: if its
// sockets had filled far enough before the pool first reached its
// watermarks, reclaim, swapping some 300 pages a second, outpaced what
// was left of it and the run completed; about half the runs did. So the
// connections are made first, while the pool is free, the flood is asked
// for only once free memory is at or below the low watermark, where
// kswapd wakes and reclaim starts to need the replies (floodStart), and
// the TCP streams are fast (256 KiB/s, some 1,500 frames a second in all
// until their windows are full, each frame a receive slot), so that they
// take the pool past min in tens of milliseconds, faster than reclaim
// frees pages. (At 1 MiB/s alloc-then-drop, which copies every flood
// frame below min into the reserve, sometimes ran out of it and dropped
// an NBD frame.) Eight such streams still lost the race now and then:
// their windows (64 KiB each, some 150 frames in all) filled in about as
// long as reclaim took to free what they had taken, so a fast reclaim
// could end the flood's growth short of the atomic watermark. Sixteen
// streams at half the rate bring the same frames a second, so no deeper
// a burst for alloc-then-drop's reserve, and hold twice as much.
const (
	floodTCPConns = 16
	floodTCPRate  = 128 << 10
	floodSecs     = 600 // the server's own bound; the run closes first
	floodDatagram = 1024
	// floodPoll is how often floodStart looks at the pool's free memory.
	floodPoll = time.Millisecond
)

// rxPlan is one nbdswap run's receive-path set-up.
type rxPlan struct {
	rx        *rx.Receiver
	mode      string
	flood     string
	floodKBps int
	watchdog  time.Duration
	bound     int

	board     *phys.Pool // the pool rx charged before the run, charged again after
	tcp       []net.Conn // the flood's, asked for nothing yet
	udp       net.Conn
	stopFlood func() // stops floodStart
	stalled   bool
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

// startFlood connects to the flood server, while the pool is free, and
// starts floodStart, which asks it for the flood once the run's pool is
// under pressure.
func (p *rxPlan) startFlood(r *pressureRun) error {
	if p.floodKBps == 0 {
		return nil
	}
	env := r.env
	ctx, cancel := context.WithTimeout(context.Background(), jDialTimeout)
	defer cancel()
	for range floodTCPConns {
		c, err := env.Net.DialContext(ctx, "tcp", p.flood)
		if err != nil {
			return fmt.Errorf("flood: %w", err)
		}
		p.tcp = append(p.tcp, c)
	}
	u, err := net.Dial("udp", p.flood)
	if err != nil {
		return fmt.Errorf("flood: %w", err)
	}
	p.udp = u
	env.Report("flood", "server", p.flood, "tcp_conns", floodTCPConns, "udp_kbps", p.floodKBps, "datagram", floodDatagram)
	p.stopFlood = p.floodStart(r)
	return nil
}

// floodStart waits for the pool's free memory to reach its low
// watermark, where kswapd wakes and reclaim starts writing to the NBD
// server, and then asks the flood server for the flood: on each TCP
// connection, and on the UDP socket. The returned function stops it.
func (p *rxPlan) floodStart(r *pressureRun) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	t0 := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(floodPoll)
		defer t.Stop()
		for r.pool.FreeFrames() > r.pool.Watermarks().Low {
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
		free := r.pool.FreeFrames()
		var err error
		for _, c := range p.tcp {
			if _, err = fmt.Fprintf(c, "flood %d %d\n", floodTCPRate, floodSecs); err != nil {
				break
			}
		}
		if err == nil {
			_, err = fmt.Fprintf(p.udp, "flood %d %d %d", p.floodKBps<<10, floodSecs, floodDatagram)
		}
		if err != nil {
			r.env.Check("flood-start", fmt.Errorf("flood: %w", err))
			return
		}
		r.env.Report("flood-start", "free_kb", free*4, "low_kb", r.pool.Watermarks().Low*4, "t_ms", time.Since(t0).Milliseconds())
	}()
	return func() { close(quit); <-done }
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
	if p.stopFlood != nil {
		p.stopFlood()
	}
	for _, c := range p.tcp {
		c.Close()
	}
	if p.udp != nil {
		// The host's stream would outlive the socket (to its own time
		// bound) and flood whatever runs next: ask it to stop.
		fmt.Fprint(p.udp, "stop")
		p.udp.Close()
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
		// With the NBD connection memalloc and the reserve enough for
		// it, the server's replies all get through, whichever way the
		// flood is dropped (a reserve too small shows here first: the
		// min_free_kbytes sweep looks for where).
		env.Check("rx-memalloc-drops", errIf(s.MemallocDrops != 0, "%d frames of the NBD connection dropped", s.MemallocDrops), "memalloc_drops", s.MemallocDrops)
	}
	if p.mode == "classify-first" {
		// yolk's claim: a frame it drops costs nothing, and no frame of
		// the flood ever sits in the reserve.
		env.Check("rx-no-alloc-for-drops", errIf(s.AllocatedThenDropped != 0 || s.ReservePeakOther != 0,
			"%d frames copied and then dropped, up to %d of them in the reserve at once", s.AllocatedThenDropped, s.ReservePeakOther),
			"alloc_then_dropped", s.AllocatedThenDropped, "reserve_peak_other", s.ReservePeakOther)
	}
	kv := []any{"reserve", p.mode, "flood_kbps", p.floodKBps, "frames", s.Frames, "delivered", s.Delivered, "dropped", s.Dropped()}
	for d := rx.DropReason(1); d < rx.NrDropReasons; d++ {
		kv = append(kv, "drop_"+d.String(), s.Drops[d])
	}
	kv = append(kv, "alloc_then_dropped", s.AllocatedThenDropped, "pfmemalloc_admits", s.PfmemallocAdmits,
		"memalloc_frames", s.MemallocFrames, "memalloc_drops", s.MemallocDrops, "charged_peak", s.ChargedPeak,
		"reserve_peak", s.ReservePeak, "reserve_peak_other", s.ReservePeakOther, "reserve_bound", s.ReserveBound)
	env.Report("nbdswap", kv...)
	p.rx.SetPool(p.board)
}
