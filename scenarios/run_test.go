package scenarios

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"yolk/board"
	"yolk/mm/phys"
	"yolk/runtime/cmdline"
	"yolk/runtime/result"
	"yolk/runtime/scenario"
)

// smallBoard has an 8 MiB pool so the host test can back it with a slab;
// it starts on a 4 MiB boundary so that selftest can have a block of
// every order.
var smallBoard = board.Info{
	Name: "host",
	Memory: board.MemoryMap{
		RAM:     board.Region{Name: "ram", Start: 0x80000000, Size: 16 << 20},
		Runtime: board.Region{Name: "runtime", Start: 0x80000000, Size: 4 << 20},
		Pool:    board.Region{Name: "pool", Start: 0x80400000, Size: 8 << 20},
		DMA:     board.Region{Name: "dma", Start: 0x80c00000, Size: 1 << 20},
	},
}

// runLine runs a command line the way the image does: held to the
// image's and the scenario's parameters first (a refusal is ExitUsage and
// the image's one result line saying why), then run on the small board,
// which setup equips as the board would: the pool, its allocator, a
// network.
func runLine(t *testing.T, line string, setup func(*scenario.Env)) (int, string) {
	t.Helper()
	p, err := cmdline.Parse("img "+line, true)
	require.NoError(t, err)
	var out bytes.Buffer
	rep := scenario.NewReporter(&out)
	args, err := scenario.CheckParams(p)
	if err != nil {
		rep.Emit(result.New("result", "scenario", p.String("scenario", scenario.DefaultScenario),
			"status", "fail", "code", scenario.ExitUsage, "err", err.Error()))
		return scenario.ExitUsage, out.String()
	}
	env := scenario.NewEnv(rep, args, smallBoard)
	if setup != nil {
		setup(env)
	}
	return scenario.Run(env), out.String()
}

// withPool gives the run a managed pool of the small board's size.
func withPool(t *testing.T) func(*scenario.Env) {
	return func(env *scenario.Env) {
		env.Pool = make([]byte, smallBoard.Memory.Pool.Size)
		var err error
		env.Phys, err = phys.New(phys.Config{Mem: env.Pool, Base: smallBoard.Memory.Pool.Start})
		require.NoError(t, err)
	}
}
