//go:build tamago && arm

// Command yolk is the yolk image: a TamaGo unikernel for the NXP i.MX6UL
// that boots, prints its banner and memory map, brings up the network,
// runs the scenario named on its command line and exits with its status.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/goos"
	"strings"
	"time"

	"github.com/usbarmory/tamago/soc/nxp/enet"

	"yolk/board"
	"yolk/mm/phys"
	"yolk/net/stack"
	"yolk/runtime/cmdline"
	"yolk/runtime/result"
	"yolk/runtime/scenario"
	"yolk/runtime/semihosting"
	_ "yolk/scenarios"
)

// Version is the yolk release, printed in the banner.
const Version = "0.1.0-dev"

// builtinCmdline holds boot parameters baked in at build time (make
// CMDLINE='k=v ...'); an emulator's command line is laid over it. It is
// how a board without a debugger gets its parameters.
var builtinCmdline string

// machine is what a board package provides; board_*.go selects one.
type machine interface {
	Info() board.Info
	Emulated() bool
	Init() error
	HandleInterrupt(id int, fn func())
	Pool() []byte
	Ethernet() (*enet.ENET, error)
	Cmdline() (s string, ok bool, err error)
	// Console is the console's input (after Init), for the shell.
	Console() io.Reader
	Exit(code int)
}

func main() {
	boot := time.Now()
	out := scenario.NewReporter(os.Stdout)
	info := hw.Info()

	out.Emit(result.New("banner", "version", Version, "board", info.Name, "model", info.Model,
		"go", runtime.Version(), "goos", runtime.GOOS, "goarch", runtime.GOARCH,
		"emulated", hw.Emulated(), "console", info.Console, "ethernet", info.Ethernet))
	for _, r := range append([]board.Region{info.Memory.RAM}, info.Memory.Regions()...) {
		out.Emit(result.New("mem", "name", r.Name, "start", hex(r.Start), "end", hex(r.End()),
			"size", board.FormatSize(r.Size)))
	}

	if hw.Emulated() {
		// TamaGo halts on a runtime exit (an unrecovered panic, a fatal
		// error); under QEMU end the run at once with its own status
		// instead of leaving the harness to wait for its deadline.
		goos.Exit = runtimeExit
	}

	if err := hw.Init(); err != nil {
		exit(out, "", scenario.ExitUsage, fmt.Errorf("board init: %w", err))
	}

	params, err := cmdline.Parse(builtinCmdline, false)
	if err != nil {
		exit(out, "", scenario.ExitUsage, fmt.Errorf("built-in %w", err))
	}
	if raw, ok, err := hw.Cmdline(); err != nil {
		exit(out, "", scenario.ExitUsage, err)
	} else if ok {
		if err := params.Add(raw, true); err != nil {
			exit(out, "", scenario.ExitUsage, err)
		}
	}
	// Nothing runs on parameters the image and the scenario do not both
	// accept, the network's included.
	args, err := scenario.CheckParams(params)
	if err != nil {
		out.Emit(paramsLine(params, nil))
		exit(out, params.String("scenario", scenario.DefaultScenario), scenario.ExitUsage, err)
	}
	out.Emit(paramsLine(params, &args))

	env := scenario.NewEnv(out, args, info)
	if sc, _ := scenario.Lookup(args.String("scenario")); sc.Console {
		// Only a scenario that reads the console takes its interrupt.
		env.Stdin = hw.Console()
	}
	env.Pool = hw.Pool()
	if env.Phys, env.PhysErr = managePool(env.Pool, info.Memory.Pool); env.PhysErr != nil {
		out.Emit(result.New("phys", "managed", false, "err", env.PhysErr.Error()))
	} else {
		out.Emit(physLine(env.Phys))
	}
	netCfg, _ := stack.FromArgs(args) // checked by CheckParams
	if netCfg.Off {
		env.NetErr = errors.New("the network is off (ip=off)")
		out.Emit(result.New("net", "up", false, "ip", "off"))
	} else if iface, err := startNetwork(netCfg); err != nil {
		env.NetErr = err
		out.Emit(result.New("net", "up", false, "err", err.Error()))
	} else {
		env.Net = iface
		env.Rx = iface.Receiver()
		if env.Phys != nil {
			// Receive memory is on the pool's books from the first frame.
			env.Rx.SetPool(env.Phys)
		}
		out.Emit(result.New("net", "up", true, "ip", iface.Config.Prefix(), "gw", iface.Config.Gateway, "irq", "rxf",
			"rx_ring", iface.RingSize(), "rx_charged", env.Phys != nil))
	}
	out.Emit(result.New("ready", "init_ms", time.Since(boot).Milliseconds()))
	env.Halt = func(code int, err error) { exit(out, args.String("scenario"), code, err) }

	exit(out, "", scenario.Run(env), nil)
}

// paramsLine shows the parameters a run goes by: the scenario, then the
// scenario's own parameters with their defaults filled in (so that a run
// can be repeated from its log), then the image's that the command line
// sets. Without args (they were refused) it shows the command line as
// given.
func paramsLine(p cmdline.Params, args *cmdline.Args) result.Line {
	var kv []any
	if args == nil {
		for _, k := range p.Keys() {
			kv = append(kv, k, p.String(k, ""))
		}
		return result.New("params", kv...)
	}
	name := args.String("scenario")
	kv = append(kv, "scenario", name)
	sc, _ := scenario.Lookup(name)
	own := map[string]bool{"scenario": true}
	for _, s := range sc.Params {
		own[s.Name] = true
		if v := args.String(s.Name); v != "" || args.Has(s.Name) {
			kv = append(kv, s.Name, v)
		}
	}
	for _, k := range args.Set() {
		if !own[k] {
			kv = append(kv, k, args.String(k))
		}
	}
	return result.New("params", kv...)
}

// managePool hands the pool to mm/phys, which owns it from here on.
func managePool(mem []byte, r board.Region) (*phys.Pool, error) {
	if mem == nil {
		return nil, fmt.Errorf("pool %s is not mapped", r)
	}
	return phys.New(phys.Config{Mem: mem, Base: r.Start})
}

// physLine reports the pool as mm/phys manages it: its meminfo and
// watermarks, in kB as /proc/meminfo and zoneinfo users read them.
func physLine(p *phys.Pool) result.Line {
	kv := []any{"managed", true, "frames", p.Frames(), "start_pfn", fmt.Sprintf("%#x", uint32(p.Start()))}
	for _, l := range p.Meminfo() {
		kv = append(kv, strings.ToLower(l.Name)+"_kb", l.KB)
	}
	wm := p.Watermarks()
	kb := func(frames uint64) uint64 { return frames * phys.PageSize >> 10 }
	kv = append(kv, "min_free_kbytes", p.MinFreeKbytes(),
		"min_kb", kb(wm.Min), "low_kb", kb(wm.Low), "high_kb", kb(wm.High))
	return result.New("phys", kv...)
}

func startNetwork(cfg stack.Config) (*stack.Interface, error) {
	eth, err := hw.Ethernet()
	if err != nil {
		return nil, err
	}
	return stack.Start(eth, cfg, hw.HandleInterrupt)
}

// exit reports the status (and why, when it is an early failure, with the
// scenario's name once it is known) and hands it to the board. It does not
// return.
func exit(out *scenario.Reporter, name string, code int, err error) {
	if err != nil {
		status := "fail"
		if code == scenario.ExitStall {
			status = "stalled"
		}
		kv := []any{"status", status, "code", code, "err", err.Error()}
		if name != "" {
			kv = append([]any{"scenario", name}, kv...)
		}
		out.Emit(result.New("result", kv...))
	}
	out.Emit(result.New("exit", "code", code))
	hw.Exit(code)
	panic("unreachable: board exit returned")
}

// runtimeExit is called by the runtime after it has printed the panic or
// fatal error; it must not allocate. The runtime's own code (2 for a
// panic) is replaced by ExitFatal, which no scenario verdict uses.
//
//go:nosplit
func runtimeExit(int32) {
	semihosting.Exit(scenario.ExitFatal)
	for {
	}
}

func hex(v uint64) string { return fmt.Sprintf("0x%08x", v) }
