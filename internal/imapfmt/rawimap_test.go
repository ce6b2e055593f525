package imapfmt

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// rawIMAP is a minimal IMAP4rev1 client that returns server responses byte for byte (literals inlined as
// "{n}\r\n" followed by their n octets), so that the FETCH values Dovecot sends can be compared with ours
// without a client library decoding and re-encoding them.
type rawIMAP struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	tag  int
}

func dialRawIMAP(t *testing.T, addr, user, password string) *rawIMAP {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawIMAP{t: t, conn: conn, r: bufio.NewReader(conn)}
	if greeting := c.readResponse(); !bytes.HasPrefix(greeting, []byte("* OK")) {
		t.Fatalf("greeting %q", greeting)
	}
	c.command(fmt.Sprintf("LOGIN %s %s", strconv.Quote(user), strconv.Quote(password)))
	return c
}

// readResponse reads one response (a line and the literals it announces) without its final CRLF.
func (c *rawIMAP) readResponse() []byte {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var resp []byte
	for {
		line, err := c.r.ReadSlice('\n')
		resp = append(resp, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			c.t.Fatalf("read response: %v (so far %q)", err, resp)
		}
		n, ok := literalLength(resp)
		if !ok {
			return bytes.TrimSuffix(resp, []byte("\r\n"))
		}
		lit := make([]byte, n)
		if _, err := io.ReadFull(c.r, lit); err != nil {
			c.t.Fatalf("read literal: %v", err)
		}
		resp = append(resp, lit...)
	}
}

// literalLength reports whether resp ends with a literal announcement "{n}\r\n" and its n.
func literalLength(resp []byte) (int, bool) {
	if !bytes.HasSuffix(resp, []byte("}\r\n")) {
		return 0, false
	}
	body := resp[:len(resp)-3]
	open := bytes.LastIndexByte(body, '{')
	if open < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(body[open+1:]))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// command runs cmd and returns the untagged responses; it fails the test unless the result is OK.
func (c *rawIMAP) command(cmd string) [][]byte {
	c.t.Helper()
	c.tag++
	tag := fmt.Sprintf("t%d", c.tag)
	if _, err := fmt.Fprintf(c.conn, "%s %s\r\n", tag, cmd); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	return c.finish(tag)
}

func (c *rawIMAP) finish(tag string) [][]byte {
	c.t.Helper()
	var untagged [][]byte
	for {
		resp := c.readResponse()
		if bytes.HasPrefix(resp, []byte(tag+" ")) {
			if !bytes.HasPrefix(resp[len(tag)+1:], []byte("OK")) {
				c.t.Fatalf("%s failed: %q", tag, resp)
			}
			return untagged
		}
		untagged = append(untagged, resp)
	}
}

// appendMessage stores msg in mailbox through APPEND with a synchronizing literal.
func (c *rawIMAP) appendMessage(mailbox string, msg []byte) {
	c.t.Helper()
	c.tag++
	tag := fmt.Sprintf("t%d", c.tag)
	if _, err := fmt.Fprintf(c.conn, "%s APPEND %s {%d}\r\n", tag, strconv.Quote(mailbox), len(msg)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	if cont := c.readResponse(); !bytes.HasPrefix(cont, []byte("+")) {
		c.t.Fatalf("APPEND: no continuation: %q", cont)
	}
	if _, err := c.conn.Write(append(append([]byte{}, msg...), "\r\n"...)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	c.finish(tag)
}

// fetchItems splits the attribute list of an untagged "* n FETCH (...)" response into a map from item name
// (as the server spelled it) to its raw value.
func fetchItems(resp []byte) (map[string][]byte, error) {
	i := bytes.Index(resp, []byte(" FETCH ("))
	if !bytes.HasPrefix(resp, []byte("* ")) || i < 0 {
		return nil, fmt.Errorf("not a FETCH response: %.80q", resp)
	}
	rest := resp[i+len(" FETCH ("):]
	items := map[string][]byte{}
	for len(rest) > 0 && rest[0] != ')' {
		sp := bytes.IndexByte(rest, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("item without value: %.80q", rest)
		}
		name := string(rest[:sp])
		n, err := valueLength(rest[sp+1:])
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		items[name] = rest[sp+1 : sp+1+n]
		rest = rest[sp+1+n:]
		if len(rest) > 0 && rest[0] == ' ' {
			rest = rest[1:]
		}
	}
	if len(rest) != 1 {
		return nil, fmt.Errorf("trailing data after FETCH items: %.80q", rest)
	}
	return items, nil
}

// valueLength returns the length of the IMAP value (atom, quoted string, literal or parenthesized list) at
// the start of b.
func valueLength(b []byte) (int, error) {
	depth := 0
	for i := 0; ; {
		if i >= len(b) {
			if depth == 0 && i > 0 {
				return i, nil
			}
			return 0, fmt.Errorf("unterminated value")
		}
		switch b[i] {
		case '(':
			depth++
			i++
			continue
		case ')':
			if depth == 0 {
				return i, nil
			}
			depth--
			i++
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if i >= len(b) {
				return 0, fmt.Errorf("unterminated quoted string")
			}
			i++
		case '{':
			end := bytes.Index(b[i:], []byte("}\r\n"))
			if end < 0 {
				return 0, fmt.Errorf("bad literal")
			}
			n, err := strconv.Atoi(string(b[i+1 : i+end]))
			if err != nil || i+end+3+n > len(b) {
				return 0, fmt.Errorf("bad literal at %d", i)
			}
			i += end + 3 + n
		case ' ':
			if depth == 0 {
				return i, nil
			}
			i++
			continue
		default:
			i++
			continue
		}
		if depth == 0 {
			return i, nil
		}
	}
}
