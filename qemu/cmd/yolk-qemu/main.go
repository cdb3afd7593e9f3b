// Command yolk-qemu boots a yolk image under QEMU with the host services its
// scenario needs, shows the console, and exits with the image's status.
//
//	yolk-qemu -image build/yolk-mx6ullevk.elf [-target mx6ullevk] [-timeout 60s] [key=value ...]
//
// Unless -echo=false or a host= parameter is given, it starts a loopback
// echo server and passes host=10.0.2.2:PORT, which the default scenario
// (selftest) needs. Given nbd=auto, it starts an nbdkit memory server of
// -nbd-size bytes on loopback and passes nbd=10.0.2.2:PORT instead, for the
// journal scenario. Exit status: the image's, or 124 when the run timed
// out, or 125 when QEMU could not complete a run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"yolk/qemu"
	"yolk/qemu/nbdserver"
)

func main() {
	image := flag.String("image", "", "ELF image to boot")
	target := flag.String("target", "mx6ullevk", "board target (mx6ullevk or usbarmory)")
	timeout := flag.Duration("timeout", 120*time.Second, "kill QEMU after this long")
	echo := flag.Bool("echo", true, "start a loopback echo server and pass host= to the image")
	nbdSize := flag.Int64("nbd-size", nbdserver.DefaultSize, "size in bytes of the nbdkit memory server that nbd=auto starts")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: yolk-qemu -image ELF [flags] [key=value ...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *image == "" {
		flag.Usage()
		os.Exit(2)
	}

	cfg := qemu.Config{Image: *image, Target: *target, Timeout: *timeout, Console: os.Stdout}
	var es *qemu.EchoServer
	if *echo && !hasParam(flag.Args(), "host") {
		es = &qemu.EchoServer{}
		cfg.Services = append(cfg.Services, es)
	}
	var ns *qemu.NBDServer
	for _, a := range flag.Args() {
		if a != "nbd=auto" {
			cfg.Append = append(cfg.Append, a)
		} else if ns == nil {
			ns = &qemu.NBDServer{Config: nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: *nbdSize}}
			cfg.Services = append(cfg.Services, ns)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	run, err := qemu.Boot(ctx, cfg)
	if run != nil {
		fmt.Fprintf(os.Stderr, "yolk-qemu: %s\n", strings.Join(run.Args, " "))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "yolk-qemu: %v\n", err)
		if run != nil && run.TimedOut {
			os.Exit(124)
		}
		os.Exit(125)
	}
	verdict, _ := run.Find("result")
	fmt.Fprintf(os.Stderr, "yolk-qemu: banner after %v, scenario %s %s, QEMU exit status %d (%v in all, %v of host CPU)\n",
		run.Banner.Round(time.Millisecond), verdict.Value("scenario"), verdict.Value("status"),
		run.ExitCode, run.Elapsed.Round(time.Millisecond), run.CPU.Round(time.Millisecond))
	if es != nil {
		fmt.Fprintf(os.Stderr, "yolk-qemu: echo server on %s echoed %d bytes\n", es.Addr(), es.Echoed())
	}
	if ns != nil && ns.Server != nil {
		fmt.Fprintf(os.Stderr, "yolk-qemu: %s server on %s, %d bytes\n", ns.Server.Kind, ns.Server.Addr, ns.Server.Size)
	}
	os.Exit(run.ExitCode)
}

func hasParam(args []string, key string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, key+"=") {
			return true
		}
	}
	return false
}
