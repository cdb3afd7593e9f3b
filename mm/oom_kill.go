package mm

import (
	"time"
)

// The OOM killer (Linux's mm/oom_kill.c).
//
// When direct reclaim has gone down to priority 0, freed nothing and had
// nothing to write, memory is exhausted: the allocation fails (phys
// already says so) and, so that the machine goes on, one address space
// is killed to give its memory back. The victim is the space with the
// largest badness, its resident pages plus its swap entries plus its
// page tables (oom_badness without the oom_score_adj). It is reported,
// counted (oom_kill) and torn down by a reaper goroutine (oom_reaper),
// since the fault that called the killer may hold the victim's own mmap
// lock. Until the victim has gone, no other space is killed: the
// reclaimers that ask meanwhile wait for it, briefly.

// oomWait bounds how long a reclaimer waits for the victim to go.
const oomWait = 200 * time.Millisecond

// OOMKill describes one kill, for Config.Log and tests.
type OOMKill struct {
	PID    int
	RSSKB  uint64
	SwapKB uint64
}

func (m *Manager) outOfMemory(order int) int {
	m.oomMu.Lock()
	victim := m.oomVictim
	if victim == nil {
		var best int64 = -1
		for _, as := range m.AddressSpaces() {
			as.ptl.Lock()
			points := as.rss + as.swapents
			if !as.exited && as.pt != nil {
				points += int64(as.pt.Pages())
			}
			exited, killed := as.exited, as.oomKilled
			rss, swap := as.rss, as.swapents
			as.ptl.Unlock()
			if exited || killed || points <= best {
				continue
			}
			best, victim = points, as
			victim.oomReport = OOMKill{PID: as.pid, RSSKB: uint64(rss) * 4, SwapKB: uint64(swap) * 4}
		}
		if victim == nil {
			m.oomMu.Unlock()
			return 0
		}
		victim.oomKilled = true
		victim.oomDone = make(chan struct{})
		m.oomVictim = victim
		m.vm.oomKill.Add(1)
		r := victim.oomReport
		m.logf("oom pid=%d rss_kb=%d swap_kb=%d order=%d", r.PID, r.RSSKB, r.SwapKB, order)
		go m.oomReap(victim)
	}
	done := victim.oomDone
	m.oomMu.Unlock()
	before := m.pool.FreeFrames()
	t := time.NewTimer(oomWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	if after := m.pool.FreeFrames(); after > before {
		return int(after - before)
	}
	return 0
}

// oomReap tears the victim down (exit_mmap on its behalf).
func (m *Manager) oomReap(victim *AddressSpace) {
	victim.Exit()
	m.oomMu.Lock()
	m.oomVictim = nil
	m.oomMu.Unlock()
	close(victim.oomDone)
}

// OOMKilled reports whether the OOM killer chose this space; its calls
// fail with ErrExited once the reaper has torn it down.
func (as *AddressSpace) OOMKilled() bool {
	as.ptl.Lock()
	defer as.ptl.Unlock()
	return as.oomKilled
}

// OOMKills returns how many spaces the OOM killer has killed (oom_kill).
func (m *Manager) OOMKills() uint64 { return m.vm.oomKill.Load() }
