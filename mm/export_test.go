package mm

import "yolk/mm/phys"

// PageoutForTest reclaims the page holding pfn as MADV_PAGEOUT would, but
// even if other spaces map it too (MADV_PAGEOUT skips those): for tests
// that need one particular shared page swapped out. It reports whether
// the page left memory.
func (m *Manager) PageoutForTest(pfn phys.PFN) bool {
	head := m.pool.CompoundHead(pfn)
	if !m.isolateOne(head) {
		return false
	}
	return m.reclaimPages([]phys.PFN{head}) > 0
}

// ResetKswapdForTest forgets kswapd's failed runs, as direct reclaim
// making progress does, so that a test can start from a kswapd that has
// not given up.
func (m *Manager) ResetKswapdForTest() {
	m.kswapdFailures.Store(0)
	m.pool.SetReclaimHopeless(false)
}
