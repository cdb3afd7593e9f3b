package journal

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/blk"
	"yolk/blk/logwrites"
	"yolk/mm/phys"
)

// The crash tests record every request the journal makes with its flush and
// FUA boundaries (blk/logwrites, after dm-log-writes), then rebuild the
// device as a crash at each boundary could have left it: prefixes, subsets
// and reorders of the writes not yet durable, torn writes. Recovery must
// bring back every transaction acknowledged before the crash, intact, and
// no half transaction.

// crashWorkload is a sequence of transactions, each a set of home blocks
// at a version; transaction i writes version i+1.
type crashWorkload struct {
	homes  [][]uint64
	images [][]byte // images[p]: the home area after p transactions
}

// expected is the home area after the first p transactions.
func (w *crashWorkload) expected(p int, from, to uint64) []byte {
	if w.images == nil {
		img := make([]byte, (to-from)*testBS)
		w.images = append(w.images, bytes.Clone(img))
		for i, homes := range w.homes {
			for _, h := range homes {
				copy(img[(h-from)*testBS:], block(h, i+1))
			}
			w.images = append(w.images, bytes.Clone(img))
		}
	}
	return w.images[p]
}

func acked(marks []string) int {
	n := 0
	for _, m := range marks {
		if v, ok := strings.CutPrefix(m, "acked "); ok {
			k, _ := strconv.Atoi(v)
			n = max(n, k)
		}
	}
	return n
}

// checkRecovered opens the journal on dev (recovering it) and checks that
// the home area equals the workload after some prefix of at least ack
// transactions. It returns the prefix and the recovery report.
func checkRecovered(t *testing.T, dev blk.Device, pool *phys.Pool, w *crashWorkload, ack int, from, to uint64) (int, Recovery, error) {
	j, err := Open(dev, 0, testBS, Config{Pool: pool})
	if err != nil {
		return 0, Recovery{}, fmt.Errorf("recovery failed: %w", err)
	}
	r := j.Recovery()
	if err := j.Close(); err != nil {
		return 0, r, fmt.Errorf("close after recovery: %w", err)
	}
	got := make([]byte, (to-from)*testBS)
	if err := dev.ReadAt(got, int64(from)*testBS); err != nil {
		return 0, r, err
	}
	for p := len(w.homes); p >= ack; p-- {
		if bytes.Equal(got, w.expected(p, from, to)) {
			return p, r, nil
		}
	}
	// Say which acknowledged block is wrong.
	want := w.expected(ack, from, to)
	for b := from; b < to; b++ {
		o := (b - from) * testBS
		if !bytes.Equal(got[o:o+testBS], want[o:o+testBS]) {
			return 0, r, fmt.Errorf("home block %d matches no prefix of at least %d transactions (recovery: %+v)", b, ack, r)
		}
	}
	return 0, r, fmt.Errorf("no prefix of at least %d transactions matches (recovery %+v)", ack, r)
}

func TestCrashStates(t *testing.T) {
	const (
		devBlocks = 128
		logBlocks = 24 // a 23-block log: it wraps and fills
		maxTx     = 8
		homeFrom  = 32
	)
	pool := newPool(t, 16)
	free := pool.FreeFrames()
	ram, _ := newDevice(t, devBlocks, logBlocks, maxTx)
	l, err := logwrites.New(ram)
	require.NoError(t, err)

	j, err := Open(l, 0, testBS, Config{Pool: pool})
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(7, 7))
	w := &crashWorkload{}
	for i := range 60 {
		n := 1 + r.IntN(maxTx)
		if i%10 == 9 {
			n = maxTx // full transactions fill the log
		}
		seen := map[uint64]bool{}
		var homes []uint64
		for len(homes) < n {
			h := homeFrom + r.Uint64N(devBlocks-homeFrom)
			if !seen[h] {
				seen[h] = true
				homes = append(homes, h)
			}
		}
		w.homes = append(w.homes, homes)
		commit(t, j, i+1, homes...)
		l.Mark(fmt.Sprintf("acked %d", i+1))
		if i == 30 {
			require.NoError(t, j.Checkpoint())
		}
	}
	require.NoError(t, j.Close())
	l.Mark("closed")
	s := j.Stats()
	t.Logf("workload: %d transactions, %d log blocks written, %d checkpoints, log peak %d of %d blocks",
		s.Commits, s.LogBlocks, s.Checkpoints, s.MaxUsed, logBlocks-1)
	require.Greater(t, s.LogBlocks, uint64(3*(logBlocks-1)), "the log wraps several times")
	require.Empty(t, l.Races(), "the journal never has overlapping writes in flight together")

	states, st := l.Enumerate(logwrites.EnumerateOptions{Seed: 1, MaxPerPoint: 6, MaxStates: 1500})
	t.Logf("crash states: %d points, %d distinct states possible, %d checked", st.Points, st.Distinct, len(states))
	require.GreaterOrEqual(t, len(states), 500)

	stops := map[string]int{}
	var torn, reordered, partial, beyond int
	for _, cs := range states {
		dev, err := l.ReplayImage(cs)
		require.NoError(t, err)
		ack := acked(cs.Marks)
		p, rec, err := checkRecovered(t, dev, pool, w, ack, homeFrom, devBlocks)
		dev.Close()
		require.NoError(t, err, "state %s", cs.Name)
		if len(cs.Torn) > 0 {
			torn++
		}
		if len(cs.Reorder) > 0 {
			reordered++
		}
		if p > ack {
			beyond++ // committed to the log, not yet acknowledged
		}
		if rec.Transactions > 0 {
			partial++
		}
		stops[stopKind(rec.Stop)]++
	}
	t.Logf("%d states recovered: %d with torn writes, %d reordered, %d replaying transactions, %d with a committed but unacknowledged transaction", len(states), torn, reordered, partial, beyond)
	t.Logf("where recovery stopped: %v", stops)
	assert.Positive(t, torn)
	assert.Positive(t, stops["stale"], "stale blocks were rejected")
	assert.Positive(t, stops["torn"], "torn or corrupt blocks were rejected")
	assert.Equal(t, free, pool.FreeFrames())
}

// stopKind sorts recovery's stop reasons.
func stopKind(s string) string {
	switch {
	case strings.Contains(s, "(stale)"):
		return "stale"
	case strings.Contains(s, "not a valid header") || strings.Contains(s, "checksum") || strings.Contains(s, "does not match"):
		return "torn"
	case strings.Contains(s, "whole log"):
		return "end of log"
	default:
		return "other"
	}
}

// TestCrashDuringRecovery crashes recovery itself, at every boundary of
// its writes, and recovers again.
func TestCrashDuringRecovery(t *testing.T) {
	pool := newPool(t, 16)
	ram, _ := newDevice(t, 128, 48, 8)
	j := open(t, ram, pool)
	w := &crashWorkload{}
	r := rand.New(rand.NewPCG(3, 3))
	for i := range 5 {
		homes := []uint64{60 + uint64(i), 70 + r.Uint64N(50), 121}
		w.homes = append(w.homes, homes)
		commit(t, j, i+1, homes...)
	}
	crashed := image(t, ram) // five committed transactions, none home
	require.NoError(t, j.Close())

	l, err := logwrites.New(crashed)
	require.NoError(t, err)
	p, rec, err := checkRecovered(t, l, pool, w, 5, 60, 128)
	require.NoError(t, err)
	require.Equal(t, 5, p)
	require.Equal(t, 5, rec.Transactions)

	states, st := l.Enumerate(logwrites.EnumerateOptions{Seed: 2})
	t.Logf("recovery crashed in %d states (%d points)", len(states), st.Points)
	require.NotEmpty(t, states)
	for _, cs := range states {
		dev, err := l.ReplayImage(cs)
		require.NoError(t, err)
		_, _, err = checkRecovered(t, dev, pool, w, 5, 60, 128)
		dev.Close()
		require.NoError(t, err, "recovery after a crash in recovery, state %s", cs.Name)
	}
}

// TestCrashStatesGroupCommit runs committers in parallel, so transactions
// hold several handles, and checks each handle is all or nothing and every
// acknowledged one is there.
func TestCrashStatesGroupCommit(t *testing.T) {
	const writers, each, per = 4, 12, 3
	pool := newPool(t, 16)
	ram, _ := newDevice(t, 64+writers*each*per, 40, 16)
	l, err := logwrites.New(ram)
	require.NoError(t, err)
	j, err := Open(l, 0, testBS, Config{Pool: pool})
	require.NoError(t, err)

	homesOf := func(w, k int) []uint64 {
		base := 64 + uint64((w*each+k)*per)
		return []uint64{base, base + 1, base + 2}
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range each {
				h, err := j.Begin(per)
				if !assert.NoError(t, err) {
					return
				}
				for _, home := range homesOf(w, k) {
					assert.NoError(t, h.Add(home, block(home, 1)))
				}
				if assert.NoError(t, h.Commit()) {
					l.Mark(fmt.Sprintf("handle %d %d", w, k))
				}
			}
		}()
	}
	wg.Wait()
	s := j.Stats()
	require.NoError(t, j.Close())
	t.Logf("%d handles in %d transactions", s.Handles, s.Commits)

	states, st := l.Enumerate(logwrites.EnumerateOptions{Seed: 3, MaxPerPoint: 4, MaxStates: 500})
	t.Logf("crash states: %d distinct, %d checked", st.Distinct, len(states))
	for _, cs := range states {
		dev, err := l.ReplayImage(cs)
		require.NoError(t, err)
		jr, err := Open(dev, 0, testBS, Config{Pool: pool})
		require.NoError(t, err, cs.Name)
		require.NoError(t, jr.Close())
		ackedHandles := map[string]bool{}
		for _, m := range cs.Marks {
			ackedHandles[m] = true
		}
		for w := range writers {
			for k := range each {
				present := 0
				for _, home := range homesOf(w, k) {
					b := make([]byte, testBS)
					require.NoError(t, dev.ReadAt(b, int64(home)*testBS))
					if bytes.Equal(b, block(home, 1)) {
						present++
					} else {
						require.True(t, bytes.Equal(b, make([]byte, testBS)), "home %d holds neither old nor new data in %s", home, cs.Name)
					}
				}
				require.True(t, present == 0 || present == per, "handle %d/%d half there (%d of %d) in %s", w, k, present, per, cs.Name)
				if ackedHandles[fmt.Sprintf("handle %d %d", w, k)] {
					require.Equal(t, per, present, "acknowledged handle %d/%d lost in %s", w, k, cs.Name)
				}
			}
		}
		dev.Close()
	}
}
