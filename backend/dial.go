package backend

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// DefaultDialTimeout bounds TCP connect, TLS handshake, greeting and STARTTLS when Options.DialTimeout is 0.
const DefaultDialTimeout = 30 * time.Second

// Options say how to reach the upstream server. The zero value of every field but URL is usable.
type Options struct {
	// URL is imaps://host[:993] (implicit TLS, RFC 8314 section 3.3) or imap://host[:143] (STARTTLS when the
	// server offers it; plaintext only when host is a loopback address or AllowPlaintext is set).
	URL string
	// CAFile is a PEM file of CA certificates trusted in addition to the system roots.
	CAFile string
	// AllowPlaintext permits imap:// without STARTTLS to a non-loopback host.
	AllowPlaintext bool
	// DialTimeout bounds connecting up to a usable (TLS) session; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// TLSConfig, if set, is cloned and used as the base TLS configuration (tests).
	TLSConfig *tls.Config
}

// Target is a parsed upstream URL.
type Target struct {
	Implicit bool   // imaps://
	Host     string // host name or IP, no port
	Addr     string // host:port
}

// ParseURL parses an upstream URL (see Options.URL). It fails on another scheme, a path, user info or a bad
// port.
func ParseURL(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, fmt.Errorf("backend: upstream URL: %w", err)
	}
	var t Target
	port := ""
	switch strings.ToLower(u.Scheme) {
	case "imaps":
		t.Implicit, port = true, "993"
	case "imap":
		port = "143"
	default:
		return Target{}, fmt.Errorf("backend: upstream URL %q: scheme must be imaps or imap", s)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Hostname() == "" {
		return Target{}, fmt.Errorf("backend: upstream URL %q: want imaps://host[:port] or imap://host[:port]", s)
	}
	t.Host = u.Hostname()
	if p := u.Port(); p != "" {
		port = p
	}
	t.Addr = net.JoinHostPort(t.Host, port)
	return t, nil
}

// IsLoopback reports whether host is "localhost" or a loopback IP address.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ErrPlaintextRefused is returned by Dial for imap:// to a non-loopback host that does not offer STARTTLS
// (or that cannot be reached securely) when Options.AllowPlaintext is false.
var ErrPlaintextRefused = errors.New("backend: upstream offers no STARTTLS and is not on loopback; refusing plaintext (use imaps:// or allow plaintext explicitly)")

// dialContext bounds ctx by the dial timeout.
func (o *Options) dialContext(ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := o.DialTimeout
	if timeout == 0 {
		timeout = DefaultDialTimeout
	}
	return context.WithTimeout(ctx, timeout)
}

// tlsConfig builds the TLS configuration for host.
func (o *Options) tlsConfig(host string) (*tls.Config, error) {
	return ClientTLS(o.TLSConfig, host, o.CAFile)
}

// ClientTLS returns the TLS configuration for reaching an upstream server at host: a clone of base (nil: the
// defaults), the host name verified (ServerName), TLS 1.2 at least, and the PEM certificates of caFile (when
// given) trusted besides base's roots or the system's. The IMAP upstream and the submission upstream (package
// submit) use it alike.
func ClientTLS(base *tls.Config, host, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("backend: upstream CA file: %w", err)
		}
		pool := cfg.RootCAs
		if pool == nil {
			if pool, err = x509.SystemCertPool(); err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("backend: upstream CA file %s: no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// dialRaw returns a connection ready for imapclient.New: for imaps:// the TLS connection; for imap:// the
// greeting has been read here, STARTTLS done when offered (RFC 3501 section 6.2.1), and a synthetic greeting
// is replayed to imapclient.
func dialRaw(ctx context.Context, o *Options) (net.Conn, error) {
	t, err := ParseURL(o.URL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := o.dialContext(ctx)
	defer cancel()
	tcfg, err := o.tlsConfig(t.Host)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, fmt.Errorf("backend: connect %s: %w", t.Addr, err)
	}
	if t.Implicit {
		tc := tls.Client(raw, tcfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("backend: TLS with %s: %w", t.Addr, err)
		}
		return tc, nil
	}
	deadline, _ := ctx.Deadline()
	raw.SetDeadline(deadline)
	br := bufio.NewReader(raw)
	c, err := negotiate(raw, br, o, t, tcfg, ctx)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

func negotiate(raw net.Conn, br *bufio.Reader, o *Options, t Target, tcfg *tls.Config, ctx context.Context) (net.Conn, error) {
	greeting, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("backend: greeting from %s: %w", t.Addr, err)
	}
	up := strings.ToUpper(greeting)
	switch {
	case strings.HasPrefix(up, "* PREAUTH"):
		return nil, fmt.Errorf("backend: %s sent PREAUTH before TLS (RFC 3501 section 6.2.1); refusing", t.Addr)
	case !strings.HasPrefix(up, "* OK"):
		return nil, fmt.Errorf("backend: %s greeted %q", t.Addr, strings.TrimSpace(greeting))
	}
	caps := ""
	if i := strings.Index(up, "[CAPABILITY "); i >= 0 {
		caps = up[i:]
		if j := strings.IndexByte(caps, ']'); j >= 0 {
			caps = caps[:j]
		}
	} else {
		if _, err := io.WriteString(raw, "P1 CAPABILITY\r\n"); err != nil {
			return nil, fmt.Errorf("backend: %s: %w", t.Addr, err)
		}
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return nil, fmt.Errorf("backend: CAPABILITY from %s: %w", t.Addr, err)
			}
			u := strings.ToUpper(line)
			if strings.HasPrefix(u, "* CAPABILITY ") {
				caps = u
			}
			if strings.HasPrefix(u, "P1 ") {
				break
			}
		}
	}
	if hasWord(caps, "STARTTLS") {
		if _, err := io.WriteString(raw, "P2 STARTTLS\r\n"); err != nil {
			return nil, fmt.Errorf("backend: %s: %w", t.Addr, err)
		}
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return nil, fmt.Errorf("backend: STARTTLS with %s: %w", t.Addr, err)
			}
			if strings.HasPrefix(strings.ToUpper(line), "P2 OK") {
				break
			}
			if strings.HasPrefix(line, "P2 ") {
				return nil, fmt.Errorf("backend: STARTTLS with %s: %s", t.Addr, strings.TrimSpace(line))
			}
		}
		if br.Buffered() > 0 {
			return nil, fmt.Errorf("backend: %s sent data after STARTTLS OK (possible injection); refusing", t.Addr)
		}
		tc := tls.Client(raw, tcfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("backend: STARTTLS handshake with %s: %w", t.Addr, err)
		}
		raw.SetDeadline(time.Time{})
		// The greeting is replayed without its capability list, which is stale after STARTTLS (RFC 9051
		// section 6.2.1): whoever reads it asks for CAPABILITY again.
		return &replayConn{Conn: tc, r: io.MultiReader(strings.NewReader(withoutCapability(greeting)), tc), direct: true}, nil
	}
	if !IsLoopback(t.Host) && !o.AllowPlaintext {
		return nil, ErrPlaintextRefused
	}
	raw.SetDeadline(time.Time{})
	if br.Buffered() == 0 {
		return &replayConn{Conn: raw, r: io.MultiReader(strings.NewReader(greeting), raw), direct: true}, nil
	}
	return &replayConn{Conn: raw, r: io.MultiReader(strings.NewReader(greeting), br)}, nil
}

// withoutCapability returns an OK greeting line without its [CAPABILITY ...] response code.
func withoutCapability(greeting string) string {
	i := strings.Index(strings.ToUpper(greeting), "[CAPABILITY ")
	if i < 0 {
		return greeting
	}
	j := strings.IndexByte(greeting[i:], ']')
	if j < 0 {
		return "* OK\r\n"
	}
	return greeting[:i] + strings.TrimLeft(greeting[i+j+1:], " ")
}

func hasWord(list, w string) bool {
	for _, f := range strings.Fields(list) {
		if f == w {
			return true
		}
	}
	return false
}

// replayConn reads a replayed greeting, then the connection.
type replayConn struct {
	direct bool // after the greeting, reads come straight from Conn
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// dialClient dials and returns an imapclient that has seen the greeting.
func dialClient(ctx context.Context, o *Options, co *imapclient.Options) (*imapclient.Client, net.Conn, error) {
	nc, err := dialRaw(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	c := imapclient.New(nc, co)
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	if err := c.WaitGreeting(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("backend: greeting: %w", err)
	}
	return c, nc, nil
}
