package scenarios

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/runtime/cmdline"
	"yolk/runtime/scenario"
)

// checkLine holds a command line to the registry as the image does
// before it brings anything up.
func checkLine(t *testing.T, line string) error {
	t.Helper()
	p, err := cmdline.Parse("img "+line, true)
	require.NoError(t, err, line)
	_, err = scenario.CheckParams(p)
	return err
}

// Bad boot parameters: every one is refused before the scenario starts,
// with one line that names the key, the value and what is allowed.
func TestBadBootParameters(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		// Misspelt keys never run the default scenario.
		{"scenraio=vm", "scenraio=vm is not a parameter of tour (did you mean scenario=?): tour takes host, nbd, export, flood, flood_kbps, verbose; every scenario takes scenario, ip, netmask, gw, mac"},
		{"scenario=vm stpes=10", "stpes=10 is not a parameter of vm (did you mean steps=?)"},
		{"scenario=vm Steps=10", "Steps=10 is not a parameter of vm (did you mean steps=?)"},
		{"scenario=meminfo min_free_kbyte=512", "(did you mean min_free_kbytes=?)"},
		{"scenario=selftest timout=5s", "timout=5s is not a parameter of selftest (did you mean timeout=?)"},
		// Keys of another scenario.
		{"steps=abc", "steps=abc is not a parameter of tour (mmu and vm take it): tour takes host, nbd, export"},
		{"seed=3", "seed=3 is not a parameter of tour (journal, mmu, region and vm take it)"},
		{"scenario=crash duration=1s", "duration=1s is not a parameter of crash (sleep takes it): crash takes no parameters of its own"},
		{"scenario=selftest verbose", "verbose=true is not a parameter of selftest (tour takes it): selftest takes host, timeout"},
		// The scenario itself.
		{"scenario=selftets", "scenario=selftets is not a choice (did you mean selftest?): want one of crash, journal, meminfo, mmu, nbdswap, pressure, region, selftest, shell, sleep, thp, tour, vm"},
		{"scenario=", `scenario="" is not a choice: want one of crash, journal, meminfo, mmu, nbdswap, pressure, region, selftest, shell, sleep, thp, tour, vm`},
		// Values out of range, or not of their kind.
		{"scenario=vm steps=-1", "steps=-1 is out of range: want an integer from 1 to 10000000"},
		{"scenario=vm steps=0", "steps=0 is out of range"},
		{"scenario=vm steps=99999999999", "steps=99999999999 is out of range: want an integer from 1 to 10000000"},
		{"scenario=vm steps=3e3", "steps=3e3 is not an integer"},
		{"scenario=vm seed=1.5", "seed=1.5 is not an integer"},
		{"scenario=meminfo fill=500", "fill=500 is out of range: want an integer from 0 to 100"},
		{"scenario=meminfo min_free_kbytes=99999999", "min_free_kbytes=99999999 is out of range"},
		{"scenario=sleep duration=forever", "duration=forever is not a duration: want a duration from 0s to 24h0m0s"},
		{"scenario=sleep duration=25h", "duration=25h is out of range"},
		{"scenario=selftest timeout=0s", "timeout=0s is out of range: want a duration from 1ms to 10m0s"},
		{"host=10.0.2.2", "host=10.0.2.2 is malformed: want HOST:PORT"},
		{"host=example.com:7", "host=example.com:7 is malformed"},
		{"scenario=journal", "nbd= is required: want HOST:PORT"},
		{"scenario=journal nbd=auto", "nbd=auto is malformed: want HOST:PORT"},
		{"scenario=journal nbd=10.0.2.2:10809 blocks=129", "blocks=129 is out of range: want an integer from 1 to 128"},
		{"scenario=journal nbd=10.0.2.2:10809 tx=0", "tx=0 is out of range: want an integer from 1 to 1000000"},
		// The network's, whatever the scenario.
		{"ip=999.1.1.1", "ip=999.1.1.1 is malformed: want an IPv4 address, or off"},
		{"scenario=sleep ip=bad", "ip=bad is malformed"},
		{"netmask=255.0.255.0", "netmask=255.0.255.0 is not a contiguous netmask"},
		{"mac=01:00:5e:00:00:01", "mac=01:00:5e:00:00:01 is a multicast address"},
		{"scenario=selftest gw=10.0.3.2", "gw=10.0.3.2 is not on 10.0.2.0/24, the subnet of ip=10.0.2.15 netmask=255.255.255.0"},
		{"scenario=selftest ip=192.168.1.50", "gw=10.0.2.2 is not on 192.168.1.0/24"},
		// The default scenario, the tour, needs its NBD server (the
		// harness gives it one).
		{"", "bad boot parameter nbd= is required: want HOST:PORT"},
		{"nbd=10.0.2.2:10809 flood_kbps=9999", "flood_kbps=9999 is out of range: want an integer from 0 to 4096"},
		// Several at once: all of them, still on one line.
		{"scenario=vm steps=0 sed=2", "2 bad boot parameters: sed=2 is not a parameter of vm (did you mean seed=?)"},
	} {
		err := checkLine(t, c.line)
		if !assert.Error(t, err, c.line) {
			continue
		}
		var ue *scenario.UsageError
		assert.ErrorAs(t, err, &ue, c.line)
		msg := err.Error()
		assert.Contains(t, msg, c.want, c.line)
		assert.True(t, strings.HasPrefix(msg, "bad boot parameter ") || strings.Contains(msg, " bad boot parameters: "), msg)
		assert.NotContains(t, msg, "\n", c.line)
	}
}

func TestGoodBootParameters(t *testing.T) {
	for _, line := range []string{
		"nbd=10.0.2.2:10809",
		"host=10.0.2.2:7 nbd=10.0.2.2:10809 export=swap flood=10.0.2.2:9 flood_kbps=0 verbose",
		"scenario=tour nbd=10.0.2.2:10809",
		"scenario=selftest",
		"scenario=selftest host=10.0.2.2:7 timeout=3s",
		"scenario=vm steps=10000000 seed=-7",
		"scenario=vm steps=0x10",
		"scenario=meminfo fill=0 min_free_kbytes=0",
		"scenario=journal nbd=10.0.2.2:10809 export=disk tx=1 blocks=128 seed=9",
		"scenario=sleep duration=0 ip=off",
		"scenario=crash ip=192.168.1.50 gw=192.168.1.1 netmask=255.255.255.0 mac=1a:55:89:a2:69:41",
	} {
		assert.NoError(t, checkLine(t, line), line)
	}
}

// No misspelling of a parameter passes: every dropped, doubled,
// swapped or changed letter of every key a scenario or the image takes is
// refused, unless the misspelling is itself a key the scenario takes.
func TestNoMisspeltKeyPasses(t *testing.T) {
	for _, name := range scenario.Names() {
		specs, ok := scenario.Params(name)
		require.True(t, ok)
		takes := map[string]bool{}
		for _, s := range specs {
			takes[s.Name] = true
		}
		tried := 0
		for _, s := range specs {
			for _, typo := range misspellings(s.Name) {
				if takes[typo] {
					continue
				}
				tried++
				err := checkLine(t, "scenario="+name+" "+typo+"=1")
				require.Error(t, err, "%s: %s=1 passed", name, typo)
				assert.Contains(t, err.Error(), typo+"=1 is not a parameter of "+name)
			}
		}
		t.Logf("%s: %d misspellings of %d keys refused", name, tried, len(specs))
	}
}

func misspellings(key string) []string {
	var out []string
	for i := range key {
		out = append(out, key[:i]+key[i+1:])                     // dropped
		out = append(out, key[:i+1]+key[i:])                     // doubled
		out = append(out, key[:i]+string(key[i]^0x20)+key[i+1:]) // case or punctuation changed
		out = append(out, key[:i]+"x"+key[i+1:])
		if i+1 < len(key) {
			out = append(out, key[:i]+key[i+1:i+2]+key[i:i+1]+key[i+2:]) // swapped
		}
	}
	var valid []string
	for _, k := range out {
		if p, err := cmdline.Parse("img "+k+"=1", true); err == nil && len(p.Keys()) == 1 {
			valid = append(valid, k)
		}
	}
	return valid
}

// Every declaration can work: its default passes its own check, and the
// harness knows the services it names.
func TestEveryScenarioDeclaresItsParameters(t *testing.T) {
	services := map[string]bool{"": true, "echo": true, "nbd": true, "flood": true}
	for _, name := range scenario.Names() {
		specs, _ := scenario.Params(name)
		for _, s := range specs {
			assert.NoError(t, s.Validate(), "%s: %s", name, s.Name)
			assert.True(t, services[s.Service], "%s: %s names the unknown service %q", name, s.Name, s.Service)
			assert.NotEmpty(t, s.Help, "%s: %s", name, s.Name)
		}
		sc, _ := scenario.Lookup(name)
		assert.NotEmpty(t, sc.Help, name)
	}
	assert.Equal(t, []string{"crash", "journal", "meminfo", "mmu", "nbdswap", "pressure", "region", "selftest", "shell", "sleep", "thp", "tour", "vm"}, scenario.Names())
}
