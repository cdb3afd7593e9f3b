package scenarios

import (
	"time"

	"yolk/runtime/scenario"
)

func init() {
	scenario.Register("sleep",
		"sleep for duration= (default 1s) and pass; a run that outlives its deadline, for the harness",
		sleep)
}

func sleep(env *scenario.Env) error {
	d, err := env.Params.Duration("duration", time.Second)
	if err != nil {
		return err
	}
	start := time.Now()
	time.Sleep(d)
	env.Check("slept", nil, "ms", time.Since(start).Milliseconds())
	return nil
}
