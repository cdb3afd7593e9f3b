//go:build race

package vmtest

// The race detector slows the model test by an order of magnitude; make
// test runs the full million steps in a separate build without it.
const modelSteps = 1 << 15

// Per space in TestConcurrentModel: the race detector is what it is for.
const concurrentSteps = 4000
