package stack

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/runtime/cmdline"
)

func args(t *testing.T, line string) cmdline.Args {
	t.Helper()
	p, err := cmdline.Parse("img "+line, true)
	require.NoError(t, err)
	a, unknown, errs := cmdline.Bind(p, Params)
	require.Empty(t, unknown)
	require.Empty(t, errs)
	return a
}

func TestDefaultIsQEMUUserNet(t *testing.T) {
	require.NoError(t, Default.Validate())
	assert.Equal(t, "10.0.2.15/24", Default.Prefix())
	c, err := FromArgs(args(t, ""))
	require.NoError(t, err)
	assert.Equal(t, Default, c)
	for _, s := range Params {
		assert.NoError(t, s.Validate(), s.Name)
	}
}

func TestOverrides(t *testing.T) {
	c, err := FromArgs(args(t, "ip=192.168.7.2 netmask=255.255.0.0 gw=192.168.0.1 mac=1a:55:89:a2:69:41"))
	require.NoError(t, err)
	assert.Equal(t, "192.168.7.2/16", c.Prefix())

	c, err = FromArgs(args(t, "ip=off gw=1.2.3.4"))
	require.NoError(t, err)
	assert.Equal(t, Config{Off: true}, c, "ip=off leaves the network down, whatever else is set")
}

func TestCrossChecksNameTheParameters(t *testing.T) {
	_, err := FromArgs(args(t, "gw=10.0.3.2"))
	assert.EqualError(t, err, "gw=10.0.3.2 is not on 10.0.2.0/24, the subnet of ip=10.0.2.15 netmask=255.255.255.0: want an address on it")
	_, err = FromArgs(args(t, "gw=10.0.2.15"))
	assert.EqualError(t, err, "gw=10.0.2.15 is the interface's own address ip=10.0.2.15: want another address on 10.0.2.0/24")
}

func TestRejects(t *testing.T) {
	for name, c := range map[string]Config{
		"v6 address":     {Addr: "::1", Netmask: "255.255.255.0", Gateway: "10.0.2.2", MAC: Default.MAC},
		"bad mask":       {Addr: "10.0.2.15", Netmask: "255.0.255.0", Gateway: "10.0.2.2", MAC: Default.MAC},
		"gw off subnet":  {Addr: "10.0.2.15", Netmask: "255.255.255.0", Gateway: "10.0.3.2", MAC: Default.MAC},
		"gw is self":     {Addr: "10.0.2.15", Netmask: "255.255.255.0", Gateway: "10.0.2.15", MAC: Default.MAC},
		"multicast mac":  {Addr: "10.0.2.15", Netmask: "255.255.255.0", Gateway: "10.0.2.2", MAC: "01:00:5e:00:00:01"},
		"short mac":      {Addr: "10.0.2.15", Netmask: "255.255.255.0", Gateway: "10.0.2.2", MAC: "02:00"},
		"gw not address": {Addr: "10.0.2.15", Netmask: "255.255.255.0", Gateway: "gateway", MAC: Default.MAC},
	} {
		assert.Error(t, c.Validate(), name)
	}
}
