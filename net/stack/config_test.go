package stack

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/runtime/cmdline"
)

func TestDefaultIsQEMUUserNet(t *testing.T) {
	require.NoError(t, Default.Validate())
	assert.Equal(t, "10.0.2.15/24", Default.Prefix())
	p, err := cmdline.Parse("img", true)
	require.NoError(t, err)
	c, err := FromParams(p)
	require.NoError(t, err)
	assert.Equal(t, Default, c)
}

func TestOverrides(t *testing.T) {
	p, err := cmdline.Parse("img ip=192.168.7.2 netmask=255.255.0.0 gw=192.168.0.1 mac=1a:55:89:a2:69:41", true)
	require.NoError(t, err)
	c, err := FromParams(p)
	require.NoError(t, err)
	assert.Equal(t, "192.168.7.2/16", c.Prefix())
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
