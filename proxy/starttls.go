package proxy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// STARTTLS towards the client (RFC 9051 section 6.2.1, RFC 3501 section 6.2.1). Mail clients try it, or insist
// on it, even on localhost, so with Options.StartTLS the relay offers it on a plaintext client connection
// before login and answers it itself; the upstream connection has its own TLS (package backend) and never sees
// the command. The rules it follows:
//
//   - STARTTLS is advertised (greeting's [CAPABILITY], CAPABILITY responses) only while the client is not
//     authenticated and its connection is not TLS yet; not in the list that completes LOGIN/AUTHENTICATE.
//   - The tagged OK goes out after the responses to every earlier command, then the handshake runs on the raw
//     connection. Whatever the client sent after the STARTTLS line before the handshake is discarded, never
//     relayed: a command pipelined in clear behind STARTTLS (the CVE-2011-0411 class of injection) would
//     otherwise run as if it had come over TLS.
//   - Afterwards the client must discard cached capabilities and ask again (RFC 9051 section 6.2.1); the
//     list it then gets lacks STARTTLS. A second STARTTLS, or one after login, is a BAD.
//   - LOGINDISABLED is never added: a loopback client may still log in without STARTTLS.

// handshakeTimeout bounds the TLS handshake after STARTTLS.
const handshakeTimeout = 30 * time.Second

// clientConn is the client connection, switchable once from plaintext to TLS: the reader (clientLoop) and the
// writer (writeLoop) keep using the same value while the relay upgrades it underneath.
type clientConn struct {
	mu   sync.Mutex
	conn net.Conn
}

func (c *clientConn) current() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

func (c *clientConn) set(conn net.Conn) {
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
}

func (c *clientConn) Read(b []byte) (int, error)         { return c.current().Read(b) }
func (c *clientConn) Write(b []byte) (int, error)        { return c.current().Write(b) }
func (c *clientConn) Close() error                       { return c.current().Close() }
func (c *clientConn) LocalAddr() net.Addr                { return c.current().LocalAddr() }
func (c *clientConn) RemoteAddr() net.Addr               { return c.current().RemoteAddr() }
func (c *clientConn) SetDeadline(t time.Time) error      { return c.current().SetDeadline(t) }
func (c *clientConn) SetReadDeadline(t time.Time) error  { return c.current().SetReadDeadline(t) }
func (c *clientConn) SetWriteDeadline(t time.Time) error { return c.current().SetWriteDeadline(t) }

// ReadFrom keeps the kernel copy (splice) from the upstream socket when the client connection is plain TCP.
func (c *clientConn) ReadFrom(r io.Reader) (int64, error) {
	conn := c.current()
	if rf, ok := conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{conn}, r)
}

// tlsSwitch parks the writer between the STARTTLS OK, written in clear, and the upgraded connection.
type tlsSwitch struct {
	flushed chan struct{} // closed by the writer once the OK is on the wire
	resume  chan struct{} // closed by clientLoop once the handshake is done
}

// isTLS reports whether the client connection is TLS (implicit, or after STARTTLS).
func (r *relay) isTLS() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tlsOn
}

// offerStartTLS reports whether the capability list in line (a greeting, CAPABILITY response or status
// response, from the upstream) is shown to the client with STARTTLS.
func (r *relay) offerStartTLS(line []byte) bool {
	if r.srv.opts.StartTLS == nil || r.isTLS() || r.userName() != "" {
		return false
	}
	if len(line) > 0 && line[0] != '*' {
		// The tagged OK of LOGIN or AUTHENTICATE carries the authenticated state's list.
		tag, _, _ := bytes.Cut(line, []byte(" "))
		if c := r.findPending(tag); c != nil && (c.name == "LOGIN" || c.name == "AUTHENTICATE") {
			return false
		}
	}
	return !bytes.HasPrefix(bytes.ToUpper(line[:min(len(line), 9)]), []byte("* PREAUTH"))
}

// clientCaps filters the capability list of a line from the upstream for the client (caps.go).
func (r *relay) clientCaps(line []byte, caps func(list []byte)) []byte {
	return filterCapsInLineTLS(line, r.decrypting(), r.offerStartTLS(line), caps)
}

// startTLS answers the client's STARTTLS and upgrades the client connection.
func (r *relay) startTLS(tag string) error {
	if err := r.waitIdle(); err != nil {
		return err
	}
	switch {
	case r.srv.opts.StartTLS == nil:
		return r.local(tag, "BAD STARTTLS is not offered by smimeproxy on this listener")
	case r.isTLS():
		return r.local(tag, "BAD TLS is already active")
	case r.userName() != "":
		return r.local(tag, "BAD STARTTLS is only valid before login")
	}
	if n := r.cr.Buffered(); n > 0 {
		r.log.Warn("client sent data after STARTTLS before the TLS handshake; discarded", "bytes", n)
	}
	sw := &tlsSwitch{flushed: make(chan struct{}), resume: make(chan struct{})}
	select {
	case r.out <- outEntry{data: []byte(tag + " OK Begin TLS negotiation now\r\n"), upgrade: sw}:
	case <-r.done:
		return errRelayClosed
	}
	select {
	case <-sw.flushed:
	case <-r.done:
		return errRelayClosed
	}
	raw := r.client.current()
	tc := tls.Server(raw, r.srv.opts.StartTLS)
	raw.SetDeadline(time.Now().Add(handshakeTimeout))
	err := tc.HandshakeContext(r.ctx)
	raw.SetDeadline(time.Time{})
	if err != nil {
		r.log.Info("STARTTLS handshake failed", "err", err)
		return fmt.Errorf("STARTTLS handshake: %w", err)
	}
	r.client.set(tc)
	r.cr.Reset(r.client) // drops the plaintext read before the handshake
	r.mu.Lock()
	r.tlsOn = true
	r.mu.Unlock()
	close(sw.resume)
	r.log.Debug("client connection upgraded to TLS", "version", tls.VersionName(tc.ConnectionState().Version))
	return nil
}

// parkForTLS is the writer's side of STARTTLS: the OK is flushed in clear, then the writer waits for the
// upgraded connection (its buffered writer wraps r.client, which switches underneath).
func (r *relay) parkForTLS(sw *tlsSwitch, flush func() error) error {
	if err := flush(); err != nil {
		return err
	}
	close(sw.flushed)
	select {
	case <-sw.resume:
		return nil
	case <-r.done:
		return net.ErrClosed
	}
}
