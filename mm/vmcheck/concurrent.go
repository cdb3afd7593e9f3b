package vmcheck

import (
	"errors"
	"fmt"
	"math/rand"
	"sync"

	"yolk/mm"
	"yolk/mm/phys"
)

// ConcurrentConfig bounds a RunConcurrent.
type ConcurrentConfig struct {
	Spaces     int // address spaces, each driven by its own goroutine (default 4)
	Steps      int // operations per space
	Reclaimers int // goroutines swapping out and aging pages (default 2)
}

// RunConcurrent runs the model's operations in several address spaces at
// once: one goroutine per space does mmap, munmap, mprotect, madvise,
// writes and reads against that space's model, while reclaimers swap out
// and age pages of every space through the rmap. The spaces are one fork
// family, so their VMAs share anon_vmas, and a walk from one space's page
// visits VMAs that another goroutine is splitting, merging and
// re-protecting: under -race this is the test for races between rmap
// walks and VMA changes. Reclaim and aging change no data, so each
// space's model stays exact and every read is checked against it; Check
// and the views run at the end, with every goroutine stopped. mgr must
// have no address spaces.
func RunConcurrent(mgr *mm.Manager, seed int64, cfg ConcurrentConfig) (Stats, error) {
	if cfg.Spaces <= 0 {
		cfg.Spaces = 4
	}
	if cfg.Reclaimers <= 0 {
		cfg.Reclaimers = 2
	}
	src := rand.New(rand.NewSource(seed))
	// The family: a parent with memory, and its children.
	root := &runner{mgr: mgr, src: src, cfg: Config{MaxSpaces: cfg.Spaces, ViewEvery: 1, CheckEvery: 1}, stats: Stats{Ops: map[string]int{}},
		readers: map[uint32]int{}, writer: map[uint32]where{}}
	as, err := mgr.NewAddressSpace()
	if err != nil {
		return root.stats, err
	}
	root.spaces = []*space{{as: as, pages: map[uint32]*page{}}}
	// Enough inherited memory that the workers' mprotects and munmaps
	// mostly land on VMAs of the family's shared anon_vmas, and the
	// reclaimers mostly walk them.
	for range 64 {
		if err := root.mmap(root.spaces[0]); err != nil {
			return root.stats, root.finish(err)
		}
		if err := root.write(root.spaces[0]); err != nil {
			return root.stats, root.finish(err)
		}
	}
	for len(root.spaces) < cfg.Spaces {
		if err := root.fork(root.spaces[0]); err != nil {
			return root.stats, root.finish(err)
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, cfg.Spaces+cfg.Reclaimers)
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func(err error) {
		errs <- err
		stopOnce.Do(func() { close(stop) })
	}
	workers := make([]*runner, len(root.spaces))
	for i, s := range root.spaces {
		w := &runner{mgr: mgr, src: rand.New(rand.NewSource(seed*1000 + int64(i))), stats: Stats{Ops: map[string]int{}}, spaces: []*space{s}, concurrent: true}
		workers[i] = w
		wg.Go(func() {
			for step := range cfg.Steps {
				select {
				case <-stop:
					return
				default:
				}
				name, err := w.concurrentStep(s)
				w.stats.Ops[name]++
				w.stats.Steps++
				if err != nil {
					halt(fmt.Errorf("pid %d, step %d (%s): %w", s.as.PID(), step, name, err))
					return
				}
			}
		})
	}
	spaces := make([]*mm.AddressSpace, len(root.spaces))
	for i, s := range root.spaces {
		spaces[i] = s.as
	}
	done := make(chan struct{})
	var rwg sync.WaitGroup
	reclaimed := make([]int, cfg.Reclaimers)
	for i := range cfg.Reclaimers {
		rsrc := rand.New(rand.NewSource(-seed - int64(i)))
		rwg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				as := spaces[rsrc.Intn(len(spaces))]
				addr := arenaStart + uint32(rsrc.Intn(arenaPages))*pageSize
				n, err := reclaimOrAge(mgr, as, addr, rsrc.Intn(2) == 0)
				if err != nil {
					halt(fmt.Errorf("reclaimer %d at %#08x in pid %d: %w", i, addr, as.PID(), err))
					return
				}
				reclaimed[i] += n
			}
		})
	}
	wg.Wait()
	close(done)
	rwg.Wait()
	close(errs)
	err = errors.Join(collect(errs)...)
	for _, w := range workers {
		root.stats.Steps += w.stats.Steps
		for k, v := range w.stats.Ops {
			root.stats.Ops[k] += v
		}
	}
	for _, n := range reclaimed {
		root.stats.Ops["reclaim"] += n
	}
	if err == nil {
		err = root.check()
		root.stats.Checks++
	}
	return root.stats, root.finish(err)
}

func collect(errs <-chan error) []error {
	var out []error
	for err := range errs {
		out = append(out, err)
	}
	return out
}

// finish exits every space of r and checks that nothing is left, as Run
// does; it returns err if set, else what it found.
func (r *runner) finish(err error) error {
	for _, s := range r.spaces {
		if xerr := s.as.Exit(); err == nil && xerr != nil {
			err = xerr
		}
	}
	if err == nil {
		if err = r.mgr.Check(); err == nil {
			err = swapLeak(r.mgr)
		}
	}
	return err
}

// concurrentStep is step without fork, exit or the rmap operations, which
// the reclaimers do: the operations that change only this space's VMAs,
// page tables and model.
func (r *runner) concurrentStep(s *space) (string, error) {
	// mprotect is the most frequent VMA change here: it rewrites flags,
	// splits and merges the inherited VMAs the reclaimers' walks visit.
	switch n := r.src.Intn(100); {
	case n < 6:
		return "mmap", r.mmap(s)
	case n < 10:
		return "munmap", r.munmap(s)
	case n < 35:
		return "mprotect", r.mprotect(s)
	case n < 40:
		return "madvise", r.madvise(s)
	case n < 70:
		return "write", r.write(s)
	default:
		return "read", r.read(s)
	}
}

// reclaimOrAge either reclaims a batch from the LRU lists, as kswapd
// would (which unmaps pages from every space of the family through the
// rmap), or ages the anonymous page mapped at addr in as
// (page_referenced). It knows nothing of the model: the page's owner may
// be changing its VMAs meanwhile. It returns the frames reclaimed.
func reclaimOrAge(mgr *mm.Manager, as *mm.AddressSpace, addr uint32, out bool) (int, error) {
	if out {
		return mgr.ProactiveReclaim(8), nil
	}
	pfn, ok := as.FollowPage(addr)
	if !ok {
		return 0, nil
	}
	pool := mgr.Pool()
	head := pool.CompoundHead(pfn)
	if pool.Page(head).TestAndSet(phys.PGLocked) {
		return 0, pool.Put(pfn) // reclaim has it
	}
	_, err := mgr.PageReferenced(pfn)
	pool.Page(head).Clear(phys.PGLocked)
	if perr := pool.Put(pfn); err == nil {
		err = perr
	}
	return 0, err
}
