//go:build !race

package vmcheck

const modelSteps = 1 << 20

// Per space in TestConcurrentModel.
const concurrentSteps = 5000

// Per stream in TestModelOverNBD: fewer than the RAM device's steps, since
// every step may swap over loopback TCP.
const nbdModelSteps = 3000
