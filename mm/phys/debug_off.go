//go:build !yolk_debug

package phys

const debugChecks = false
