package mm

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/phys"
)

// Faults from several goroutines in one address space (mmap lock held for
// reading, racing on the same PTEs and on anon_vma_prepare), beside a
// goroutine that forks and exits children (mmap lock for writing, COW) and
// one that ages pages through the rmap (anon_vma lock, then page-table
// locks). Under -race this is the lock-order and data-race test; after
// it, Check must pass and every page must hold what its last writer
// wrote.
func TestConcurrentFaultsForkAndAging(t *testing.T) {
	m := newTestManager(t)
	as := newAS(t, m)
	const pages = 64
	a := mmap(t, as, 0x60000000, pages, ProtRead|ProtWrite, MapFixed)
	const writers, rounds = 4, 250

	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 16)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf := make([]byte, 8)
			for r := 0; r < rounds; r++ {
				for p := w; p < pages; p += writers { // each page has one writer
					addr := a + uint32(p)*pg
					if err := as.Write(addr, []byte{byte(w), byte(r)}); err != nil {
						errs <- err
						return
					}
					// and everyone reads everyone's pages
					if err := as.Read(a+uint32((p+r)%pages)*pg, buf); err != nil {
						errs <- err
						return
					}
				}
			}
		}(w)
	}
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { // fork and exit
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := as.Fork()
			if err != nil {
				errs <- err
				return
			}
			if err := c.Write(a, []byte{0xff}); err != nil {
				errs <- err
			}
			if err := c.Exit(); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() { // age pages through the rmap, as reclaim will
		defer bg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			pfn, ok := as.FollowPage(a + uint32(i%pages)*pg)
			if !ok {
				continue
			}
			p := m.pool.Page(pfn)
			if !p.TestAndSet(phys.PGLocked) {
				if _, err := m.PageReferenced(pfn); err != nil {
					errs <- err
				}
				p.Clear(phys.PGLocked)
			}
			m.pool.Put(pfn)
		}
	}()
	wg.Wait()
	close(stop)
	bg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, m.Check())
	for p := 0; p < pages; p++ {
		var b [2]byte
		require.NoError(t, as.Read(a+uint32(p)*pg, b[:]))
		assert.Equal(t, [2]byte{byte(p % writers), byte(rounds - 1)}, b, "page %d", p)
	}
}
