package workqueue

import (
	"testing"

	"yolk/mm/phys"
)

// BenchmarkQueueRun is the cost of queue_work plus running the work, with
// an idle worker to take it. One op is one work: Queue, the wake-up, the
// worker's claim and finish, and the hand-off back to the benchmark
// goroutine. Reports ns/work, on a plain queue and on a MemReclaim one.
func BenchmarkQueueRun(b *testing.B) {
	for _, flags := range []Flags{0, MemReclaim} {
		b.Run(flagsName(flags), func(b *testing.B) {
			p := newPool(b, 1, phys.Config{})
			q := newQueue(b, "bench", p, Config{Flags: flags, MaxActive: 1})
			done := make(chan struct{}, 1)
			w := &Work{Func: func(*Work, []byte) { done <- struct{}{} }}
			q.Queue(w)
			<-done
			waitIdle(b, q, 1)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				q.Queue(w)
				<-done
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/work")
			b.ReportMetric(0, "ns/op") // the same figure
			if s := q.Stats(); s.Created != 1 || s.RescuerRuns != 0 {
				b.Fatalf("the idle worker should have run everything: %+v", s)
			}
		})
	}
}

// BenchmarkQueueBatch: one op is 64 works queued and a Flush that waits
// for them, so the workers find work waiting instead of being woken for
// each. Reports ns/work (the op's time / 64); B/op and allocs/op are per
// 64 works.
func BenchmarkQueueBatch(b *testing.B) {
	p := newPool(b, 1, phys.Config{})
	q := newQueue(b, "batch", p, Config{})
	works := make([]Work, 64)
	for i := range works {
		works[i].Func = func(*Work, []byte) {}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range works {
			q.Queue(&works[k])
		}
		q.Flush()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(works)), "ns/work")
	b.ReportMetric(0, "ns/op")
}
