// Command yolk-qemu boots a yolk image under QEMU with the host services its
// scenario needs, shows the console, and exits with the image's status.
//
//	yolk-qemu -image build/yolk-mx6ullevk.elf [-target mx6ullevk] [-timeout 180s] [key=value ...]
//
// The key=value words are the image's boot parameters. The harness reads
// which parameters the chosen scenario takes (package yolk/scenarios) and
// starts the host services they point at when the command line leaves them
// unset or sets them to auto: a loopback echo server for selftest's host=,
// an nbdkit memory server for the nbd= of the journal and pressure
// scenarios, of -nbd-size bytes, or by default of 64 MiB or what the
// scenario says its run needs if more (pressure's swap for its working
// set). The image checks every parameter itself.
//
// A run that prints stat lines (pressure, nbdswap) is plotted: -plot FILE
// gets a PNG of them against time (package yolk/qemu/plot) and FILE with
// .csv for its extension the figures behind it; by default FILE is
// yolk-SCENARIO.png beside the image, and -plot= writes none.
//
// Exit status: the image's whenever it gave one (0 pass, 1 fail, 2 bad
// parameters, 3 the scenario panicked, 4 the Go runtime died, 5 the
// scenario's watchdog found the machine stalled); otherwise
// the harness's own: 124 the run timed out, 125 QEMU or a host service
// could not run the image (no banner), 2 bad usage of the harness, 130
// interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"yolk/qemu"
	"yolk/qemu/nbdserver"
	"yolk/qemu/plot"
	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
	_ "yolk/scenarios" // the scenarios the image has, for their parameters
)

// The harness's own exit statuses.
const (
	exitUsage       = 2
	exitTimeout     = 124
	exitNoRun       = 125
	exitInterrupted = 130
)

func main() {
	image := flag.String("image", "", "ELF image to boot")
	target := flag.String("target", "mx6ullevk", "board target (mx6ullevk or usbarmory)")
	timeout := flag.Duration("timeout", 180*time.Second, "kill QEMU after this long")
	services := flag.Bool("services", true, "start the host services the scenario's parameters point at, unless given")
	plotFile := flag.String("plot", "auto", "write the run's stat lines as a PNG plot to this file, and as CSV beside it (auto: yolk-SCENARIO.png beside the image; empty: no plot)")
	nbdSize := flag.Int64("nbd-size", 0, "size in bytes of the nbdkit memory server started for nbd= (0: 64 MiB, or what the scenario needs if more)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: yolk-qemu -image ELF [flags] [key=value ...]\n")
		flag.PrintDefaults()
		fmt.Fprintf(os.Stderr, `exit status: the image's when it gave one: 0 pass, 1 fail, 2 bad parameters,
3 the scenario panicked, 4 the Go runtime died, 5 the scenario stalled (watchdog);
else the harness's own:
124 timed out, 125 QEMU or a host service could not run the image,
2 bad usage, 130 interrupted
scenarios: %s (make qemu APPEND='scenario=NAME')
`, strings.Join(scenario.Names(), ", "))
	}
	flag.Parse()
	if *image == "" {
		flag.Usage()
		os.Exit(exitUsage)
	}
	if *nbdSize < 0 {
		fmt.Fprintf(os.Stderr, "yolk-qemu: -nbd-size %d is negative\n", *nbdSize)
		os.Exit(exitUsage)
	}

	cfg := qemu.Config{Image: *image, Target: *target, Timeout: *timeout, Console: os.Stdout, Append: flag.Args()}
	// The image judges the command line; here it is only read for the
	// scenario's name (a bare word may give it: shell). One it cannot
	// parse goes to the image as it is.
	name := scenario.DefaultScenario
	p, perr := cmdline.Parse(strings.Join(flag.Args(), " "), false)
	if perr == nil && scenario.ResolveName(p) == nil {
		name = p.String("scenario", name)
	}
	if sc, ok := scenario.Lookup(name); ok && sc.Console {
		cfg.Stdin = os.Stdin // the shell reads the console: this terminal
	}
	if *services {
		size := *nbdSize
		if perr == nil && size == 0 {
			size = max(nbdserver.DefaultSize, scenario.NBDSize(p))
		}
		if specs, ok := scenario.Params(name); ok {
			cfg.Services, cfg.Append = qemu.PlanServices(flag.Args(), specs,
				nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: size})
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	run, err := qemu.Boot(ctx, cfg)
	if run != nil {
		fmt.Fprintf(os.Stderr, "yolk-qemu: %s\n", strings.Join(run.Args, " "))
	}
	code, fromImage := 0, false
	if run != nil {
		code, fromImage = run.ImageStatus()
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintf(os.Stderr, "yolk-qemu: interrupted\n")
		os.Exit(exitInterrupted)
	case !fromImage:
		fmt.Fprintf(os.Stderr, "yolk-qemu: %v\n", err)
		if run != nil && run.TimedOut {
			// A run that stalled until the deadline is worth watching.
			if *plotFile != "" {
				writePlot(run, plotPath(*plotFile, *image, run))
			}
			os.Exit(exitTimeout)
		}
		os.Exit(exitNoRun)
	}

	fmt.Fprintf(os.Stderr, "yolk-qemu: %s, QEMU exit status %d (banner after %v, %v in all, %v of host CPU)\n",
		verdict(run, err), code, run.Banner.Round(time.Millisecond), run.Elapsed.Round(time.Millisecond), run.CPU.Round(time.Millisecond))
	for _, s := range cfg.Services {
		switch s := s.(type) {
		case *qemu.EchoServer:
			fmt.Fprintf(os.Stderr, "yolk-qemu: echo server on %s echoed %d bytes\n", s.Addr(), s.Echoed())
		case *qemu.NBDServer:
			if s.Server != nil {
				fmt.Fprintf(os.Stderr, "yolk-qemu: %s server on %s, %d bytes\n", s.Server.Kind, s.Server.Addr, s.Server.Size)
			}
		case *qemu.FloodServer:
			st := s.Stats()
			fmt.Fprintf(os.Stderr, "yolk-qemu: flood server on %s sent %d bytes on %d TCP connections, %d datagrams (%d bytes) on %d UDP streams\n",
				s.Addr(), st.TCPBytes, st.TCPConns, st.UDPDatagrams, st.UDPBytes, st.UDPStreams)
		}
	}
	if *plotFile != "" {
		writePlot(run, plotPath(*plotFile, *image, run))
	}
	os.Exit(code)
}

// plotPath is where -plot puts the run's plot: the flag's file, or for
// auto yolk-SCENARIO.png beside the image.
func plotPath(flagValue, image string, run *qemu.Run) string {
	if flagValue != "auto" {
		return flagValue
	}
	name := scenario.DefaultScenario
	if p, ok := run.Find("params"); ok && p.Value("scenario") != "" {
		name = p.Value("scenario")
	}
	return filepath.Join(filepath.Dir(image), "yolk-"+name+".png")
}

// writePlot plots the run's stat lines to path, with the CSV beside it,
// and says where; a run without stat lines gets no plot and no word.
// A plot that cannot be made is reported but does not change the
// harness's exit status, which is the image's.
func writePlot(run *qemu.Run, path string) {
	stats, err := plot.FromResults(run.Results)
	if errors.Is(err, plot.ErrNoStats) {
		return
	}
	var csvPath string
	if err == nil {
		var fig *plot.Figure
		if fig, err = plot.Build(plot.Title(run.Results), stats); err == nil {
			csvPath, err = fig.Save(path, stats)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "yolk-qemu: no plot: %v\n", err)
		return
	}
	fmt.Fprintf(os.Stderr, "yolk-qemu: plot of %d stat lines in %s, data in %s\n", stats.Lines(), path, csvPath)
}

// verdict says in a phrase what the image's status means.
func verdict(run *qemu.Run, err error) string {
	v, ok := run.Verdict()
	switch {
	case !ok && run.ExitCode == scenario.ExitFatal:
		return "the Go runtime died (no verdict; the panic is above)"
	case !ok && err != nil:
		return "no verdict: " + strings.TrimPrefix(err.Error(), "qemu: ")
	case !ok:
		return "no verdict"
	case v.Value("scenario") == "":
		return "the image refused to start: " + v.Value("err")
	case v.Value("code") == fmt.Sprint(scenario.ExitUsage):
		return fmt.Sprintf("scenario %s refused its boot parameters", v.Value("scenario"))
	}
	return fmt.Sprintf("scenario %s %s", v.Value("scenario"), v.Value("status"))
}
