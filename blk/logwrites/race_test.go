//go:build race

package logwrites

// raceEnabled: the race detector slows the property test several times over.
const raceEnabled = true
