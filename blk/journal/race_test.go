//go:build race

package journal

// raceEnabled: the race detector slows recovery tenfold or more, and the
// crash tests recover thousands of states.
const raceEnabled = true
