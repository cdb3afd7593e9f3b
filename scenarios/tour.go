package scenarios

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"yolk/runtime/cmdline"
	"yolk/runtime/result"
	"yolk/runtime/scenario"
)

// The tour is what `make qemu` runs when no scenario is named: the whole
// machine at once, in about half a minute under QEMU. It runs four of the
// other scenarios one after another on the same board, each with its own
// memory manager, and then adds up what they did:
//
//	selftest  the memory map, the pool, TCP through gVisor to the host
//	thp       huge-page faults, fork and copy-on-write on a section,
//	          MADV_FREE of whole and partial sections, the lazy-free
//	          discard, a deferred split
//	mmu       tasks reading and writing their memory with plain loads and
//	          stores through the live MMU, real data aborts served by mm's
//	          fault handler, every byte held to the software MMU's view
//	nbdswap   a working set twice its pool swapped to NBD while a flood of
//	          unrelated traffic arrives, the NBD socket memalloc and the
//	          receive path classifying before it allocates
//	region    a journaled mapping on the same NBD export, shared by a
//	          parent and its child, written while reclaim writes dirty
//	          pages back through the journal, msync'd, then recovered
//
// Each phase reports as it would alone (its checks, its stat lines, its
// closing line); the tour leaves out their /proc dumps (verbose=true shows
// them) and gives stat lines one clock, counted from the tour's start, so
// that a plot of the run reads left to right. At the end a tour line sums
// the phases' closing lines (thp-vmstat, mmu-aborts, mmu-faults,
// pressure, nbdswap, region), a
// table says the same for a person, and the tour passes only if every
// phase passed: every byte each of them wrote read back as written.
//
// The phases share the NBD export one at a time: swap is off, and the
// export forgotten, before the region formats its journal on it.

const tourName = "tour"

// A tourPhase is one scenario of the tour and the arguments it runs with.
type tourPhase struct {
	scenario string
	what     string
	// args are the phase's own parameters; the tour's services (host,
	// nbd, export, flood) are passed on to the phases that take them.
	args []string
}

var tourPhases = []tourPhase{
	{"selftest", "the memory map, the pool, TCP through gVisor to the host", []string{"timeout=10s"}},
	{"thp", "huge-page faults, fork and copy-on-write on a section, MADV_FREE and the lazy-free discard", nil},
	{"mmu", "tasks' plain loads and stores through the live MMU, their data aborts served by mm's fault handler", []string{"steps=300"}},
	{"nbdswap", "a working set twice the pool swapped to NBD while a flood arrives", []string{"pool=4", "ws=200", "rounds=2", "reserve=classify-first"}},
	{"region", "a journaled mapping written, reclaimed through the journal, msync'd and recovered", []string{"pool=4", "ws=110", "rounds=1", "batch=32"}},
}

// tourServices are the tour's parameters that name host services, passed
// on as they are to each phase that takes them.
var tourServices = []string{"host", "nbd", "export", "flood"}

func init() {
	scenario.Register(scenario.Scenario{
		Name: tourName,
		Help: "the whole machine at once: selftest, then thp (huge pages, fork, MADV_FREE), mmu (tasks' loads and stores through the live MMU), nbdswap (a working set twice its pool swapped to nbd= while flood= sends unrelated traffic) and region (a journaled mapping, msync, reclaim through the journal), then a summary of what they did; passes only if every byte checked out",
		Params: []cmdline.Spec{
			{Name: "host", Value: cmdline.HostPort{}, Service: "echo",
				Help: "a TCP echo server for selftest (the harness starts one on the host)"},
			{Name: "nbd", Value: cmdline.HostPort{}, Required: true, Service: "nbd",
				Help: "the NBD server for swap and for the journaled region (the harness starts an nbdkit memory server on the host)"},
			{Name: "export", Value: cmdline.Text{Max: 4096}, Service: "nbd", Help: "the export's name"},
			{Name: "flood", Value: cmdline.HostPort{}, Service: "flood",
				Help: "the flood server (the harness starts one): unrelated TCP and UDP traffic during the swap phase"},
			{Name: "flood_kbps", Value: cmdline.Int{Min: 0, Max: 4096}, Default: "128",
				Help: "the UDP flood's rate in KiB/s during the swap phase (0: no flood)"},
			{Name: "verbose", Value: cmdline.Bool{}, Default: "false",
				Help: "also print the /proc files the phases print"},
		},
		NBDSize: func(args cmdline.Args) int64 {
			var n int64
			for _, ph := range tourPhases {
				sub, err := tourArgs(ph, args, true)
				if err != nil {
					continue
				}
				if sc, _ := scenario.Lookup(ph.scenario); sc.NBDSize != nil {
					n = max(n, sc.NBDSize(sub))
				}
			}
			return n
		},
		Run: tour,
	})
}

// tourArgs binds a phase's parameters: its own, the tour's services and
// the flood rate, held to the phase scenario's declarations. For sizing
// the NBD export (the harness asks before there is a server) the
// parameters that name services are left out, as scenario.NBDSize does.
func tourArgs(ph tourPhase, args cmdline.Args, sizing bool) (cmdline.Args, error) {
	sc, ok := scenario.Lookup(ph.scenario)
	if !ok {
		return cmdline.Args{}, fmt.Errorf("tour: no scenario %s", ph.scenario)
	}
	takes := map[string]bool{}
	for _, s := range sc.Params {
		takes[s.Name] = true
	}
	words := []string{cmdline.Word("scenario", ph.scenario)}
	for _, w := range ph.args {
		k, v, _ := strings.Cut(w, "=")
		words = append(words, cmdline.Word(k, v))
	}
	declared := map[string]bool{} // NBDSize's args leave the services out
	for _, s := range args.Specs() {
		declared[s.Name] = true
	}
	for _, k := range append(tourServices, "flood_kbps") {
		if takes[k] && declared[k] && args.String(k) != "" {
			words = append(words, cmdline.Word(k, args.String(k)))
		}
	}
	if takes["flood_kbps"] && (!declared["flood"] || args.String("flood") == "") {
		// No flood server: the phase runs without a flood.
		words = append(words, cmdline.Word("flood_kbps", "0"))
	}
	p, err := cmdline.Parse(strings.Join(words, " "), false)
	if err != nil {
		return cmdline.Args{}, err
	}
	var specs []cmdline.Spec
	for _, s := range append(scenario.ImageParams(), sc.Params...) {
		if !sizing || s.Service == "" {
			specs = append(specs, s)
		}
	}
	sub, unknown, errs := cmdline.Bind(p, specs)
	for _, k := range unknown {
		errs = append(errs, fmt.Errorf("%s takes no %s=", ph.scenario, k))
	}
	if err := errors.Join(errs...); err != nil {
		return cmdline.Args{}, fmt.Errorf("tour: phase %s: %w", ph.scenario, err)
	}
	return sub, nil
}

func tour(env *scenario.Env) error {
	start := time.Now()
	col := &tourCollector{env: env, start: start, verbose: env.Args.Bool("verbose")}
	var failed []string
	for i, ph := range tourPhases {
		sub, err := tourArgs(ph, env.Args, false)
		if err != nil {
			return err
		}
		sc, _ := scenario.Lookup(ph.scenario)
		env.Report("tour-phase", "phase", i+1, "of", len(tourPhases), "scenario", ph.scenario, "what", ph.what,
			"t_ms", time.Since(start).Milliseconds())
		penv := env.SubTo(sub, col)
		t := time.Now()
		err = sc.Run(penv)
		ok := err == nil && !penv.Failed()
		kv := []any{"scenario", ph.scenario, "ok", ok, "ms", time.Since(t).Milliseconds()}
		if err != nil {
			kv = append(kv, "err", err.Error())
		}
		env.Report("tour-phase-done", kv...)
		if !ok {
			failed = append(failed, ph.scenario)
		}
	}
	sum := col.summary()
	env.Report("tour", append(sum.kv(), "elapsed_ms", time.Since(start).Milliseconds())...)
	env.Text(sum.table(time.Since(start)))
	if len(failed) > 0 {
		return fmt.Errorf("the %s phase%s failed (see above)", strings.Join(failed, ", "), map[bool]string{true: "s"}[len(failed) > 1])
	}
	return nil
}

// tourCollector is the phases' console: it passes their lines on to the
// tour's, re-stamps stat lines with the tour's clock, keeps /proc text
// back unless verbose, and remembers each phase's closing line.
type tourCollector struct {
	env     *scenario.Env
	start   time.Time
	verbose bool

	mu    sync.Mutex
	lines map[string]result.Line // closing lines by event
}

// Write takes what a phase's Reporter writes: one result line per call,
// or a block of raw text.
func (c *tourCollector) Write(p []byte) (int, error) {
	s := string(p)
	l, err := result.Parse(s)
	if err != nil {
		// Raw text (a /proc file), or a line result cannot read: shown
		// only when asked for.
		if c.verbose {
			c.env.Text(s)
		}
		return len(p), nil
	}
	switch l.Event {
	case "proc":
		if !c.verbose {
			return len(p), nil
		}
	case "stat":
		l = restamp(l, "t_ms", time.Since(c.start).Milliseconds())
	case "thp-vmstat", "mmu-aborts", "mmu-faults", "pressure", "nbdswap", "region": // tourGroups' events
		c.mu.Lock()
		if c.lines == nil {
			c.lines = map[string]result.Line{}
		}
		c.lines[l.Event] = l
		c.mu.Unlock()
	}
	c.env.Report(l.Event, fieldsKV(l)...)
	return len(p), nil
}

// restamp sets a field of l, keeping its place, or adds it at the end.
func restamp(l result.Line, key string, v any) result.Line {
	out := result.Line{Event: l.Event, Fields: append([]result.Field(nil), l.Fields...)}
	for i := range out.Fields {
		if out.Fields[i].Key == key {
			out.Fields[i].Value = fmt.Sprint(v)
			return out
		}
	}
	out.Fields = append(out.Fields, result.Field{Key: key, Value: fmt.Sprint(v)})
	return out
}

func fieldsKV(l result.Line) []any {
	kv := make([]any, 0, 2*len(l.Fields))
	for _, f := range l.Fields {
		kv = append(kv, f.Key, f.Value)
	}
	return kv
}

// tourItem is one figure of the summary: the key in the tour line, the
// phase line and field it comes from, and how a person reads it.
type tourItem struct {
	key, event, field, label string
}

// tourGroups heads the table's groups, by the phase line they come from.
var tourGroups = map[string]string{
	"thp-vmstat": "huge pages and MADV_FREE (thp)",
	"mmu-aborts": "the live MMU: data aborts taken (mmu)",
	"mmu-faults": "the live MMU: how they were served (mmu)",
	"pressure":   "a working set twice its pool, swapped to NBD (nbdswap)",
	"nbdswap":    "the receive path under the flood (nbdswap)",
	"region":     "a journaled mapping (region)",
}

var tourItems = []tourItem{
	{"thp_fault_alloc", "thp-vmstat", "thp_fault_alloc", "huge pages faulted in"},
	{"thp_split_pmd", "thp-vmstat", "thp_split_pmd", "huge mappings split"},
	{"thp_split_page", "thp-vmstat", "thp_split_page", "huge pages split"},
	{"pglazyfree", "thp-vmstat", "pglazyfree", "pages given MADV_FREE"},
	{"pglazyfreed", "thp-vmstat", "pglazyfreed", "lazy-free pages discarded"},
	{"mmu_aborts", "mmu-aborts", "total", "data aborts"},
	{"mmu_translation", "mmu-aborts", "translation_page", "  translation faults (page)"},
	{"mmu_permission", "mmu-aborts", "permission_page", "  permission faults (page)"},
	{"mmu_fixed_on_g0", "mmu-faults", "fixed_on_g0", "young/dirty fixed in the exception"},
	{"mmu_served", "mmu-faults", "served", "served by the fault goroutine"},
	{"mmu_kills", "mmu-faults", "kills", "tasks ended by SEGV"},
	{"mmu_disagreed", "mmu-faults", "disagreed", "aborts the software MMU judged otherwise"},
	{"pswpout", "pressure", "pswpout", "pages swapped out"},
	{"pswpin", "pressure", "pswpin", "pages swapped in"},
	{"pgmajfault", "pressure", "pgmajfault", "major faults"},
	{"swap_pages_checked", "pressure", "pages_checked", "pages checked byte for byte"},
	{"swap_mismatches", "pressure", "mismatches", "pages that read back wrong"},
	{"rx_frames", "nbdswap", "frames", "frames received"},
	{"rx_dropped", "nbdswap", "dropped", "frames dropped before any allocation"},
	{"rx_drop_watermark", "nbdswap", "drop_watermark", "  of them at the watermark"},
	{"rx_memalloc_drops", "nbdswap", "memalloc_drops", "frames of the NBD connection dropped"},
	{"rx_pfmemalloc_admits", "nbdswap", "pfmemalloc_admits", "NBD frames let into the reserve"},
	{"rx_reserve_peak", "nbdswap", "reserve_peak", "reserve peak, frames"},
	{"commits", "region", "commits", "journal commits"},
	{"msyncs", "region", "msyncs", "msyncs"},
	{"reclaim_writes", "region", "reclaim_writes", "dirty pages written back by reclaim"},
	{"region_pages_checked", "region", "pages_checked", "pages checked byte for byte"},
	{"region_mismatches", "region", "mismatches", "pages that read back wrong"},
}

type tourSummary struct {
	values  []string // by tourItems; "" where the phase said nothing
	missing []string
}

func (c *tourCollector) summary() tourSummary {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s tourSummary
	for _, it := range tourItems {
		l, ok := c.lines[it.event]
		v, has := l.Get(it.field)
		if !ok || !has {
			s.missing = append(s.missing, it.key)
			v = ""
		}
		s.values = append(s.values, v)
	}
	return s
}

// kv is the tour line: every figure the phases reported, and which ones
// they did not (a phase that failed early says nothing).
func (s tourSummary) kv() []any {
	var kv []any
	for i, it := range tourItems {
		if s.values[i] != "" {
			kv = append(kv, it.key, s.values[i])
		}
	}
	if len(s.missing) > 0 {
		kv = append(kv, "missing", strings.Join(s.missing, ","))
	}
	return kv
}

// table is the summary for a person, one figure a line.
func (s tourSummary) table(elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nyolk tour: what happened, in %.1f s\n", elapsed.Seconds())
	group := ""
	for i, it := range tourItems {
		if g := tourGroups[it.event]; g != group {
			group = g
			fmt.Fprintf(&b, "  %s\n", g)
		}
		v := s.values[i]
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(&b, "    %-40s %10s\n", it.label, v)
	}
	return b.String()
}
