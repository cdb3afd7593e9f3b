//go:build linux

package vmcheck

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"yolk/blk/nbd"
	"yolk/mm"
	"yolk/mm/phys"
	"yolk/qemu/nbdserver"
	"yolk/qemu/nbdserver/nbdservertest"
)

// TestModelOverNBD is the pressure run with swap on a real NBD server:
// nbdkit's memory plugin, and the same behind nbdkit's error filter
// failing 2% of reads and of writes. Every byte read must equal the
// model: a failed write keeps its page, so nothing is ever lost, and a
// failed read fails only the access that needed it (the run allows that
// fault, and nothing else). Every stream ends with every space exited,
// no slot named, and every frame back in the pool.
func TestModelOverNBD(t *testing.T) {
	if err := nbdserver.Available(nbdserver.NbdkitMemory); err != nil {
		t.Skipf("no nbdkit here (make deps installs it): %v", err)
	}
	for _, tc := range []struct {
		name    string
		filters []string
		params  []string
	}{
		{"nbdkit-memory", nil, nil},
		{"nbdkit-error-2pct", []string{"error"}, []string{"error-pread-rate=2%", "error-pwrite-rate=2%"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			events := map[string]uint64{}
			faults := 0
			t.Run("streams", func(t *testing.T) {
				for seed := int64(1); seed <= 4; seed++ {
					t.Run(fmt.Sprint(seed), func(t *testing.T) {
						t.Parallel()
						srv := nbdservertest.Start(t, nbdserver.Config{Kind: nbdserver.NbdkitMemory, Size: 64 << 20,
							Filters: tc.filters, Params: tc.params})
						fill, fillPages := modelFill(seed)
						pool, err := phys.New(phys.Config{Mem: make([]byte, modelPoolKiB(seed)<<10), Base: 0x80000000})
						require.NoError(t, err)
						mgr, err := mm.New(mm.Config{Pool: pool, VerifyZeroed: true})
						require.NoError(t, err)
						dev, err := nbd.Dial(context.Background(), nbd.Config{Addr: srv.Addr, Export: srv.Export,
							RequestTimeout: 20 * time.Second, ConnectTimeout: 5 * time.Second, ReconnectTimeout: 20 * time.Second})
						require.NoError(t, err)
						defer dev.Close()
						// The header write may meet the error filter too.
						for try := 0; ; try++ {
							if err = mgr.Swapon(dev, mm.SwapOptions{Name: "/dev/nbd0"}); err == nil || try == 10 {
								break
							}
						}
						require.NoError(t, err)
						st, err := Run(mgr, rand.New(rand.NewSource(seed)), Config{Steps: nbdModelSteps, ViewEvery: 4, Fill: fill, FillPages: fillPages, OwnPool: true,
							SwapErrors: tc.filters != nil})
						require.NoError(t, err, "seed %d", seed)
						finish(t, mgr, pool)
						mu.Lock()
						defer mu.Unlock()
						for _, n := range []string{"pswpout", "pswpin", "pswpout_fail", "pswpin_fail", "pgmajfault"} {
							v, _ := mgr.VmstatValue(n)
							events[n] += v
						}
						faults += st.SwapFaults
						t.Logf("seed %d: pool %d KiB, working set at most %d KiB, %d accesses failed on swap-in", seed, modelPoolKiB(seed), st.MaxWorkingSet*4, st.SwapFaults)
					})
				}
			})
			if t.Failed() {
				return
			}
			t.Logf("%s: %v, %d faults failed on a read", tc.name, events, faults)
			require.NotZero(t, events["pswpout"])
			require.NotZero(t, events["pswpin"])
			if tc.filters != nil {
				require.NotZero(t, events["pswpout_fail"], "the error filter failed no write")
				require.NotZero(t, events["pswpin_fail"], "the error filter failed no read")
				require.NotZero(t, faults, "no access met a failed read")
			} else {
				require.Zero(t, events["pswpout_fail"]+events["pswpin_fail"])
			}
		})
	}
}
