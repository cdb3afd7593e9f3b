package scenarios

import (
	"errors"
	"time"

	"yolk/runtime/scenario"
)

func init() {
	scenario.Register(scenario.Scenario{
		Name: "crash",
		Help: "panic in another goroutine, which nothing can recover: how the image dies, for the harness",
		Run:  crash,
	})
}

// crash must never return: the panic ends the image (status 4 under QEMU).
func crash(*scenario.Env) error {
	go func() { panic("crash scenario: unrecovered panic") }()
	time.Sleep(time.Minute)
	return errors.New("still running a minute after an unrecovered panic")
}
