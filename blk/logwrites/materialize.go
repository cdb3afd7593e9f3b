package logwrites

import (
	"bytes"
	"fmt"

	"yolk/blk"
)

// imageSnap is the image at a horizon h: the base with writes[:h] applied in
// order. That image does not depend on the crash position, so one snapshot
// serves every state whose horizon is at or after it.
type imageSnap struct {
	h   int
	img []byte
}

// Materialize returns the device's image in state cs. The state must come
// from this log (Enumerate, ParseState): Materialize panics on one that does
// not fit it; MaterializeInto returns the error.
func (l *Log) Materialize(cs CrashState) []byte {
	img := make([]byte, l.size)
	if err := l.MaterializeInto(img, cs); err != nil {
		panic(err)
	}
	return img
}

// MaterializeInto writes the device's image in state cs into img, which is
// the device's size. It costs a copy of the device and the writes since the
// state's horizon; states materialized in order of position (as Enumerate
// returns them) move one shared snapshot forward, states out of order
// rebuild it from the base.
func (l *Log) MaterializeInto(img []byte, cs CrashState) error {
	if int64(len(img)) != l.size {
		return fmt.Errorf("logwrites: image of %d bytes for a device of %d", len(img), l.size)
	}
	m := l.current()
	c, err := m.choiceOf(cs)
	if err != nil {
		return fmt.Errorf("logwrites: state %q: %w", cs.Name, err)
	}
	h, n := m.horizonAt(c.k), m.submittedBefore(c.k)
	l.snapshotInto(m, h, img)
	m.visit(c, h, n, func(i, s0, s1 int) { m.copySectors(img, i, s0, s1) })
	return nil
}

func (l *Log) snapshotInto(m *model, h int, dst []byte) {
	if h == 0 {
		copy(dst, l.base)
		return
	}
	l.snapMu.Lock()
	defer l.snapMu.Unlock()
	s := l.snap
	if s == nil {
		s = &imageSnap{img: bytes.Clone(l.base)}
		l.snap = s
	} else if s.h > h {
		copy(s.img, l.base)
		s.h = 0
	}
	for i := s.h; i < h; i++ {
		w := &m.writes[i]
		m.copySectors(s.img, i, w.s0, w.s1)
	}
	s.h = h
	copy(dst, s.img)
}

func (l *Log) getScratch() *[]byte {
	if p, ok := l.scratch.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, l.size)
	return &b
}

// Replay writes the image of state cs to dst, a device of the same size,
// and flushes it.
func (l *Log) Replay(cs CrashState, dst blk.Device) error {
	if dst.Size() != l.size {
		return fmt.Errorf("logwrites: replay to a device of %d bytes, want %d", dst.Size(), l.size)
	}
	buf := l.getScratch()
	defer l.scratch.Put(buf)
	img := *buf
	if err := l.MaterializeInto(img, cs); err != nil {
		return err
	}
	const chunk = 1 << 20 // a multiple of any block size, within any request limit
	for off := int64(0); off < l.size; off += chunk {
		end := min(off+chunk, l.size)
		if err := dst.WriteAt(img[off:end], off, 0); err != nil {
			return err
		}
	}
	if dst.Features()&blk.FlushFeature != 0 {
		return dst.Flush()
	}
	return nil
}

// ReplayRAM returns a new RAM device holding the image of state cs. It
// writes only the pages that are not zeroes, which a new RAM device already
// reads as.
func (l *Log) ReplayRAM(cs CrashState) (*blk.RAM, error) {
	buf := l.getScratch()
	defer l.scratch.Put(buf)
	img := *buf
	if err := l.MaterializeInto(img, cs); err != nil {
		return nil, err
	}
	ram, err := blk.NewRAM(blk.RAMConfig{Name: fmt.Sprintf("logwrites@%d", cs.At), Size: l.size, BlockSize: l.bs})
	if err != nil {
		return nil, err
	}
	const page = 4096 // RAM's page: a multiple of its block size
	var zero [page]byte
	for off := int64(0); off < l.size; {
		end := min(off+page, l.size)
		if bytes.Equal(img[off:end], zero[:end-off]) {
			off = end
			continue
		}
		// Extend the run over the pages that follow and are not zeroes.
		for end < l.size {
			next := min(end+page, l.size)
			if bytes.Equal(img[end:next], zero[:next-end]) {
				break
			}
			end = next
		}
		if err := ram.WriteAt(img[off:end], off, 0); err != nil {
			return nil, err
		}
		off = end
	}
	return ram, nil
}
