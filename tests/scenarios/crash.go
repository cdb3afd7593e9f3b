package scenarios

import (
	"time"

	"yolk/runtime/scenario"
)

func init() {
	scenario.Register("crash",
		"panic in another goroutine, which nothing can recover: how the image dies, for the harness",
		crash)
}

func crash(env *scenario.Env) error {
	go func() { panic("crash scenario: unrecovered panic") }()
	time.Sleep(time.Minute)
	env.Check("crashed", errAlive)
	return nil
}

type aliveError struct{}

func (aliveError) Error() string { return "still running a minute after the panic" }

var errAlive = aliveError{}
