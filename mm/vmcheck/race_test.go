//go:build race

package vmcheck

// The race detector slows the model test by an order of magnitude; make
// test runs the full million steps in a separate build without it.
const modelSteps = 1 << 14

// Per space in TestConcurrentModel: the race detector is what it is for.
const concurrentSteps = 4000

// Per stream in TestModelOverNBD: fewer than the RAM device's steps, since
// the race detector slows every loopback round trip.
const nbdModelSteps = 1000
