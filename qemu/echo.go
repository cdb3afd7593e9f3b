package qemu

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// EchoServer is a TCP echo service on a loopback port chosen by the kernel.
// Each connection is echoed until the peer closes it or goes quiet for
// IdleTimeout; Close stops the listener and every connection.
type EchoServer struct {
	// Param is the boot parameter naming the server (default "host").
	Param string
	// Port, when non-zero, is reported to the guest instead of the real
	// one: a deliberately wrong address for failure tests.
	Port int
	// IdleTimeout bounds a silent connection (default 30s).
	IdleTimeout time.Duration

	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	// Echoed counts the bytes echoed back, over all connections.
	echoed int64
}

// Addr is the loopback address the server listens on.
func (e *EchoServer) Addr() string { return e.ln.Addr().String() }

// Echoed returns how many bytes have been echoed so far.
func (e *EchoServer) Echoed() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.echoed
}

// Start listens on 127.0.0.1 and returns host=10.0.2.2:PORT.
func (e *EchoServer) Start() ([]string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.ln = ln
	e.conns = map[net.Conn]struct{}{}
	e.wg.Add(1)
	go e.serve()
	port := ln.Addr().(*net.TCPAddr).Port
	if e.Port != 0 {
		port = e.Port
	}
	param := e.Param
	if param == "" {
		param = "host"
	}
	return []string{fmt.Sprintf("%s=%s", param, net.JoinHostPort(GuestHostAddr, strconv.Itoa(port)))}, nil
}

func (e *EchoServer) serve() {
	defer e.wg.Done()
	idle := e.IdleTimeout
	if idle == 0 {
		idle = 30 * time.Second
	}
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		e.conns[c] = struct{}{}
		e.mu.Unlock()
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			defer func() {
				e.mu.Lock()
				delete(e.conns, c)
				e.mu.Unlock()
				c.Close()
			}()
			buf := make([]byte, 4096)
			for {
				c.SetDeadline(time.Now().Add(idle))
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
					e.mu.Lock()
					e.echoed += int64(n)
					e.mu.Unlock()
				}
				if err != nil {
					return // EOF, idle timeout or Close
				}
			}
		}()
	}
}

// Close stops the server and waits for its goroutines.
func (e *EchoServer) Close() error {
	if e.ln == nil {
		return nil
	}
	err := e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
	return err
}
