//go:build !race

package vmtest

const modelSteps = 1 << 20
