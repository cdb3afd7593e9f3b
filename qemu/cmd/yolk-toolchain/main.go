// Command yolk-toolchain installs the TamaGo Go distribution that builds
// yolk's image where `go tool tamago` looks for it (make toolchain).
//
//	yolk-toolchain [-version tamago-go1.26.0] [-archive SRC.tar.gz] [-skip WHAT]
//
// It does nothing when the distribution is already installed. Otherwise it
// builds it from -archive, a .tar.gz of the tamago-go source tree at the
// tag (what `git archive` makes), or, without one, lets upstream's
// installer clone and build it; either way in a staging directory that is
// renamed into place only once its go command works (package
// yolk/qemu/toolchain).
//
// Exit status: 0 installed (or already there), 1 the install failed, 2 bad
// usage, 3 with -skip: neither an archive nor network access, and the
// "SKIP: WHAT: ..." line was printed; 130 interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"yolk/qemu/toolchain"
)

func main() {
	version := flag.String("version", toolchain.Version, "the distribution to install (tamago-goX.Y.Z)")
	archive := flag.String("archive", "", "build from this source archive of the tag instead of cloning it")
	skip := flag.String("skip", "", "when there is neither an archive nor network access, print `SKIP: WHAT: reason` and exit 3")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: yolk-toolchain [-version V] [-archive SRC.tar.gz] [-skip WHAT]\n")
		flag.PrintDefaults()
		fmt.Fprintf(os.Stderr, "exit status: 0 installed, 1 failed, 2 usage, 3 skipped (-skip), 130 interrupted\n")
	}
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintf(os.Stderr, "yolk-toolchain: %v\n", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	in := &toolchain.Installer{Version: *version, Archive: *archive, ModuleDir: wd}
	err = in.Install(ctx)
	var offline *toolchain.OfflineError
	remedies := fmt.Sprintf("give this machine network access for upstream's installer, or run make toolchain TAMAGO_GO_SRC=/path/to/%s.src.tar.gz (a git archive of the tag)", in.Version)
	switch {
	case err == nil:
		return
	case ctx.Err() != nil:
		fmt.Fprintf(os.Stderr, "yolk: interrupted: %s is not installed; run make toolchain again to rebuild it\n", in.Version)
		os.Exit(130)
	case errors.As(err, &offline):
		why := fmt.Sprintf("the TamaGo toolchain %s is not installed at %s and cannot be installed here: there is no source archive, and %v; %s",
			in.Version, in.Dir, offline.Reason, remedies)
		if *skip != "" {
			fmt.Printf("SKIP: %s: %s.\n", *skip, why)
			os.Exit(3)
		}
		fmt.Fprintf(os.Stderr, "yolk: %s.\n", why)
	default:
		// The build's own output is above; this is the one line that says
		// what failed and what to do.
		fmt.Fprintf(os.Stderr, "yolk: %v, so nothing was installed at %s; %s.\n", err, in.Dir, remedies)
	}
	os.Exit(1)
}
