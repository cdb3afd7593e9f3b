// Package logwrites records every request a block device receives, with the
// flush and FUA boundaries between them, and enumerates the states a crash
// could leave the device in, for crash-consistency tests of what runs on top
// of it (the journal). It is modelled on Linux's dm-log-writes target
// (drivers/md/dm-log-writes.c), which logs each write bio with its
// REQ_PREFLUSH/REQ_FUA flags so that a replay tool can rebuild the device at
// any point of the log, and on the crash testing built on it (xfstests'
// replay-log, CrashMonkey).
//
// # Recording
//
// A Log wraps a Device and passes every request through. It numbers events
// on one clock: a request takes a position when it is submitted and another
// when it completes, and a Mark takes one. dm-log-writes has to work out
// which completed writes a flush covers (it holds them on its
// unflushed_blocks list until the next flush is submitted); here both
// positions are kept, so the model below can be applied at any position.
//
// Positions are taken around the call to the device: before it for the
// submission, after it returns for the completion. The recorded interval
// therefore contains the device's, and is contained in the caller's: if the
// caller saw a write complete before it called Flush, the log says so too,
// so the model is exact about every ordering the caller could rely on.
//
// # What a crash leaves
//
// The device is taken to have a volatile write cache, whatever the device
// underneath has (Features reports flush and FUA), with blk's rules:
//
//   - A write that completed may sit in the cache. It is durable once a
//     Flush that was submitted after the write completed has completed
//     (REQ_PREFLUSH covers what completed before it was issued, nothing
//     else). So completion order matters, not submission order: a write
//     submitted before a Flush but completing after the Flush was submitted
//     is not covered by it.
//   - A write with FUA is durable when it completes.
//   - Any other write submitted before the crash (completed but not yet
//     flushed, or still in flight) may or may not have reached the media,
//     and may have reached it only in part: each 512-byte sector of it
//     independently (a torn write).
//   - A write submitted after another completed lands after it: where they
//     overlap, the later one wins (the cache holds the newest data, and the
//     older write can no longer be written back over it). Writes in flight
//     together carry no order: where they overlap, either may land last
//     (a reorder), crash or not.
//   - Trim and WriteZeroes are writes of zeroes.
//   - A request that failed may or may not have reached the media, at any
//     time: a timed-out request may still run on an NBD server. It is never
//     durable, and it is taken never to complete, so it is concurrent with
//     everything submitted after it.
//
// A crash at position k sees the events before k. The Marks before k are
// what the code under test had acknowledged then, the facts a checker may
// rely on ("acked tx 7" means tx 7 must be recovered).
//
// # Crash states
//
// The states at one position are, in general, too many to try (every subset
// of the writes that are not durable, every tear, every order). Enumerate
// takes a bounded, reproducible selection (see EnumerateOptions), keeps one
// of each distinct image and set of marks, and reports how many there were.
// A CrashState names its choices in a string that ParseState turns back into
// the state, to reproduce a failure; Materialize builds its image, and
// ReplayImage, ReplayRAM and Replay put it on a device for recovery to run
// on. Races lists the overlapping writes that were in flight together, whose
// order is undefined crash or not: a test can assert there are none.
//
// Images are built from a snapshot of the device at the last position before
// which every write is durable and ordered before every later write that
// overlaps it, so the cost of one is a copy of the device plus the writes
// since that position, not the whole log. Materializing states in order of
// position (as Enumerate returns them) keeps that snapshot moving forward.
// A write that never becomes durable (it failed, or was never flushed) holds
// the snapshot back, and every later image pays for the writes since it.
package logwrites

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"

	"yolk/blk"
)

// SectorSize is the unit a write may tear in: the sector, the most a disk
// promises to write atomically. A device whose block size is smaller (none
// yolk has) tears in blocks.
const SectorSize = 512

// Kind is the kind of a log entry.
type Kind uint8

const (
	Write Kind = iota
	Flush
	Trim
	WriteZeroes
	Mark
)

var kindNames = [...]string{"write", "flush", "trim", "write-zeroes", "mark"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind%d", k)
}

// Entry is one request, or one mark, in the log.
type Entry struct {
	// Seq is the entry's position in the log: the position at which it
	// was submitted (equal to Submit). Entries are in Seq order.
	Seq  int
	Kind Kind
	// Off and Len are the request's range in bytes (zero for a flush or
	// a mark).
	Off, Len int64
	// Data is a copy of a write's data, taken at submission; it is
	// shared by every copy of the entry and must not be modified.
	Data []byte
	// FUA: the write was submitted with blk.FUA.
	FUA bool
	// Submit is the position at which the request was submitted, Done
	// the one at which it completed: -1 while it is in flight. For a mark
	// both are its position.
	Submit, Done int
	// Err is the request's error. A failed request may or may not have
	// reached the device.
	Err error
	// Label is a mark's label.
	Label string
}

// Log is a blk.Device that records the requests it passes to the device it
// wraps. See the package documentation.
type Log struct {
	dev    blk.Device
	bs     int
	size   int64
	sector int
	base   []byte

	mu      sync.Mutex
	clock   int // the next position
	entries []Entry

	// model is the analysis of the log as of some clock, rebuilt when
	// the log has moved on. Lock order: modelMu, then mu.
	modelMu  sync.Mutex
	model    *model
	baseHash []uint64 // per-sector content hashes of base, built lazily

	// snap is the image at a horizon (see Materialize), moved forward
	// as later states are materialized.
	snapMu sync.Mutex
	snap   *imageSnap

	scratch sync.Pool // *[]byte of the device's size, for Replay
}

var _ blk.Device = (*Log)(nil)

// New wraps dev in a Log. It reads the whole device, whose image is the base
// that every crash state starts from: meant for test-sized devices.
func New(dev blk.Device) (*Log, error) {
	bs, size := dev.BlockSize(), dev.Size()
	base := make([]byte, size)
	const chunk = 1 << 20 // within any device's largest request
	for off := int64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		if err := dev.ReadAt(base[off:off+n], off); err != nil {
			return nil, fmt.Errorf("logwrites: reading the base image: %w", err)
		}
	}
	return &Log{
		dev:    dev,
		bs:     bs,
		size:   size,
		sector: min(SectorSize, bs),
		base:   base,
	}, nil
}

func (l *Log) BlockSize() int { return l.bs }
func (l *Log) Size() int64    { return l.size }

// SectorSize is the unit writes tear in: SectorSize, or the block size if
// that is smaller.
func (l *Log) SectorSize() int { return l.sector }

// Features implements blk.Device: the device's, with a volatile cache.
func (l *Log) Features() blk.Features {
	return l.dev.Features() | blk.FlushFeature | blk.FUAFeature
}

func (l *Log) String() string { return fmt.Sprintf("logwrites(%v)", l.dev) }

// Base returns a copy of the device's image when logging began.
func (l *Log) Base() []byte { return bytes.Clone(l.base) }

// Entries returns a copy of the log.
func (l *Log) Entries() []Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.entries)
}

// Mark appends a marker to the log: the harness records what the code under
// test has acknowledged at this point.
func (l *Log) Mark(label string) {
	l.submit(Entry{Kind: Mark, Label: label})
}

func (l *Log) submit(e Entry) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Seq, e.Submit, e.Done = l.clock, l.clock, -1
	if e.Kind == Mark {
		e.Done = l.clock
	}
	l.clock++
	l.entries = append(l.entries, e)
	return len(l.entries) - 1
}

func (l *Log) complete(i int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries[i].Done = l.clock
	l.entries[i].Err = err
	l.clock++
}

// ReadAt implements blk.Device. Reads are not logged: they change nothing.
func (l *Log) ReadAt(p []byte, off int64) error { return l.dev.ReadAt(p, off) }

// WriteAt implements blk.Device.
func (l *Log) WriteAt(p []byte, off int64, flags blk.WriteFlags) error {
	i := l.submit(Entry{Kind: Write, Off: off, Len: int64(len(p)), Data: bytes.Clone(p), FUA: flags&blk.FUA != 0})
	err := l.write(flags, func(f blk.WriteFlags) error { return l.dev.WriteAt(p, off, f) })
	l.complete(i, err)
	return err
}

// WriteZeroes implements blk.Device.
func (l *Log) WriteZeroes(off, length int64, flags blk.WriteFlags) error {
	i := l.submit(Entry{Kind: WriteZeroes, Off: off, Len: length, FUA: flags&blk.FUA != 0})
	err := l.write(flags, func(f blk.WriteFlags) error { return l.dev.WriteZeroes(off, length, f) })
	l.complete(i, err)
	return err
}

// Trim implements blk.Device.
func (l *Log) Trim(off, length int64) error {
	i := l.submit(Entry{Kind: Trim, Off: off, Len: length})
	err := l.dev.Trim(off, length)
	l.complete(i, err)
	return err
}

// write runs a write with flags on the device. The Log offers FUA whatever
// the device does; on a device without it, FUA is a write followed by a
// flush (as Linux's blk-flush does), or nothing more on a device without a
// cache.
func (l *Log) write(flags blk.WriteFlags, do func(blk.WriteFlags) error) error {
	f := l.dev.Features()
	if flags&blk.FUA == 0 || f&blk.FUAFeature != 0 {
		return do(flags)
	}
	if err := do(flags &^ blk.FUA); err != nil {
		return err
	}
	if f&blk.FlushFeature != 0 {
		return l.dev.Flush()
	}
	return nil
}

// Flush implements blk.Device. A device without a cache has nothing to flush
// and may not support Flush at all.
func (l *Log) Flush() error {
	i := l.submit(Entry{Kind: Flush})
	err := l.dev.Flush()
	if errors.Is(err, blk.ErrUnsupported) && l.dev.Features()&blk.FlushFeature == 0 {
		err = nil
	}
	l.complete(i, err)
	return err
}

// Close implements blk.Device.
func (l *Log) Close() error { return l.dev.Close() }

// CrashPoints returns the positions worth crashing at, ascending: after each
// completion and each mark, just before each flush's and each FUA write's
// completion (the last moment what it makes durable is not), and the end of
// the log. Only submissions come between two of them, and a submission
// changes nothing durable or acknowledged: every state a crash elsewhere
// could leave, a crash at the next point can leave too.
func (l *Log) CrashPoints() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	pts := make([]int, 0, 2*len(l.entries)+1)
	for _, e := range l.entries {
		if e.Done < 0 {
			continue
		}
		pts = append(pts, e.Done+1)
		if e.Kind == Flush || e.FUA {
			pts = append(pts, e.Done)
		}
	}
	pts = append(pts, l.clock)
	slices.Sort(pts)
	return slices.Compact(pts)
}
