package shell

import (
	"errors"
	"fmt"

	"yolk/blk"
	"yolk/mm"
	"yolk/mm/pgtable"
	"yolk/mm/phys"
)

// The shell's machine: a memory manager on the pool, a swap device and
// two tasks for ps, maps and smaps to show (see the package doc).
const (
	swapName = "/dev/zram0"
	swapSize = 16 << 20

	heapSize    = 64 << 10
	heapPageout = 4 // heap pages init pages out to swap
	hugeSize    = 4 * pgtable.SectionSize
	pageSize    = pgtable.PageSize
)

// A task is a process the shell started: an address space with a name
// and a parent, as ps shows them.
type task struct {
	comm string
	ppid int
	as   *mm.AddressSpace
}

// machine is what the shell runs on between scenarios.
type machine struct {
	mgr   *mm.Manager
	swap  *blk.RAM
	tasks []task // parents before children
}

// boot makes the manager, turns swap on and starts init and its child.
// On error everything made so far is undone.
func boot(pool *phys.Pool, log func(string)) (m *machine, err error) {
	mgr, err := mm.New(mm.Config{Pool: pool, Log: log})
	if err != nil {
		return nil, err
	}
	m = &machine{mgr: mgr}
	defer func() {
		if err != nil {
			err = errors.Join(err, m.shutdown())
			m = nil
		}
	}()
	if m.swap, err = blk.NewRAM(blk.RAMConfig{Name: swapName, Size: swapSize}); err != nil {
		return m, err
	}
	if err = mgr.Swapon(m.swap, mm.SwapOptions{Name: swapName}); err != nil {
		return m, err
	}
	init, err := m.spawn("init", 0, mgr.NewAddressSpace)
	if err != nil {
		return m, err
	}
	huge, err := startInit(init)
	if err != nil {
		return m, fmt.Errorf("init: %w", err)
	}
	child, err := m.spawn("child", init.PID(), init.Fork)
	if err != nil {
		return m, fmt.Errorf("fork: %w", err)
	}
	// A write into the shared huge page: copy-on-write of one small page.
	if err = child.Write(huge+3*pageSize, []byte("child was here")); err != nil {
		return m, fmt.Errorf("child: %w", err)
	}
	return m, nil
}

// spawn records a new address space made by mk.
func (m *machine) spawn(comm string, ppid int, mk func() (*mm.AddressSpace, error)) (*mm.AddressSpace, error) {
	as, err := mk()
	if err != nil {
		return nil, err
	}
	m.tasks = append(m.tasks, task{comm: comm, ppid: ppid, as: as})
	return as, nil
}

// startInit gives init its memory: a heap written page by page, some of
// it paged out, and an area of huge pages, the last lazily freed. It
// returns the huge area's address.
func startInit(as *mm.AddressSpace) (uint32, error) {
	heap, err := as.Mmap(0, heapSize, mm.ProtRead|mm.ProtWrite, 0)
	if err != nil {
		return 0, err
	}
	for off := uint32(0); off < heapSize; off += pageSize {
		if err := as.Write(heap+off, []byte(fmt.Sprintf("init heap page %d", off/pageSize))); err != nil {
			return 0, err
		}
	}
	if err := as.Madvise(heap, heapPageout*pageSize, mm.MadvPageout); err != nil {
		return 0, fmt.Errorf("MADV_PAGEOUT: %w", err)
	}
	huge, err := as.Mmap(0, hugeSize, mm.ProtRead|mm.ProtWrite, 0)
	if err != nil {
		return 0, err
	}
	for off := uint32(0); off < hugeSize; off += pgtable.SectionSize {
		if err := as.Write(huge+off, []byte("init huge page")); err != nil {
			return 0, err
		}
	}
	last := huge + hugeSize - pgtable.SectionSize
	if err := as.Madvise(last, pgtable.SectionSize, mm.MadvFree); err != nil {
		return 0, fmt.Errorf("MADV_FREE: %w", err)
	}
	return huge, nil
}

// find returns the task with the given PID.
func (m *machine) find(pid int) (task, bool) {
	for _, t := range m.tasks {
		if t.as.PID() == pid {
			return t, true
		}
	}
	return task{}, false
}

// shutdown exits the tasks, children first, turns swap off and closes
// the manager, so that the pool is as it was before boot.
func (m *machine) shutdown() error {
	var errs []error
	for i := len(m.tasks) - 1; i >= 0; i-- {
		if err := m.tasks[i].as.Exit(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.tasks[i].comm, err))
		}
	}
	m.tasks = nil
	if err := m.mgr.Close(); err != nil { // swapoff too
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
