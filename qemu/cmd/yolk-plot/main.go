// Command yolk-plot draws a saved run again: the CSV that yolk-qemu
// writes beside a run's plot (package yolk/qemu/plot) back to a PNG.
//
//	yolk-plot [-o FILE.png] [-title TEXT] RUN.csv
//
// By default the PNG goes beside the CSV, RUN.png, titled with the CSV's
// name. Exit status 1 if the CSV cannot be read or plotted, 2 on bad
// usage.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"yolk/qemu/plot"
)

func main() {
	out := flag.String("o", "", "the PNG to write (default: the CSV's path with .png)")
	title := flag.String("title", "", "the figure's title (default: yolk and the CSV's name)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: yolk-plot [-o FILE.png] [-title TEXT] RUN.csv\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	in := flag.Arg(0)
	if *out == "" {
		*out = strings.TrimSuffix(in, filepath.Ext(in)) + ".png"
	}
	if *title == "" {
		*title = "yolk " + filepath.Base(in)
	}
	if err := run(in, *out, *title); err != nil {
		fmt.Fprintf(os.Stderr, "yolk-plot: %v\n", err)
		os.Exit(1)
	}
}

func run(in, out, title string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	stats, err := plot.ReadCSV(f)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	fig, err := plot.Build(title, stats)
	if err != nil {
		return err
	}
	png, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := fig.WritePNG(png); err != nil {
		png.Close()
		return err
	}
	if err := png.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "yolk-plot: plot of %d stat lines in %s\n", stats.Lines(), out)
	return nil
}
