package journal

// logLoc is where the newest acknowledged copy of a home block sits in the
// log: what ReadBlock needs to read it back and check it.
type logLoc struct {
	idx     uint64 // log index of the data block
	seq     uint64 // sequence of the transaction that wrote it
	crc     uint32 // crc32c from its tag, of the block as written to the log
	escaped bool   // written with its magic zeroed (flagEscaped)
}

// logMap maps home block numbers to logLoc: the log map. It holds one entry
// for each home block written by a transaction that is acknowledged and not
// yet checkpointed, so it never holds more entries than the log has blocks.
//
// It is a fixed open-addressing table (linear probing, deletion by backward
// shift), sized at Open and never resized: the commit and checkpoint paths
// that fill and empty it allocate nothing, from the phys pool or the Go
// heap. A Go map made with a size hint would not do: it does not rehash
// while it holds fewer entries than the hint, but deletes leave tombstones
// that count against its capacity, and a map with a steady churn of
// inserts and deletes (this one's whole life) may still grow.
type logMap struct {
	slots []logSlot
	shift uint // 64 - log2(len(slots))
	n     int
}

type logSlot struct {
	home uint64
	loc  logLoc
	full bool
}

// newLogMap makes a table for at most max entries, at most two thirds full.
func newLogMap(max uint64) logMap {
	size, bits := uint64(8), uint(3)
	for size*2 < max*3 {
		size, bits = size*2, bits+1
	}
	return logMap{slots: make([]logSlot, size), shift: 64 - bits}
}

// ideal is the slot home hashes to (Fibonacci hashing: nearby block
// numbers spread over the table).
func (m *logMap) ideal(home uint64) uint64 {
	return (home * 0x9e3779b97f4a7c15) >> m.shift
}

func (m *logMap) mask() uint64 { return uint64(len(m.slots) - 1) }

// find returns home's slot, or the empty slot where it would go.
func (m *logMap) find(home uint64) (uint64, bool) {
	for i := m.ideal(home); ; i = (i + 1) & m.mask() {
		s := &m.slots[i]
		if !s.full {
			return i, false
		}
		if s.home == home {
			return i, true
		}
	}
}

func (m *logMap) get(home uint64) (logLoc, bool) {
	i, ok := m.find(home)
	return m.slots[i].loc, ok
}

// put sets home's entry. The caller keeps the entries within the size
// given to newLogMap, so an empty slot is always found.
func (m *logMap) put(home uint64, loc logLoc) {
	i, ok := m.find(home)
	if !ok {
		if 3*(m.n+1) > 2*len(m.slots) {
			panic("journal: log map over its size")
		}
		m.n++
	}
	m.slots[i] = logSlot{home: home, loc: loc, full: true}
}

// removeUpTo deletes home's entry if it was written by transaction seq or
// an earlier one: a later transaction's entry stays.
func (m *logMap) removeUpTo(home, seq uint64) {
	i, ok := m.find(home)
	if !ok || m.slots[i].loc.seq > seq {
		return
	}
	m.n--
	// Backward shift: move later entries of the probe run into the hole
	// when their ideal slot does not lie after it, so that no lookup
	// meets an empty slot before its entry.
	mask := m.mask()
	for {
		m.slots[i] = logSlot{}
		j := i
		for {
			j = (j + 1) & mask
			if !m.slots[j].full {
				return
			}
			k := m.ideal(m.slots[j].home)
			// Leave j where it is if k is cyclically in (i, j].
			if (j-k)&mask < (j-i)&mask {
				continue
			}
			m.slots[i] = m.slots[j]
			i = j
			break
		}
	}
}

func (m *logMap) len() int { return m.n }
