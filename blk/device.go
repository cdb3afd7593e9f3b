// Package blk is yolk's block layer: the Device interface every block device
// implements (the RAM device here, the NBD client in blk/nbd), the errors a
// request fails with, and the reorder queue that turns out-of-order
// completions of pipelined reads back into an in-order stream under a
// memory budget.
//
// # Requests
//
// A Device is a linear array of bytes addressed by offset, accessed in
// multiples of its logical block size. Every method may be called from many
// goroutines at once: concurrency is how a caller keeps several requests in
// flight, and a device such as the NBD client pipelines concurrent calls on
// its connections. Requests in flight at the same time carry no order among
// themselves, as in Linux's block layer: a caller that needs one write to
// reach the device before another waits for the first to complete.
//
// Durability follows the same model. A completed write may still sit in a
// volatile cache of the device; Flush makes every write that completed
// before Flush was called durable (REQ_PREFLUSH), and a write with FUA is
// durable when it completes (REQ_FUA). A device without a volatile cache
// reports neither feature and needs neither.
//
// # Errors
//
// A failed request returns a *RequestError that names the request
// (operation, offset, length) and wraps the cause. Causes that callers test
// for are the sentinel errors below (errors.Is): a device error (ErrIO), a
// request outside the device or misaligned, a read-only device, an
// operation the device does not support, a deadline, a lost connection.
package blk

import (
	"errors"
	"fmt"
)

// Device is a block device. See the package documentation for the rules on
// concurrency and durability.
type Device interface {
	// BlockSize is the logical block size in bytes, a power of two: every
	// request's offset and length are multiples of it.
	BlockSize() int
	// Size is the device's size in bytes, a multiple of BlockSize.
	Size() int64
	// Features says which optional operations and flags the device
	// honours.
	Features() Features

	// ReadAt fills p from offset off.
	ReadAt(p []byte, off int64) error
	// WriteAt writes p at offset off. With FUA it returns only once the
	// data is durable.
	WriteAt(p []byte, off int64, flags WriteFlags) error
	// Flush makes durable every write that completed before it was
	// called.
	Flush() error
	// Trim tells the device that the range's contents are no longer
	// needed; reading it afterwards returns unspecified data (zeroes on
	// every device yolk has).
	Trim(off, length int64) error
	// WriteZeroes makes the range read as zeroes, without sending them.
	WriteZeroes(off, length int64, flags WriteFlags) error

	// Close releases the device. Requests in flight complete or fail
	// first; later requests fail with ErrClosed.
	Close() error
}

// WriteFlags modify a write.
type WriteFlags uint8

const (
	// FUA (force unit access): the write is durable when it completes.
	FUA WriteFlags = 1 << iota
	// NoHole: WriteZeroes must allocate the range rather than punch a
	// hole (NBD_CMD_FLAG_NO_HOLE).
	NoHole
)

// Features are a device's optional capabilities.
type Features uint16

const (
	// ReadOnly: writes, trims and zeroing fail with ErrReadOnly.
	ReadOnly Features = 1 << iota
	// FlushFeature: the device has a volatile cache; Flush empties it.
	FlushFeature
	// FUAFeature: the device honours FUA on writes.
	FUAFeature
	// TrimFeature: Trim discards.
	TrimFeature
	// WriteZeroesFeature: WriteZeroes zeroes without a data transfer.
	WriteZeroesFeature
	// MultiConn: the device runs requests over several connections, each
	// one's Flush covering the others' writes (NBD_FLAG_CAN_MULTI_CONN).
	MultiConn
)

var featureNames = []string{"ro", "flush", "fua", "trim", "write-zeroes", "multi-conn"}

func (f Features) String() string {
	s := ""
	for i, n := range featureNames {
		if f&(1<<i) != 0 {
			if s != "" {
				s += ","
			}
			s += n
		}
	}
	if s == "" {
		return "none"
	}
	return s
}

// Op names a request's operation.
type Op uint8

const (
	OpRead Op = iota
	OpWrite
	OpFlush
	OpTrim
	OpWriteZeroes
)

var opNames = [...]string{"read", "write", "flush", "trim", "write-zeroes"}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("op%d", o)
}

// Causes a request fails with; test for them with errors.Is.
var (
	// ErrIO: the device reported an error for the request (EIO).
	ErrIO = errors.New("I/O error")
	// ErrNoSpace: the device is out of space (ENOSPC).
	ErrNoSpace = errors.New("no space left on device")
	// ErrRange: the request reaches outside the device.
	ErrRange = errors.New("request outside the device")
	// ErrAlign: the request is not aligned to the logical block size.
	ErrAlign = errors.New("request not aligned to the block size")
	// ErrReadOnly: a write to a read-only device.
	ErrReadOnly = errors.New("device is read-only")
	// ErrUnsupported: the device does not offer the operation or flag.
	ErrUnsupported = errors.New("operation not supported by the device")
	// ErrTimeout: the request's deadline passed before its reply came.
	ErrTimeout = errors.New("request timed out")
	// ErrDisconnected: the connection the request ran on was lost and
	// could not be re-established in time.
	ErrDisconnected = errors.New("device disconnected")
	// ErrProtocol: the device answered with something the protocol does
	// not allow. The connection it came on is closed.
	ErrProtocol = errors.New("protocol error")
	// ErrClosed: the device has been closed.
	ErrClosed = errors.New("device closed")
)

// RequestError is the error of one failed request.
type RequestError struct {
	Device string // the device's name, e.g. "nbd:127.0.0.1:10809/export"
	Op     Op
	Off    int64 // offset in bytes (0 for flush)
	Len    int64 // length in bytes (0 for flush)
	Err    error // the cause
}

func (e *RequestError) Error() string {
	if e.Op == OpFlush {
		return fmt.Sprintf("%s: flush: %v", e.Device, e.Err)
	}
	return fmt.Sprintf("%s: %s of %d bytes at %d: %v", e.Device, e.Op, e.Len, e.Off, e.Err)
}

func (e *RequestError) Unwrap() error { return e.Err }

// CheckRequest validates a request's range against a device's geometry,
// returning the cause (ErrRange, ErrAlign) or nil. Devices call it before
// doing anything.
func CheckRequest(blockSize int, size, off, length int64) error {
	if off < 0 || length < 0 || off > size || length > size-off {
		return ErrRange
	}
	bs := int64(blockSize)
	if off%bs != 0 || length%bs != 0 {
		return ErrAlign
	}
	return nil
}
