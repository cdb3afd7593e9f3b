package shell

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"yolk/mm"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// A file is one of the /proc or /sys files the shell serves. read writes
// its contents (nil: write-only, as drop_caches is); write takes a new
// value (nil: read-only).
type file struct {
	read  func(w io.Writer) error
	write func(v string) error
	help  string
}

// thpDir is where Linux keeps the THP knobs.
const thpDir = "/sys/kernel/mm/transparent_hugepage/"

// sysctlDir is where a sysctl's file is: vm.min_free_kbytes is
// /proc/sys/vm/min_free_kbytes.
const sysctlDir = "/proc/sys/"

// files returns the fixed files by path. Per-process files
// (/proc/PID/maps, /proc/PID/smaps) are found by open.
func (s *Shell) files() map[string]file {
	pool := s.cfg.Pool
	text := func(f func() string) func(io.Writer) error {
		return func(w io.Writer) error { _, err := io.WriteString(w, f()); return err }
	}
	fs := map[string]file{
		"/proc/meminfo":      {read: func(w io.Writer) error { return phys.WriteMeminfo(w, s.m.mgr.Meminfo()) }, help: "memory figures, in kB"},
		"/proc/vmstat":       {read: func(w io.Writer) error { return phys.WriteVmstat(w, s.m.mgr.Vmstat()) }, help: "counters and events"},
		"/proc/buddyinfo":    {read: pool.WriteBuddyinfo, help: "free blocks of each order"},
		"/proc/pagetypeinfo": {read: pool.WritePagetypeinfo, help: "free blocks by migrate type, and pageblocks"},
		"/proc/zoneinfo":     {read: pool.WriteZoneinfo, help: "the zone: watermarks, counters"},
		"/proc/swaps":        {read: text(s.m.mgr.ProcSwaps), help: "swap devices"},
		"/proc/net/yolk_rx":  {read: s.writeNet, help: "the network receive path's counters and charged sockets"},

		sysctlDir + "vm/min_free_kbytes": {
			read:  text(func() string { return fmt.Sprintln(pool.MinFreeKbytes()) }),
			write: s.setMinFreeKbytes,
			help:  "the min watermark, in kB",
		},
		sysctlDir + "vm/watermark_scale_factor": {
			read: text(func() string { return fmt.Sprintln(pool.WatermarkScaleFactor()) }),
			write: func(v string) error {
				n, err := intIn(v, 1, 3000)
				if err != nil {
					return err
				}
				return pool.SetWatermarkScaleFactor(n)
			},
			help: "the gap from min to low and low to high, in 1/10000 of memory",
		},
		sysctlDir + "vm/drop_caches": {
			write: func(v string) error {
				if _, err := intIn(v, 1, 3); err != nil {
					return err
				}
				s.m.mgr.DropCaches()
				return nil
			},
			help: "write 1, 2 or 3 to drop clean page cache (write-only)",
		},
		thpDir + "enabled": {
			read: text(func() string { return s.m.mgr.THPEnabledFile() + "\n" }),
			write: func(v string) error {
				mode, err := mm.ParseTHPMode(v)
				if err != nil {
					return fmt.Errorf("%q is not always, madvise or never", v)
				}
				return s.m.mgr.SetTHPEnabled(mode)
			},
			help: "THP policy for faults: always, madvise or never",
		},
		thpDir + "hpage_pmd_size": {
			read: text(func() string { return fmt.Sprintln(pgtable.SectionSize) }),
			help: "the huge page size, in bytes (a 1 MiB ARMv7 section)",
		},
	}
	return fs
}

// paths returns the fixed files' paths, sorted.
func paths(fs map[string]file) []string {
	out := make([]string, 0, len(fs))
	for p := range fs {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// open finds a file by path: a fixed one, or /proc/PID/maps or smaps of a
// task.
func (s *Shell) open(path string) (file, error) {
	if f, ok := s.files()[path]; ok {
		return f, nil
	}
	rest, ok := strings.CutPrefix(path, "/proc/")
	if !ok {
		return file{}, errNoFile
	}
	pidText, name, ok := strings.Cut(rest, "/")
	if !ok || strings.Trim(pidText, "0123456789") != "" {
		return file{}, errNoFile
	}
	t, err := s.task(pidText)
	if err != nil {
		return file{}, err
	}
	switch name {
	case "maps":
		return file{read: t.as.WriteMaps}, nil
	case "smaps":
		return file{read: t.as.WriteSmaps}, nil
	}
	return file{}, errNoFile
}

var errNoFile = errors.New("no such file")

// task finds a live task by its PID as typed.
func (s *Shell) task(pidText string) (task, error) {
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return task{}, fmt.Errorf("%q is not a PID", pidText)
	}
	t, ok := s.m.find(pid)
	if !ok {
		return task{}, fmt.Errorf("no process %d (ps lists them)", pid)
	}
	return t, nil
}

// setMinFreeKbytes is the sysctl, bounded by what the pool can take.
func (s *Shell) setMinFreeKbytes(v string) error {
	pool := s.cfg.Pool
	n, err := intIn(v, 0, pool.MaxMinFreeKbytes())
	if err != nil {
		return err
	}
	return pool.SetMinFreeKbytes(n)
}

// writeNet is /proc/net/yolk_rx, or why there is none.
func (s *Shell) writeNet(w io.Writer) error {
	if s.cfg.Rx == nil {
		if s.cfg.NetErr != nil {
			return fmt.Errorf("no network: %v", s.cfg.NetErr)
		}
		return errors.New("no network")
	}
	return s.cfg.Rx.WriteProc(w)
}

// intIn parses a decimal integer from lo to hi.
func intIn(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", v)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%d is out of range: from %d to %d", n, lo, hi)
	}
	return n, nil
}
