//go:build !linux

package mm

import "testing"

// Off Linux (the image's own build, GOOS=tamago) there is no Linux to
// measure beside yolk.

type linuxMM struct{ size int }

func linuxTHP(b *testing.B) (linuxMM, bool) {
	b.Logf("no Linux figures: not running on Linux")
	return linuxMM{}, false
}

func (linuxMM) fault(*testing.B) (float64, float64) { return 0, 0 }
func (linuxMM) madvFree(*testing.B, bool) float64   { return 0 }
