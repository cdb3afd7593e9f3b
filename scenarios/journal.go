package scenarios

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"yolk/blk"
	"yolk/blk/journal"
	"yolk/blk/nbd"
	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
)

func init() {
	scenario.Register(scenario.Scenario{
		Name: "journal",
		Help: "commit tx= transactions of blocks= random 4 KiB blocks from seed= through a journal on the NBD server nbd=HOST:PORT, close it, read every home block back and reopen it clean",
		Params: []cmdline.Spec{
			{Name: "nbd", Value: cmdline.HostPort{}, Required: true, Service: "nbd",
				Help: "the NBD server (the harness starts an nbdkit memory server on the host)"},
			// NBD strings (export names among them) are at most 4096 bytes.
			{Name: "export", Value: cmdline.Text{Max: 4096}, Service: "nbd", Help: "the export's name"},
			{Name: "tx", Value: cmdline.Int{Min: 1, Max: 1000000}, Default: "200", Help: "how many transactions to commit"},
			{Name: "blocks", Value: cmdline.Int{Min: 1, Max: jLogBlocks / 2}, Default: "8", Help: "blocks per transaction"},
			{Name: "seed", Value: cmdline.Int{Min: math.MinInt64, Max: math.MaxInt64}, Default: "1", Help: "the seed of the blocks chosen"},
		},
		Run: journalScenario,
	})
}

// The journal scenario's geometry, in 4 KiB blocks: the log (superblock
// included) at block 0, then the home area the transactions write into.
const (
	jBlockSize   = 4096
	jLogBlocks   = 256
	jMaxHome     = 2048 // home blocks used, at most (8 MiB)
	jReadChunk   = 64   // blocks per read when checking the home area
	jDialTimeout = 15 * time.Second
)

// journalScenario runs yolk's write-ahead journal end to end on the image:
// the NBD client over gVisor TCP to a real server on the host, the journal's
// buffers from the phys pool, commits, checkpointing at Close, and recovery
// on reopening. Every home block is then read back through the client and
// compared with a model of what the transactions wrote.
func journalScenario(env *scenario.Env) error {
	addr := env.Args.String("nbd")
	export := env.Args.String("export")
	txs := env.Args.Int("tx")
	per := env.Args.Int("blocks")
	seed := env.Args.Int64("seed")
	maxTx := max(62, per)
	pool := env.Phys
	if pool == nil {
		return fmt.Errorf("no page allocator: %v", env.PhysErr)
	}
	if env.Net == nil {
		return fmt.Errorf("no network, which the journal scenario needs to reach nbd=%s: %v", addr, env.NetErr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), jDialTimeout)
	defer cancel()
	start := time.Now()
	dev, err := nbd.Dial(ctx, nbd.Config{
		Addr: addr, Export: export, BlockSize: jBlockSize,
		Dial: func(ctx context.Context) (net.Conn, error) { return env.Net.DialContext(ctx, "tcp", addr) },
	})
	if !env.Check("nbd-dial", err, "nbd", addr, "export", export, "ms", time.Since(start).Milliseconds()) {
		return nil
	}
	defer dev.Close()
	info := dev.Info()
	env.Report("nbd", "addr", addr, "export", export, "size", info.Size,
		"block_size", dev.BlockSize(), "min_block", info.MinBlock, "pref_block", info.PreferredBlock,
		"max_payload", info.MaxPayload, "flags", fmt.Sprintf("%#04x", info.TransmissionFlags),
		"features", dev.Features().String(), "structured", info.Structured, "conns", info.Conns)

	devBlocks := uint64(dev.Size()) / jBlockSize
	if devBlocks < jLogBlocks+uint64(per) {
		env.Check("nbd-size", fmt.Errorf("the export has %d blocks of 4 KiB: want at least %d (a %d-block log and a transaction's home blocks)", devBlocks, jLogBlocks+per, jLogBlocks))
		return nil
	}
	home := journalHome{first: jLogBlocks, n: min(devBlocks-jLogBlocks, jMaxHome)}
	home.version = make([]uint32, home.n)

	// The home area starts zeroed, so that the check at the end covers
	// blocks no transaction wrote as well.
	if !env.Check("home-zero", zeroRange(dev, int64(home.first)*jBlockSize, int64(home.n)*jBlockSize),
		"first", home.first, "blocks", home.n) {
		return nil
	}
	layout := journal.Layout{BlockSize: jBlockSize, LogStart: 0, LogBlocks: jLogBlocks, MaxTransaction: maxTx}
	if !env.Check("journal-format", journal.Format(dev, layout), "log_blocks", jLogBlocks, "max_transaction", maxTx) {
		return nil
	}

	// Free frames not counting those the network has charged to the
	// pool, which come and go with traffic (an ARP, a FIN) and are not
	// the journal's (as the pressure scenario counts them).
	freeNow := func() uint64 {
		f := pool.FreeFrames()
		if env.Rx != nil {
			f += uint64(env.Rx.ChargedIn(pool))
		}
		return f
	}
	free := freeNow()
	j, err := journal.Open(dev, 0, jBlockSize, journal.Config{Name: "journal", Pool: pool})
	if !env.Check("journal-open", err, "pool_frames", free-freeNow()) {
		return nil
	}

	// Commit: each transaction writes per distinct random home blocks with
	// data derived from (block, transaction), which the model records.
	r := rand.New(rand.NewPCG(uint64(seed), 0x6a6f75726e616c))
	written0 := dev.Stats().BytesWritten
	buf := make([]byte, jBlockSize)
	picked := make(map[uint64]bool, per)
	start = time.Now()
	var commitErr error
	for tx := 1; tx <= txs && commitErr == nil; tx++ {
		h, err := j.Begin(per)
		if err != nil {
			commitErr = fmt.Errorf("transaction %d: begin: %w", tx, err)
			break
		}
		clear(picked)
		for len(picked) < per {
			b := r.Uint64N(home.n)
			if picked[b] {
				continue
			}
			picked[b] = true
			journalBlock(buf, home.first+b, uint32(tx))
			if err := h.Add(home.first+b, buf); err != nil {
				commitErr = fmt.Errorf("transaction %d: add block %d: %w", tx, home.first+b, err)
				break
			}
		}
		if err := h.Commit(); err != nil && commitErr == nil {
			commitErr = fmt.Errorf("transaction %d: commit: %w", tx, err)
		}
		if commitErr == nil {
			for b := range picked {
				home.version[b] = uint32(tx)
			}
		}
	}
	committed := time.Since(start)
	st := j.Stats()
	env.Check("journal-commit", commitErr, "transactions", txs, "commits", st.Commits, "ms", committed.Milliseconds())
	closeErr := j.Close()
	elapsed := time.Since(start)
	st = j.Stats()
	env.Check("journal-close", closeErr, "checkpoints", st.Checkpoints, "checkpoint_records", st.CheckpointRecords)
	if commitErr != nil || closeErr != nil {
		return nil
	}
	env.Check("journal-no-leak", framesBack(freeNow(), free), "free_frames", pool.FreeFrames())

	written := dev.Stats().BytesWritten - written0
	data := float64(txs) * float64(per) * jBlockSize
	secs := elapsed.Seconds()
	env.Report("journal", "transactions", txs, "blocks", per, "commits", st.Commits,
		"records", st.Records, "log_blocks", st.LogBlocks, "max_group", st.MaxGroup,
		"data_mb", mb(data), "mb_written", mb(float64(written)), "elapsed_ms", elapsed.Milliseconds(),
		"commit_ms", committed.Milliseconds(), "kb_per_s", int64(data/1024/secs),
		"commits_per_s", int64(float64(st.Commits)/secs), "checkpoints", st.Checkpoints,
		"log_full_waits", st.LogFullWaits, "max_used", st.MaxUsed)

	// Every home block, written or not, read back through the client.
	start = time.Now()
	n, err := home.check(dev)
	env.Check("home-blocks", err, "blocks", home.n, "written", n, "ms", time.Since(start).Milliseconds())

	// Close checkpointed everything and marked the journal clean: opening
	// it again must find nothing to replay.
	j, err = journal.Open(dev, 0, jBlockSize, journal.Config{Name: "journal", Pool: pool})
	if !env.Check("journal-reopen", err) {
		return nil
	}
	rec := j.Recovery()
	var recErr error
	if !rec.Clean || rec.Transactions != 0 || rec.Records != 0 {
		recErr = fmt.Errorf("recovery after a clean close: clean=%v, replayed %d transactions (%d records), stop %q", rec.Clean, rec.Transactions, rec.Records, rec.Stop)
	}
	env.Check("journal-recovery-clean", recErr, "clean", rec.Clean, "replayed", rec.Transactions, "scanned", rec.Scanned)
	env.Check("journal-reclose", j.Close())
	env.Check("nbd-close", dev.Close(), "reconnects", dev.Stats().Reconnects, "timeouts", dev.Stats().Timeouts)
	return nil
}

// journalHome is the model of the home area: the transaction that last
// wrote each block (0: none, the block is zero).
type journalHome struct {
	first, n uint64
	version  []uint32
}

// check reads the home area back in chunks and compares every block with
// the model. It returns how many blocks were written.
func (h *journalHome) check(dev blk.Device) (written int, err error) {
	chunk := make([]byte, jReadChunk*jBlockSize)
	want := make([]byte, jBlockSize)
	for b := uint64(0); b < h.n; b += jReadChunk {
		k := min(jReadChunk, h.n-b)
		p := chunk[:k*jBlockSize]
		if err := dev.ReadAt(p, int64(h.first+b)*jBlockSize); err != nil {
			return written, err
		}
		for i := range k {
			v := h.version[b+i]
			if v == 0 {
				clear(want)
			} else {
				written++
				journalBlock(want, h.first+b+i, v)
			}
			got := p[i*jBlockSize : (i+1)*jBlockSize]
			if !bytes.Equal(got, want) {
				at := mismatch(got, want)
				return written, fmt.Errorf("home block %d: want transaction %d's data (0: zeroes), byte %d reads %#02x, not %#02x",
					h.first+b+i, v, at, got[at], want[at])
			}
		}
	}
	return written, nil
}

// journalBlock fills a block with data that names it and the transaction
// that wrote it (splitmix64 of both and the word's index).
func journalBlock(p []byte, block uint64, tx uint32) {
	x := block<<32 | uint64(tx)
	for i := 0; i+8 <= len(p); i += 8 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(p[i:], z^z>>31)
	}
}

// zeroRange makes a range of the device read as zeroes: with WriteZeroes
// where the device offers it, else by writing zeroes.
func zeroRange(dev blk.Device, off, length int64) error {
	if dev.Features()&blk.WriteZeroesFeature != 0 {
		if err := dev.WriteZeroes(off, length, 0); err == nil {
			return dev.Flush()
		} else if !errors.Is(err, blk.ErrUnsupported) {
			return err
		}
	}
	zero := make([]byte, jReadChunk*jBlockSize)
	for length > 0 {
		n := min(length, int64(len(zero)))
		if err := dev.WriteAt(zero[:n], off, 0); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	if dev.Features()&blk.FlushFeature != 0 {
		return dev.Flush()
	}
	return nil
}

func framesBack(now, before uint64) error {
	if now != before {
		return fmt.Errorf("%d frames free before the journal was opened, %d after it closed", before, now)
	}
	return nil
}

func mb(bytes float64) string { return strconv.FormatFloat(bytes/(1<<20), 'f', 2, 64) }
