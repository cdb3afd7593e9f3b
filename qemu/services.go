package qemu

import (
	"slices"
	"strings"

	"yolk/qemu/nbdserver"
	"yolk/runtime/cmdline"
)

// Services names the host services a scenario's parameters can point at
// (cmdline.Spec.Service) and how the harness starts each: a TCP echo
// server, an NBD server, a flood server (unrelated TCP and UDP traffic for
// the receive-path scenarios).
const (
	ServiceEcho  = "echo"
	ServiceNBD   = "nbd"
	ServiceFlood = "flood"
)

// PlanServices decides what a run needs on the host. words are the
// key=value boot parameters; specs are the parameters the chosen scenario
// takes (the image's and its own). A service is started when none of the
// parameters naming it is set, or they are set to auto; its parameters
// then come from the service, and the auto words are dropped. nbd
// configures the NBD server (its Kind defaults to an nbdkit memory
// server).
func PlanServices(words []string, specs []cmdline.Spec, nbd nbdserver.Config) (services []Service, rest []string) {
	set := map[string]string{}
	for _, w := range words {
		k, v, _ := strings.Cut(w, "=")
		set[k] = v
	}
	given := map[string]bool{} // services the command line points at itself
	wanted := []string{}       // services named by the specs, in their order
	for _, s := range specs {
		if s.Service == "" {
			continue
		}
		if !slices.Contains(wanted, s.Service) {
			wanted = append(wanted, s.Service)
		}
		if v, ok := set[s.Name]; ok && v != "auto" {
			given[s.Service] = true
		}
	}
	auto := map[string]bool{}
	for _, name := range wanted {
		if given[name] {
			continue
		}
		switch name {
		case ServiceEcho:
			services = append(services, &EchoServer{})
		case ServiceNBD:
			services = append(services, &NBDServer{Config: nbd})
		case ServiceFlood:
			services = append(services, &FloodServer{})
		default:
			continue
		}
		for _, s := range specs {
			if s.Service == name {
				auto[s.Name] = true
			}
		}
	}
	for _, w := range words {
		k, _, _ := strings.Cut(w, "=")
		if !auto[k] {
			rest = append(rest, w)
		}
	}
	return services, rest
}
