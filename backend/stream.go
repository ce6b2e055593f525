package backend

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/emersion/go-sasl"
)

// Stream is a raw upstream connection for the relay (package proxy): connected, TLS verified as for Dial,
// greeting read. The relay reads and writes the IMAP stream itself.
type Stream struct {
	Conn net.Conn
	R    *bufio.Reader
	// Raw is the connection R reads from with nothing in between (for copying large literals without a
	// user-space copy, e.g. splice on a plaintext loopback upstream): read it only when R has nothing buffered.
	Raw net.Conn
	// Greeting is the server's greeting line (with CRLF). It always carries the current capability list as a
	// [CAPABILITY ...] response code (RFC 9051 section 7.1): when the server's greeting had none, or had the
	// one from before STARTTLS, it was asked for with CAPABILITY and inserted.
	Greeting []byte
}

// DialStream connects like Dial and returns the raw connection. ctx and the dial timeout bound the dial and
// the greeting.
func DialStream(ctx context.Context, o Options) (*Stream, error) {
	ctx, cancel := o.dialContext(ctx)
	defer cancel()
	nc, err := dialRaw(ctx, &o)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	br := bufio.NewReaderSize(nc, 64<<10)
	greeting, err := br.ReadString('\n')
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("backend: greeting: %w", err)
	}
	up := strings.ToUpper(greeting)
	if strings.HasPrefix(up, "* PREAUTH") {
		nc.Close()
		return nil, fmt.Errorf("backend: upstream sent PREAUTH; smimeproxy needs the user to log in")
	}
	if !strings.HasPrefix(up, "* OK") {
		nc.Close()
		return nil, fmt.Errorf("backend: upstream greeted %q", strings.TrimSpace(greeting))
	}
	if !strings.Contains(up, "[CAPABILITY ") {
		caps, err := askCapability(nc, br)
		if err != nil {
			nc.Close()
			return nil, err
		}
		text := strings.TrimLeft(greeting[len("* OK"):], " ")
		greeting = "* OK [CAPABILITY " + caps + "] " + text
	}
	if ctx.Err() != nil {
		nc.Close()
		return nil, fmt.Errorf("backend: greeting: %w", ctx.Err())
	}
	raw := nc
	if rc, ok := nc.(*replayConn); ok {
		raw = nil
		if rc.direct {
			raw = rc.Conn // the replayed greeting has been read by br
		}
	}
	return &Stream{Conn: nc, R: br, Raw: raw, Greeting: []byte(greeting)}, nil
}

// askCapability sends CAPABILITY and returns the capability list.
func askCapability(w io.Writer, br *bufio.Reader) (string, error) {
	if _, err := io.WriteString(w, "P0 CAPABILITY\r\n"); err != nil {
		return "", fmt.Errorf("backend: CAPABILITY: %w", err)
	}
	caps := ""
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("backend: CAPABILITY: %w", err)
		}
		if len(line) > 13 && strings.EqualFold(line[:13], "* CAPABILITY ") {
			caps = strings.TrimRight(line[13:], "\r\n")
		}
		if strings.HasPrefix(line, "P0 ") {
			if !strings.HasPrefix(strings.ToUpper(line), "P0 OK") || caps == "" {
				return "", fmt.Errorf("backend: CAPABILITY: %s", strings.TrimSpace(line))
			}
			return caps, nil
		}
	}
}

// Authenticate logs in with the SASL client c (RFC 9051 section 6.2.2), e.g. one that replays what a mail
// client sent.
func (c *Conn) Authenticate(ctx context.Context, sc sasl.Client) error {
	return c.Do(ctx, func() error { return c.Client.Authenticate(sc) })
}
