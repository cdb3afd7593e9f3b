package logwrites

import (
	"fmt"
	"sync"

	"yolk/blk"
)

// ImageDevice is a blk.Device over a byte slice, without a cache: what a
// crash-consistency test runs recovery on. It is cheaper to make than a
// blk.RAM holding the same image (one copy, no per-page bookkeeping), which
// matters most under the race detector.
type ImageDevice struct {
	name string
	bs   int
	size int64
	pool *sync.Pool // where Close gives the image back, if anywhere

	mu     sync.RWMutex
	img    []byte
	closed bool
}

var _ blk.Device = (*ImageDevice)(nil)

// NewImageDevice makes a device of the image, which it then owns. Its size
// must be a positive multiple of blockSize, a power of two.
func NewImageDevice(img []byte, blockSize int) (*ImageDevice, error) {
	if blockSize <= 0 || blockSize&(blockSize-1) != 0 || len(img) == 0 || len(img)%blockSize != 0 {
		return nil, fmt.Errorf("logwrites: image of %d bytes with blocks of %d", len(img), blockSize)
	}
	return &ImageDevice{name: "image", bs: blockSize, size: int64(len(img)), img: img}, nil
}

// ReplayImage returns a new ImageDevice holding the image of state cs. Its
// memory comes from the Log and goes back to it on Close, to be reused by the
// next state: a 4 MiB allocation per state costs more than building the
// image, several times more under the race detector.
func (l *Log) ReplayImage(cs CrashState) (*ImageDevice, error) {
	buf := l.getScratch()
	if err := l.MaterializeInto(*buf, cs); err != nil {
		l.scratch.Put(buf)
		return nil, err
	}
	return &ImageDevice{name: fmt.Sprintf("logwrites@%d", cs.At), bs: l.bs, size: l.size, img: *buf, pool: &l.scratch}, nil
}

// Bytes returns the device's image, which is valid until Close (a device
// from ReplayImage gives its memory back then) and must not be used while
// requests run.
func (d *ImageDevice) Bytes() []byte {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.img
}

func (d *ImageDevice) BlockSize() int { return d.bs }
func (d *ImageDevice) Size() int64    { return d.size }
func (d *ImageDevice) String() string { return d.name }

// Features implements blk.Device: no cache, so no flush or FUA needed.
func (d *ImageDevice) Features() blk.Features { return blk.TrimFeature | blk.WriteZeroesFeature }

func (d *ImageDevice) check(op blk.Op, off, n int64) error {
	if d.closed {
		return &blk.RequestError{Device: d.name, Op: op, Off: off, Len: n, Err: blk.ErrClosed}
	}
	if err := blk.CheckRequest(d.bs, d.size, off, n); err != nil {
		return &blk.RequestError{Device: d.name, Op: op, Off: off, Len: n, Err: err}
	}
	return nil
}

// ReadAt implements blk.Device.
func (d *ImageDevice) ReadAt(p []byte, off int64) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.check(blk.OpRead, off, int64(len(p))); err != nil {
		return err
	}
	copy(p, d.img[off:])
	return nil
}

// WriteAt implements blk.Device.
func (d *ImageDevice) WriteAt(p []byte, off int64, _ blk.WriteFlags) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(blk.OpWrite, off, int64(len(p))); err != nil {
		return err
	}
	copy(d.img[off:], p)
	return nil
}

// Flush implements blk.Device: there is no cache.
func (d *ImageDevice) Flush() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.check(blk.OpFlush, 0, 0)
}

// Trim implements blk.Device: the range reads as zeroes.
func (d *ImageDevice) Trim(off, length int64) error { return d.zero(blk.OpTrim, off, length) }

// WriteZeroes implements blk.Device.
func (d *ImageDevice) WriteZeroes(off, length int64, _ blk.WriteFlags) error {
	return d.zero(blk.OpWriteZeroes, off, length)
}

func (d *ImageDevice) zero(op blk.Op, off, length int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(op, off, length); err != nil {
		return err
	}
	clear(d.img[off : off+length])
	return nil
}

// Close implements blk.Device. A device from ReplayImage gives its image
// back to the Log.
func (d *ImageDevice) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if d.pool != nil {
		img := d.img
		d.pool.Put(&img)
	}
	d.img = nil
	return nil
}
