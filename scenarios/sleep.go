package scenarios

import (
	"time"

	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
)

func init() {
	scenario.Register(scenario.Scenario{
		Name: "sleep",
		Help: "sleep for duration= and pass; an idle image, or a run that outlives its deadline, for the harness",
		Params: []cmdline.Spec{
			{Name: "duration", Value: cmdline.Duration{Min: 0, Max: 24 * time.Hour}, Default: "1s", Help: "how long to sleep"},
		},
		Run: sleep,
	})
}

func sleep(env *scenario.Env) error {
	start := time.Now()
	time.Sleep(env.Args.Duration("duration"))
	env.Check("slept", nil, "ms", time.Since(start).Milliseconds())
	return nil
}
