package qemu

import (
	"fmt"
	"net"

	"yolk/qemu/nbdserver"
)

// NBDServer is an NBD server on a loopback port for the guest (the journal
// scenario's nbd=), started with package nbdserver: an nbdkit memory
// server unless Config says otherwise.
type NBDServer struct {
	// Config is the server's; its Kind defaults to nbdserver.NbdkitMemory.
	Config nbdserver.Config
	// Param is the boot parameter naming the server (default "nbd").
	Param string
	// Server is the running server, once Start has returned.
	Server *nbdserver.Server
}

// Start starts the server and returns nbd=10.0.2.2:PORT, and export=NAME
// when the export has a name.
func (n *NBDServer) Start() ([]string, error) {
	cfg := n.Config
	if cfg.Kind == "" {
		cfg.Kind = nbdserver.NbdkitMemory
	}
	s, err := nbdserver.Start(cfg)
	if err != nil {
		return nil, err
	}
	n.Server = s
	_, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		s.Stop()
		return nil, err
	}
	param := n.Param
	if param == "" {
		param = "nbd"
	}
	params := []string{fmt.Sprintf("%s=%s", param, net.JoinHostPort(GuestHostAddr, port))}
	if s.Export != "" {
		params = append(params, "export="+s.Export)
	}
	return params, nil
}

// Close stops the server.
func (n *NBDServer) Close() error {
	if n.Server == nil {
		return nil
	}
	return n.Server.Stop()
}
