// These tests start NBD servers on the host (qemu/nbdserver), which does
// not build for the image.

//go:build !tamago

package journal

import (
	"context"
	"testing"
	"time"

	"yolk/blk"
	"yolk/blk/nbd"
	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
)

// BenchmarkCommit commits transactions of 62 blocks (248 KiB) to a journal
// on nbdkit memory over loopback, one after another, and writes the same
// bytes straight to the device with the same durability (one FUA write per
// transaction's worth), in the same run. The journal writes a descriptor
// and a commit block more per transaction, checksums everything, and
// checkpoints when its log fills (the checkpoints are in its time).
//
// One op is one transaction committed through the journal plus the same
// 248 KiB written raw. Reports, timed apart: tx/s and MB/s through the
// journal, raw-MB/s for the raw FUA writes, %overhead (journal time / raw
// time - 1, in percent) and checkpoints (how many ran in the last run).
// ns/op, both together, is not reported.
func BenchmarkCommit(b *testing.B) {
	const (
		bs        = 4096
		tx        = 62
		exportLen = 2 << 30
		logBlocks = 1 << 17 // 512 MiB
		homeFrom  = logBlocks
	)
	srv := nbdservertest.Start(b, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: exportLen})
	c, err := nbd.Dial(context.Background(), nbd.Config{Addr: srv.Addr, Export: srv.Export})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if c.Features()&blk.FUAFeature == 0 {
		b.Fatalf("nbdkit memory should offer FUA: %v", c.Features())
	}
	if err := Format(c, Layout{BlockSize: bs, LogBlocks: logBlocks, MaxTransaction: tx}); err != nil {
		b.Fatal(err)
	}
	pool := newPool(b, 16)
	j, err := Open(c, 0, bs, Config{Pool: pool})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	data := block(1, 1)
	homes := uint64(exportLen/bs - homeFrom)
	raw := make([]byte, tx*bs)
	for i := range tx {
		copy(raw[i*bs:], data)
	}

	var journal, direct time.Duration
	b.SetBytes(tx * bs)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		h, err := j.Begin(tx)
		if err != nil {
			b.Fatal(err)
		}
		base := homeFrom + uint64(i*tx)%(homes-tx)
		for k := range uint64(tx) {
			if err := h.Add(base+k, data); err != nil {
				b.Fatal(err)
			}
		}
		if err := h.Commit(); err != nil {
			b.Fatal(err)
		}
		journal += time.Since(start)

		start = time.Now()
		if err := c.WriteAt(raw, int64(base)*bs, blk.FUA); err != nil {
			b.Fatal(err)
		}
		direct += time.Since(start)
	}
	b.StopTimer()
	bytes := float64(b.N) * tx * bs
	b.ReportMetric(float64(b.N)/journal.Seconds(), "tx/s")
	b.ReportMetric(bytes/journal.Seconds()/1e6, "MB/s")
	b.ReportMetric(bytes/direct.Seconds()/1e6, "raw-MB/s")
	b.ReportMetric(100*(journal.Seconds()/direct.Seconds()-1), "%overhead")
	b.ReportMetric(float64(j.Stats().Checkpoints), "checkpoints")
	b.ReportMetric(0, "ns/op")
}
