package workqueue

import (
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/mm/phys"
)

// hog puts the pool under pressure: it grabs every free frame, reserve
// included, or gives some back, at random; as the pool's Reclaimer it
// gives back a few frames on demand, so that some waiting allocations
// succeed and others fail.
type hog struct {
	p  *phys.Pool
	mu sync.Mutex
	fs []phys.PFN
}

func (h *hog) grabAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		f, err := h.p.AllocPage(phys.Memalloc)
		if err != nil {
			return
		}
		h.fs = append(h.fs, f)
	}
}

func (h *hog) release(n int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n = min(n, len(h.fs))
	for _, f := range h.fs[len(h.fs)-n:] {
		if err := h.p.Free(f, 0); err != nil {
			panic(err)
		}
	}
	h.fs = h.fs[:len(h.fs)-n]
	return n
}

func (h *hog) Reclaim(order int, ctx phys.Context) int { return h.release(16) }

// Many goroutines queue reusable works on a MemReclaim queue while the pool
// runs dry and recovers at random; works queue works, producers flush and
// cancel. Every successful Queue that is not cancelled runs exactly once,
// never on two workers at once nor sharing a buffer, and every frame comes
// back.
func TestStress(t *testing.T) {
	before := runtime.NumGoroutine()
	p := newPool(t, 4, phys.Config{ThrottleTimeout: time.Millisecond, MaxReclaimRetries: 2})
	q := newQueue(t, "stress", p, Config{
		Flags:         MemReclaim,
		MaxActive:     4,
		BufferOrder:   1,
		IdleTimeout:   2 * time.Millisecond, // workers come and go
		MaydayTimeout: 2 * time.Millisecond,
	})
	h := &hog{p: p}
	// Start dry: the first worker cannot be had without waiting.
	h.grabAll()
	p.SetReclaimer(h)

	type item struct {
		Work
		id                  uint64
		queued, ran, inside atomic.Int64
		chain               *item
	}
	var bad atomic.Int64
	items := make([]*item, 64)
	for i := range items {
		items[i] = &item{id: uint64(i)}
	}
	for i, it := range items {
		it.chain = items[(i*13+5)%len(items)]
		it.Func = func(w *Work, buf []byte) {
			if it.inside.Add(1) != 1 {
				bad.Add(1) // two workers at once
			}
			if len(buf) != 2*phys.PageSize {
				bad.Add(1)
			}
			// A buffer shared with a concurrent run would be overwritten.
			token := it.id<<32 | uint64(it.ran.Load())
			binary.LittleEndian.PutUint64(buf, token)
			runtime.Gosched()
			if binary.LittleEndian.Uint64(buf) != token {
				bad.Add(1)
			}
			if token%8 == 0 {
				time.Sleep(100 * time.Microsecond) // a backlog builds up
			}
			it.ran.Add(1)
			if token%3 == 0 && q.Queue(&it.chain.Work) {
				it.chain.queued.Add(1)
			}
			it.inside.Add(-1)
		}
	}

	stop := make(chan struct{})
	var pressure sync.WaitGroup
	pressure.Go(func() {
		r := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r.IntN(3) == 0 {
				h.grabAll()
			} else {
				h.release(r.IntN(64))
			}
			time.Sleep(time.Duration(r.IntN(1000)) * time.Microsecond)
		}
	})
	pressure.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if err := q.check(); err != nil {
				t.Error(err)
				return
			}
		}
	})

	// Producers queue in bursts, all together, with pauses between longer
	// than IdleTimeout, so that idle workers exit and are created again,
	// burst after burst, while the pool is dry at times.
	const period, burst = 10 * time.Millisecond, 4 * time.Millisecond
	start := time.Now()
	deadline := start.Add(400 * time.Millisecond)
	var producers sync.WaitGroup
	for g := 0; g < 8; g++ {
		producers.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 42))
			for time.Now().Before(deadline) {
				if in := time.Since(start) % period; in > burst {
					time.Sleep(period - in)
					continue
				}
				it := items[r.IntN(len(items))]
				switch n := r.IntN(400); {
				case n == 0:
					q.Flush()
				case n < 4:
					q.FlushWork(&it.Work)
				case n < 6:
					if q.Cancel(&it.Work) {
						it.queued.Add(-1)
					}
				default:
					if q.Queue(&it.Work) {
						it.queued.Add(1)
					}
				}
				if n := r.IntN(16); n == 0 {
					time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond)
				}
			}
		})
	}
	producers.Wait()
	// Everything completes while the pressure goes on: the rescuer needs
	// nothing from the pool.
	flushed := make(chan struct{})
	go func() { q.Flush(); close(flushed) }()
	require.NoError(t, recv(flushed, 30*time.Second), "Flush under memory pressure (stats %+v)", q.Stats())
	close(stop)
	pressure.Wait()
	h.release(len(h.fs))
	// Works queue works: flush until a flush leaves nothing behind.
	for s := q.Stats(); s.Pending+s.Running > 0; s = q.Stats() {
		q.Flush()
	}

	var total int64
	for i, it := range items {
		assert.Equal(t, it.queued.Load(), it.ran.Load(), "work %d", i)
		total += it.ran.Load()
	}
	assert.Zero(t, bad.Load(), "works ran concurrently or shared a buffer")
	st := q.Stats()
	t.Logf("stress: %d works run; stats %+v; pool %+v", total, st, p.Stats())
	assert.Equal(t, uint64(total), st.Processed)
	assert.Positive(t, st.CreateFailures, "the pool started dry")
	assert.Positive(t, st.Maydays)
	assert.LessOrEqual(t, st.MaxWorkers, 4)
	requireCheck(t, q)

	q.Destroy()
	requireAllFree(t, p)
	requireNoLeaks(t, before)
}
