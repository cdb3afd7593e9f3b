//go:build !race

package logwrites

const raceEnabled = false
