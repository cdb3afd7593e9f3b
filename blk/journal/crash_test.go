package journal

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
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
// at a version; transaction i writes version i+1 unless versions says
// otherwise.
type crashWorkload struct {
	homes    [][]uint64
	versions []int    // versions[i]: the version transaction i writes; nil: i+1
	images   [][]byte // images[p]: the home area after p transactions
}

func (w *crashWorkload) version(i int) int {
	if w.versions == nil {
		return i + 1
	}
	return w.versions[i]
}

// expected is the home area after the first p transactions.
func (w *crashWorkload) expected(p int, from, to uint64) []byte {
	if w.images == nil {
		img := make([]byte, (to-from)*testBS)
		w.images = append(w.images, bytes.Clone(img))
		for i, homes := range w.homes {
			for _, h := range homes {
				copy(img[(h-from)*testBS:], block(h, w.version(i)))
			}
			w.images = append(w.images, bytes.Clone(img))
		}
	}
	return w.images[p]
}

// prefix returns the longest prefix of at least ack transactions after
// which the home area is got, or an error naming a home block that no such
// prefix explains.
func (w *crashWorkload) prefix(got []byte, ack int, from, to uint64) (int, error) {
	for p := len(w.homes); p >= ack; p-- {
		if bytes.Equal(got, w.expected(p, from, to)) {
			return p, nil
		}
	}
	// Say which acknowledged block is wrong.
	want := w.expected(ack, from, to)
	for b := from; b < to; b++ {
		o := (b - from) * testBS
		if !bytes.Equal(got[o:o+testBS], want[o:o+testBS]) {
			return 0, fmt.Errorf("home block %d matches no prefix of at least %d transactions", b, ack)
		}
	}
	return 0, fmt.Errorf("no prefix of at least %d transactions matches", ack)
}

// homeArea reads blocks from..to of dev.
func homeArea(t *testing.T, dev blk.Device, from, to uint64) []byte {
	t.Helper()
	got := make([]byte, (to-from)*testBS)
	require.NoError(t, dev.ReadAt(got, int64(from)*testBS))
	return got
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
	p, err := w.prefix(got, ack, from, to)
	if err != nil {
		return 0, r, fmt.Errorf("%w (recovery: %+v)", err, r)
	}
	return p, r, nil
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
	require.Positive(t, s.CheckpointSkipped, "checkpoints left out records later transactions replaced: the crash states cover it")
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
	// A log big enough that five transactions keep it under half full,
	// where the background checkpoint would start writing them home.
	ram, _ := newDevice(t, 256, 112, 8)
	j := open(t, ram, pool)
	w := &crashWorkload{}
	r := rand.New(rand.NewPCG(3, 3))
	for i := range 5 {
		homes := []uint64{188 + uint64(i), 198 + r.Uint64N(50), 249}
		w.homes = append(w.homes, homes)
		commit(t, j, i+1, homes...)
	}
	crashed := image(t, ram) // five committed transactions, none home
	require.NoError(t, j.Close())

	l, err := logwrites.New(crashed)
	require.NoError(t, err)
	p, rec, err := checkRecovered(t, l, pool, w, 5, 188, 256)
	require.NoError(t, err)
	require.Equal(t, 5, p)
	require.Equal(t, 5, rec.Transactions)

	states, st := l.Enumerate(logwrites.EnumerateOptions{Seed: 2})
	t.Logf("recovery crashed in %d states (%d points)", len(states), st.Points)
	require.NotEmpty(t, states)
	for _, cs := range states {
		dev, err := l.ReplayImage(cs)
		require.NoError(t, err)
		_, _, err = checkRecovered(t, dev, pool, w, 5, 188, 256)
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

// blockTears returns, for every write of more than one journal block, the
// two tears a journal fears most, at the last moment the write is not
// durable (just before it completes): the write without its last block (a
// transaction whose commit block did not land) and its last block alone (a
// commit block without the descriptors and data it seals, which a device
// that writes a request's sectors in any order may leave). Enumerate's tears
// are a prefix of random length or random sectors: it makes the first now
// and then, the second almost never.
func blockTears(t *testing.T, l *logwrites.Log) []logwrites.CrashState {
	t.Helper()
	perBlock := testBS / l.SectorSize()
	var out []logwrites.CrashState
	for _, e := range l.Entries() {
		if e.Kind != logwrites.Write || e.Done < 0 || e.Err != nil || e.Len < 2*testBS {
			continue
		}
		n := int(e.Len) / l.SectorSize()
		for _, landed := range []string{fmt.Sprintf("0-%d", n-perBlock-1), fmt.Sprintf("%d-%d", n-perBlock, n-1)} {
			cs, err := l.ParseState(fmt.Sprintf("@%d maybe{%d} torn{%d:%s}", e.Done, e.Seq, e.Seq, landed))
			require.NoError(t, err)
			out = append(out, cs)
		}
	}
	return out
}

// crashStates is Enumerate's states with the block tears added, each state
// once, in order of position (the order that materializes them fastest).
func crashStates(t *testing.T, l *logwrites.Log, opts logwrites.EnumerateOptions) []logwrites.CrashState {
	t.Helper()
	states, _ := l.Enumerate(opts)
	type key struct {
		marks  int
		digest uint64
	}
	seen := map[key]bool{}
	for _, cs := range states {
		seen[key{len(cs.Marks), cs.Digest}] = true
	}
	for _, cs := range blockTears(t, l) {
		if k := (key{len(cs.Marks), cs.Digest}); !seen[k] {
			seen[k] = true
			states = append(states, cs)
		}
	}
	slices.SortStableFunc(states, func(a, b logwrites.CrashState) int { return a.At - b.At })
	return states
}

// TestCrashStatesTwoRounds crashes, recovers, commits more transactions on
// the recovered journal and crashes again. A transaction the first recovery
// rolled back left its blocks in the log, and the first transaction after
// recovery goes to the start of the log: if it could take the rolled-back
// one's sequence number, and its commit block landed without its
// descriptor, the old descriptor and data would pass for it and the
// rolled-back transaction would come back. Recovery has two defences, the
// commit block's checksum over the descriptors and a sequence number that
// skips the rolled-back transaction's; this test fails only if both go (each
// has its own test in recovery_test.go). Every result must be a prefix of
// what was acknowledged, round by round.
func TestCrashStatesTwoRounds(t *testing.T) {
	const (
		devBlocks = 64
		// A 12-block log of 4-block transactions (descriptor, two
		// records, commit): three fill it, and every third starts at
		// log index 0, where the first transaction after a recovery
		// goes.
		logBlocks = 13
		homeFrom  = 32
		first     = 7 // transactions in the first round
		second    = 4 // and in the second
	)
	// Every state of the first round gets a second round of its own;
	// the race detector makes each recovery ten times slower.
	firstStates, secondStates := 200, 60
	if raceEnabled {
		firstStates, secondStates = 8, 10
	}
	pool := newPool(t, 16)
	free := pool.FreeFrames()
	ram, _ := newDevice(t, devBlocks, logBlocks, 2)
	l1, err := logwrites.New(ram)
	require.NoError(t, err)
	j, err := Open(l1, 0, testBS, Config{Pool: pool})
	require.NoError(t, err)
	w1 := &crashWorkload{}
	for i := range first {
		homes := []uint64{40 + 2*uint64(i%4), 41 + 2*uint64(i%4)}
		w1.homes = append(w1.homes, homes)
		commit(t, j, i+1, homes...)
		l1.Mark(fmt.Sprintf("acked %d", i+1))
	}
	require.NoError(t, j.Close())
	require.Positive(t, j.Stats().Checkpoints, "the log fills")

	// The second round writes other homes, at versions the first never
	// does, with transactions of the same size as the first round's.
	secondHomes := func(i int) []uint64 { return []uint64{50 + 2*uint64(i), 51 + 2*uint64(i)} }
	// after[p] is the history once the first recovery kept p
	// transactions: those, then the second round's.
	after := map[int]*crashWorkload{}
	history := func(p int) *crashWorkload {
		if w, ok := after[p]; ok {
			return w
		}
		w := &crashWorkload{homes: slices.Clone(w1.homes[:p])}
		for i := range p {
			w.versions = append(w.versions, i+1)
		}
		for i := range second {
			w.homes = append(w.homes, secondHomes(i))
			w.versions = append(w.versions, 101+i)
		}
		after[p] = w
		return w
	}

	// The log writes of each first-round transaction (two where it
	// wraps), to tell a rolled-back transaction from one never written.
	carries := map[int]int{} // write Seq -> transaction
	marks := 0
	for _, e := range l1.Entries() {
		switch {
		case e.Kind == logwrites.Mark:
			marks++
		case e.Kind == logwrites.Write && e.Off >= testBS && e.Off < logBlocks*testBS:
			carries[e.Seq] = marks + 1
		}
	}

	states1 := crashStates(t, l1, logwrites.EnumerateOptions{Seed: 11, MaxPerPoint: 8, MaxStates: firstStates})
	var states2, rolledBack, inRecovery int
	minKept, maxKept := first, 0
	for n, cs1 := range states1 {
		dev1, err := l1.ReplayImage(cs1)
		require.NoError(t, err)
		l2, err := logwrites.New(dev1)
		require.NoError(t, err)
		jr, err := Open(l2, 0, testBS, Config{Pool: pool})
		require.NoError(t, err, "first recovery, state %s", cs1.Name)
		p1, err := w1.prefix(homeArea(t, l2, homeFrom, devBlocks), acked(cs1.Marks), homeFrom, devBlocks)
		require.NoError(t, err, "first recovery, state %s (recovery %+v)", cs1.Name, jr.Recovery())
		minKept, maxKept = min(minKept, p1), max(maxKept, p1)
		if slices.ContainsFunc(cs1.Maybe, func(seq int) bool { return carries[seq] == p1+1 }) {
			rolledBack++ // some of the next transaction's blocks landed
		}
		l2.Mark("recovered")
		w2 := history(p1)
		for i := range second {
			commit(t, jr, 101+i, secondHomes(i)...)
			l2.Mark(fmt.Sprintf("acked %d", i+1))
		}
		require.NoError(t, jr.Close())

		for _, cs2 := range crashStates(t, l2, logwrites.EnumerateOptions{Seed: uint64(n), MaxPerPoint: 4, MaxStates: secondStates}) {
			if !slices.Contains(cs2.Marks, "recovered") {
				inRecovery++
			}
			dev2, err := l2.ReplayImage(cs2)
			require.NoError(t, err)
			_, _, err = checkRecovered(t, dev2, pool, w2, p1+acked(cs2.Marks), homeFrom, devBlocks)
			if err != nil {
				// Name the resurrection if that is what it is.
				got := homeArea(t, dev2, homeFrom, devBlocks)
				for i := p1; i < first; i++ {
					for _, h := range w1.homes[i] {
						o := (h - homeFrom) * testBS
						require.False(t, bytes.Equal(got[o:o+testBS], block(h, w1.version(i))),
							"transaction %d, not recovered after state %s, came back in home %d after state %s", i+1, cs1.Name, h, cs2.Name)
					}
				}
			}
			require.NoError(t, err, "second recovery: state %s, then %s", cs1.Name, cs2.Name)
			require.NoError(t, dev2.Close())
			states2++
		}
		require.NoError(t, l2.Close())
	}
	t.Logf("two-round crash states: %d first-round states (%d rolled back a transaction partly in the log), kept %d to %d of %d transactions; %d second-round states recovered (%d crashed in the first recovery)",
		len(states1), rolledBack, minKept, maxKept, first, states2, inRecovery)
	assert.Positive(t, rolledBack)
	assert.Zero(t, minKept)
	assert.Equal(t, first, maxKept)
	assert.Positive(t, inRecovery)
	assert.Equal(t, free, pool.FreeFrames())
}

// TestCrashStatesAtDurabilityBoundaries crashes a known workload just
// before and just after the moments the journal's ordering rests on: each
// commit's FUA write completing, and each checkpoint's flush completing
// (the superblock's tail moves only after it). Just before, a crash may
// lose what they make durable: the transaction being written may be rolled
// back or may already be whole; home blocks the checkpoint wrote may not be
// on the device, and recovery must write them again from the log. Just
// after, nothing of it may be lost. The other crash tests pass whether or
// not the crash model (blk/logwrites) makes the "just before" states, but
// without them they never crash inside a commit's write or a checkpoint's
// flush, the crashes that put the journal's ordering to the test: a
// journal that moved the tail while its home writes were still being
// flushed would pass them.
func TestCrashStatesAtDurabilityBoundaries(t *testing.T) {
	const (
		devBlocks = 64
		logBlocks = 32 // room for every transaction: no commit wraps or waits
		homeFrom  = 32
	)
	pool := newPool(t, 16)
	ram, _ := newDevice(t, devBlocks, logBlocks, 4)
	l, err := logwrites.New(ram)
	require.NoError(t, err)
	j, err := Open(l, 0, testBS, Config{Pool: pool})
	require.NoError(t, err)
	w := &crashWorkload{}
	for i := range 5 {
		if i == 3 {
			require.NoError(t, j.Checkpoint())
		}
		// Every transaction has homes of its own, so that a home
		// block holds its checkpointed data until the end.
		homes := []uint64{40 + 2*uint64(i), 41 + 2*uint64(i)}
		w.homes = append(w.homes, homes)
		commit(t, j, i+1, homes...)
		l.Mark(fmt.Sprintf("acked %d", i+1))
	}
	require.NoError(t, j.Close()) // the second checkpoint

	// The boundaries: the log writes, each the whole of one transaction,
	// and the flushes with the home writes each covers (those completed
	// since the previous one).
	type boundary struct {
		e     logwrites.Entry
		tx    int               // a log write: the transaction it carries
		homes []logwrites.Entry // a flush: the home writes it covers
	}
	var commits, flushes []boundary
	var acks int
	var homeWrites []logwrites.Entry
	for _, e := range l.Entries() {
		switch {
		case e.Kind == logwrites.Mark:
			acks++
		case e.Kind == logwrites.Write && e.Off >= homeFrom*testBS:
			homeWrites = append(homeWrites, e)
		case e.Kind == logwrites.Write && e.Off >= testBS: // the log, after the superblock
			require.True(t, e.FUA, "a commit is written with FUA")
			commits = append(commits, boundary{e: e, tx: acks + 1})
		case e.Kind == logwrites.Flush:
			for _, h := range homeWrites {
				require.Less(t, h.Done, e.Submit, "the home writes complete before the flush")
			}
			flushes = append(flushes, boundary{e: e, homes: homeWrites})
			homeWrites = nil
		}
	}
	require.Len(t, commits, 5)
	require.Len(t, flushes, 2)
	var points []int
	for _, b := range append(slices.Clone(commits), flushes...) {
		require.GreaterOrEqual(t, b.e.Done, 0, "every request completed")
		points = append(points, b.e.Done, b.e.Done+1)
	}

	states, st := l.Enumerate(logwrites.EnumerateOptions{Seed: 5, Points: points})
	rolledBack := make([]int, len(commits))
	whole := make([]int, len(commits))
	unflushed := make([]int, len(flushes))
	for _, cs := range states {
		dev, err := l.ReplayImage(cs)
		require.NoError(t, err)
		raw := homeArea(t, dev, homeFrom, devBlocks)
		p, _, err := checkRecovered(t, dev, pool, w, acked(cs.Marks), homeFrom, devBlocks)
		require.NoError(t, dev.Close())
		require.NoError(t, err, "state %s", cs.Name)
		for i, b := range commits {
			switch cs.At {
			case b.e.Done:
				if p < b.tx {
					rolledBack[i]++
				} else {
					whole[i]++
				}
			case b.e.Done + 1:
				require.GreaterOrEqual(t, p, b.tx, "state %s: transaction %d lost after its FUA write completed", cs.Name, b.tx)
			}
		}
		for i, b := range flushes {
			landed := true
			for _, h := range b.homes {
				o := h.Off - homeFrom*testBS
				landed = landed && bytes.Equal(raw[o:o+h.Len], h.Data)
			}
			switch cs.At {
			case b.e.Done:
				if !landed {
					unflushed[i]++
				}
			case b.e.Done + 1:
				require.True(t, landed, "state %s: a home write lost after flush %d of %d completed", cs.Name, i+1, len(flushes))
			}
		}
	}
	t.Logf("durability boundaries: %d commit writes, %d flushes, %d states at them; just before each commit completed %v states rolled it back, %v had it whole; just before each flush completed %v states lacked a home write",
		len(commits), len(flushes), st.Returned, rolledBack, whole, unflushed)
	for i, b := range commits {
		assert.Positive(t, rolledBack[i], "a crash just before transaction %d's FUA write completed can lose it", b.tx)
		assert.Positive(t, whole[i], "a crash just before transaction %d's FUA write completed can find it whole", b.tx)
	}
	for i := range flushes {
		assert.Positive(t, unflushed[i], "a crash just before flush %d of %d completed can lose the home writes it covers", i+1, len(flushes))
	}
}
