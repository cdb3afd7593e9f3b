//go:build yolk_debug

package phys

// debugChecks runs Check after every allocation and free (build tag
// yolk_debug), as CONFIG_DEBUG_VM runs Linux's VM_BUG_ON checks.
const debugChecks = true
