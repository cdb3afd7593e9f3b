//go:build !race

package vmtest

const modelSteps = 1 << 20

// Per space in TestConcurrentModel.
const concurrentSteps = 5000
