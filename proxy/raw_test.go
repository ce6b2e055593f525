package proxy_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// rawConn is a line-level IMAP client for checking exact wire responses.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func rawDial(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawConn{c: c, br: bufio.NewReader(c)}
	r.readUntil(t, "* OK")
	return r
}

// cmd sends line and reads until a line starting with want (the tagged response); it returns all lines.
func (r *rawConn) cmd(t *testing.T, line, want string) string {
	t.Helper()
	r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.c.Write([]byte(line + "\r\n")); err != nil {
		t.Fatal(err)
	}
	return r.readUntil(t, want)
}

func (r *rawConn) readUntil(t *testing.T, prefix string) string {
	t.Helper()
	var all strings.Builder
	r.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		line, err := r.br.ReadString('\n')
		all.WriteString(line)
		if err != nil {
			t.Fatalf("reading until %q: %v; got:\n%s", prefix, err, all.String())
		}
		if strings.HasPrefix(line, prefix) {
			return all.String()
		}
	}
}
