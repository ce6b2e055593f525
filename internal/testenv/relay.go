package testenv

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Relay forwards TCP connections from a loopback address to a target, for fault injection that the real
// servers cannot do themselves: Stop makes the target unreachable (connections cut, new ones refused),
// Restart brings it back on the same address, and CutAfter breaks every connection in the middle of a
// response.
type Relay struct {
	target string
	addr   string

	cutAfter atomic.Int64 // < 0: never; else cut once this many more bytes came from the target
	cut      atomic.Bool

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewRelay starts a relay to target on a free 127.0.0.1 port; it is closed at cleanup.
func NewRelay(t TB, target string) *Relay {
	t.Helper()
	r := &Relay{target: target, conns: map[net.Conn]struct{}{}}
	r.cutAfter.Store(-1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: relay: %v", err)
	}
	r.addr = ln.Addr().String()
	r.serve(ln)
	t.Cleanup(r.close)
	return r
}

// Addr is the relay's host:port.
func (r *Relay) Addr() string { return r.addr }

// CutAfter makes the relay close every connection once n more bytes have flowed from the target towards
// clients (n < 0 disarms it).
func (r *Relay) CutAfter(n int64) { r.cutAfter.Store(n) }

// Cut reports whether CutAfter has cut the connections.
func (r *Relay) Cut() bool { return r.cut.Load() }

func (r *Relay) serve(ln net.Listener) {
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.pipe(c)
			}()
		}
	}()
}

func (r *Relay) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	r.mu.Lock()
	if r.ln == nil { // stopped meanwhile
		r.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	r.conns[c], r.conns[up] = struct{}{}, struct{}{}
	r.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); up.Close(); done <- struct{}{} }()
	go func() { r.copyDown(c, up); c.Close(); done <- struct{}{} }()
	<-done
	<-done
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, up)
	r.mu.Unlock()
}

// copyDown copies from the target to the client, cutting every connection when CutAfter's budget is spent.
func (r *Relay) copyDown(c, up net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			if r.cutAfter.Load() >= 0 {
				if r.cutAfter.Add(-int64(n)) < 0 {
					r.cut.Store(true)
					r.closeConns()
					return
				}
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *Relay) closeConns() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.Close()
	}
}

// Stop closes the listener (new connections are refused) and cuts every open connection.
func (r *Relay) Stop() {
	r.mu.Lock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	r.mu.Unlock()
	r.closeConns()
}

// Restart listens again on the relay's address after Stop.
func (r *Relay) Restart() error {
	r.mu.Lock()
	running := r.ln != nil
	r.mu.Unlock()
	if running {
		return nil
	}
	var ln net.Listener
	var err error
	// The port was ours a moment ago; retry briefly in case the kernel has not released it yet.
	for range 50 {
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			r.serve(ln)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

func (r *Relay) close() {
	r.Stop()
	r.wg.Wait()
}
