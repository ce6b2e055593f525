package proxy

import (
	"net"
	"sync"
)

// corkConn batches writes to the client while corked (during a FETCH, whose go-imap writer flushes after every
// message) and writes through otherwise. Uncork flushes.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

// corkLimit is the most buffered before a corked write goes out.
const corkLimit = 64 << 10

// corkDirect: writes at least this large (literal chunks) go straight out after the buffer.
const corkDirect = 16 << 10

func newCorkConn(c net.Conn) *corkConn { return &corkConn{Conn: c} }

func (c *corkConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(b)
	}
	if len(b) >= corkDirect || len(c.buf)+len(b) > corkLimit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(b) >= corkDirect {
			return c.Conn.Write(b) // a literal chunk: no copy
		}
	}
	c.buf = append(c.buf, b...)
	return len(b), nil
}

func (c *corkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

// Close flushes what is buffered (a BYE written while corked must reach the client, RFC 9051 section 7.1.5)
// and closes the connection.
func (c *corkConn) Close() error {
	c.mu.Lock()
	c.corked = false
	_ = c.flushLocked()
	c.mu.Unlock()
	return c.Conn.Close()
}
