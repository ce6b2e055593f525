package submit

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/smimeproxy/smimeproxy/backend"
)

// Target is a parsed submission upstream URL.
type Target struct {
	Implicit bool   // smtps:// (RFC 8314 section 3.3)
	Host     string // host name or IP, no port
	Addr     string // host:port
}

// ParseURL parses smtps://host[:465] (implicit TLS) or smtp://host[:587] (STARTTLS, RFC 3207). It fails on
// another scheme, a path, user info or a bad port.
func ParseURL(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, fmt.Errorf("submit: upstream URL: %w", err)
	}
	var t Target
	port := ""
	switch strings.ToLower(u.Scheme) {
	case "smtps":
		t.Implicit, port = true, "465"
	case "smtp", "submission":
		port = "587"
	default:
		return Target{}, fmt.Errorf("submit: upstream URL %q: scheme must be smtps or smtp", s)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Hostname() == "" {
		return Target{}, fmt.Errorf("submit: upstream URL %q: want smtps://host[:port] or smtp://host[:port]", s)
	}
	t.Host = u.Hostname()
	if p := u.Port(); p != "" {
		port = p
	}
	t.Addr = net.JoinHostPort(t.Host, port)
	return t, nil
}

// ErrPlaintextRefused: smtp:// to a host that is not on loopback and offers no STARTTLS.
var ErrPlaintextRefused = errors.New("submit: upstream offers no STARTTLS and is not on loopback; refusing to send the password in clear")

// isLoopback reports whether host is "localhost" or a loopback IP address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsConfig builds the TLS configuration for host as the IMAP side does (backend.ClientTLS): system roots plus
// Options.CAFile, TLS 1.2 at least, the host name verified.
func (o *Options) tlsConfig(host string) (*tls.Config, error) {
	return backend.ClientTLS(o.TLSConfig, host, o.CAFile)
}

// dial connects to the submission upstream: implicit TLS, or STARTTLS when the server offers it; plaintext only
// to a loopback host or with Options.AllowPlaintext.
func (o *Options) dial() (*smtp.Client, error) {
	t, err := ParseURL(o.Upstream)
	if err != nil {
		return nil, err
	}
	tcfg, err := o.tlsConfig(t.Host)
	if err != nil {
		return nil, err
	}
	timeout := o.DialTimeout
	if timeout == 0 {
		timeout = defaultDialTimeout
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.Dial("tcp", t.Addr)
	if err != nil {
		return nil, fmt.Errorf("submit: connect %s: %w", t.Addr, err)
	}
	var c *smtp.Client
	if t.Implicit {
		tc := tls.Client(conn, tcfg)
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("submit: TLS with %s: %w", t.Addr, err)
		}
		tc.SetDeadline(time.Time{})
		c = smtp.NewClient(tc)
		c.CommandTimeout = timeout
		if err := c.Hello(o.domain()); err != nil {
			c.Close()
			return nil, fmt.Errorf("submit: greeting from %s: %w", t.Addr, err)
		}
	} else {
		c = smtp.NewClient(conn)
		c.CommandTimeout = timeout
		if err := c.Hello(o.domain()); err != nil {
			c.Close()
			return nil, fmt.Errorf("submit: greeting from %s: %w", t.Addr, err)
		}
		if ok, _ := c.Extension("STARTTLS"); ok {
			// go-smtp's STARTTLS is only reachable through NewClientStartTLS on a fresh connection.
			c.Close()
			if conn, err = d.Dial("tcp", t.Addr); err != nil {
				return nil, fmt.Errorf("submit: connect %s: %w", t.Addr, err)
			}
			if c, err = smtp.NewClientStartTLS(conn, tcfg); err != nil {
				conn.Close()
				return nil, fmt.Errorf("submit: STARTTLS with %s: %w", t.Addr, err)
			}
		} else if !isLoopback(t.Host) && !o.AllowPlaintext {
			c.Close()
			return nil, ErrPlaintextRefused
		}
	}
	c.CommandTimeout = commandTimeout
	c.SubmissionTimeout = submissionTimeout
	return c, nil
}

// Probe checks that the submission upstream can be reached: TCP, TLS or STARTTLS, greeting, EHLO, and that it
// offers AUTH PLAIN or LOGIN. It is `doctor`'s check.
func Probe(o Options) error {
	c, err := o.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if !c.SupportsAuth("PLAIN") && !c.SupportsAuth("LOGIN") {
		return errors.New("submit: upstream offers neither AUTH PLAIN nor AUTH LOGIN")
	}
	return c.Quit()
}

// Timeouts of the upstream client (RFC 5321 section 4.5.3.2 suggests 5 minutes for most replies and 10 minutes
// after the final dot).
const (
	defaultDialTimeout = 30 * time.Second
	commandTimeout     = 5 * time.Minute
	submissionTimeout  = 10 * time.Minute
)
