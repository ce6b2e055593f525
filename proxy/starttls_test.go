package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/proxy"
	"github.com/smimeproxy/smimeproxy/tlscert"
)

// startTLSProxy serves a proxy for the upstream URL that offers STARTTLS with a generated certificate; it
// returns the address and a client TLS configuration that trusts exactly that certificate.
func startTLSProxy(t *testing.T, url, caFile string, offer bool) (string, *tls.Config) {
	t.Helper()
	cert, err := tlscert.Generate(tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts := proxy.Options{
		Upstream: backend.Options{URL: url, CAFile: caFile},
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	}
	if offer {
		opts.StartTLS = tlscert.ServerConfig(cert)
	}
	srv, err := proxy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

// lineConn is a raw IMAP client connection that can switch to TLS.
type lineConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialLine(t *testing.T, addr string) *lineConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &lineConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (l *lineConn) line() string {
	l.t.Helper()
	s, err := l.r.ReadString('\n')
	if err != nil {
		l.t.Fatalf("read: %v (after %q)", err, s)
	}
	return s
}

func (l *lineConn) send(s string) {
	l.t.Helper()
	if _, err := io.WriteString(l.c, s); err != nil {
		l.t.Fatal(err)
	}
}

// do sends a command and returns every line up to and including its tagged response.
func (l *lineConn) do(tag, cmd string) []string {
	l.t.Helper()
	l.send(tag + " " + cmd + "\r\n")
	var out []string
	for {
		s := l.line()
		out = append(out, s)
		if strings.HasPrefix(s, tag+" ") {
			return out
		}
	}
}

func (l *lineConn) upgrade(conf *tls.Config) {
	l.t.Helper()
	if l.r.Buffered() > 0 {
		l.t.Fatalf("%d bytes from the server before the handshake", l.r.Buffered())
	}
	tc := tls.Client(l.c, conf)
	if err := tc.Handshake(); err != nil {
		l.t.Fatalf("TLS handshake after STARTTLS: %v", err)
	}
	l.c, l.r = tc, bufio.NewReader(tc)
}

// capsOf returns the capability list of a CAPABILITY response or [CAPABILITY ...] code in lines.
func capsOf(lines []string) string {
	for _, s := range lines {
		if i := strings.Index(s, "[CAPABILITY "); i >= 0 {
			return s[i+1 : i+strings.Index(s[i:], "]")]
		}
		if strings.HasPrefix(s, "* CAPABILITY ") {
			return strings.TrimSpace(s[2:])
		}
	}
	return ""
}

func hasCap(list, c string) bool {
	for _, f := range strings.Fields(list) {
		if strings.EqualFold(f, c) {
			return true
		}
	}
	return false
}

// TestStartTLS: with Options.StartTLS the proxy offers STARTTLS before login (greeting and CAPABILITY, in
// Dovecot's own place for it, no LOGINDISABLED), answers it itself, and relays the session over TLS; the
// upgraded connection lists no STARTTLS, a second STARTTLS and one after login are BAD.
func TestStartTLS(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	seed(t, d, "alice")
	addr, conf := startTLSProxy(t, "imap://"+d.Addr(), d.CAFile(), true)

	l := dialLine(t, addr)
	greeting := l.line()
	if caps := capsOf([]string{greeting}); !hasCap(caps, "STARTTLS") || hasCap(caps, "LOGINDISABLED") {
		t.Errorf("greeting %q: want STARTTLS, no LOGINDISABLED", greeting)
	}
	pre := capsOf(l.do("a", "CAPABILITY"))
	// The list reads as Dovecot's own on a connection where it offers STARTTLS.
	dl := dialLine(t, d.Addr())
	dl.line()
	if direct := capsOf(dl.do("a", "CAPABILITY")); pre != direct {
		t.Errorf("pre-login CAPABILITY through the proxy\n %s\nDovecot's\n %s", pre, direct)
	}
	if r := l.do("b", "STARTTLS"); !strings.HasPrefix(r[len(r)-1], "b OK") {
		t.Fatalf("STARTTLS: %q", r)
	}
	l.upgrade(conf)
	post := capsOf(l.do("c", "CAPABILITY"))
	if hasCap(post, "STARTTLS") || !hasCap(post, "AUTH=PLAIN") || !hasCap(post, "IMAP4rev1") {
		t.Errorf("CAPABILITY after STARTTLS: %s", post)
	}
	if r := l.do("d", "STARTTLS"); !strings.HasPrefix(r[len(r)-1], "d BAD") {
		t.Errorf("second STARTTLS: %q", r)
	}
	r := l.do("e", "LOGIN alice alice-pw")
	if !strings.HasPrefix(r[len(r)-1], "e OK") || hasCap(capsOf(r), "STARTTLS") {
		t.Fatalf("LOGIN over TLS: %q", r)
	}
	if r := l.do("f", "STARTTLS"); !strings.HasPrefix(r[len(r)-1], "f BAD") {
		t.Errorf("STARTTLS after login: %q", r)
	}
	if r := l.do("g", "CAPABILITY"); hasCap(capsOf(r), "STARTTLS") {
		t.Errorf("CAPABILITY after login: %q", r)
	}

	// Plaintext LOGIN without STARTTLS keeps working on loopback; after login STARTTLS is not offered.
	p := dialLine(t, addr)
	p.line()
	r = p.do("a", "LOGIN alice alice-pw")
	if !strings.HasPrefix(r[len(r)-1], "a OK") || hasCap(capsOf(r), "STARTTLS") {
		t.Fatalf("plaintext LOGIN: %q", r)
	}
	if r := p.do("b", "CAPABILITY"); hasCap(capsOf(r), "STARTTLS") {
		t.Errorf("CAPABILITY after plaintext login: %q", r)
	}
	if r := p.do("c", "STARTTLS"); !strings.HasPrefix(r[len(r)-1], "c BAD") {
		t.Errorf("STARTTLS after plaintext login: %q", r)
	}

	// Without Options.StartTLS nothing changes: not offered, refused.
	addr2, _ := startTLSProxy(t, "imap://"+d.Addr(), d.CAFile(), false)
	n := dialLine(t, addr2)
	if g := n.line(); hasCap(capsOf([]string{g}), "STARTTLS") {
		t.Errorf("greeting without StartTLS: %q", g)
	}
	if r := n.do("a", "STARTTLS"); !strings.HasPrefix(r[len(r)-1], "a BAD") {
		t.Errorf("STARTTLS not offered: %q", r)
	}
}

// TestStartTLSInjection: commands pipelined in clear behind STARTTLS (CVE-2011-0411 class) are discarded,
// never relayed: a LOGIN and a CAPABILITY sent in the same packet as STARTTLS get no response and log nobody
// in; plaintext where the TLS handshake should be ends the connection.
func TestStartTLSInjection(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	addr, conf := startTLSProxy(t, "imap://"+d.Addr(), d.CAFile(), true)

	l := dialLine(t, addr)
	l.line()
	l.send("a STARTTLS\r\nb LOGIN alice alice-pw\r\nx CAPABILITY\r\n")
	if s := l.line(); !strings.HasPrefix(s, "a OK") {
		t.Fatalf("STARTTLS: %q", s)
	}
	l.upgrade(conf)
	r := l.do("c", "CAPABILITY")
	for _, s := range r {
		if strings.HasPrefix(s, "b ") || strings.HasPrefix(s, "x ") {
			t.Errorf("a command pipelined in clear behind STARTTLS was answered: %q", s)
		}
	}
	if c := capsOf(r); !hasCap(c, "AUTH=PLAIN") {
		t.Errorf("after the injected LOGIN the session is not in the not-authenticated state: %s", c)
	}
	if r := l.do("e", "SELECT INBOX"); !strings.HasPrefix(r[len(r)-1], "e BAD") && !strings.HasPrefix(r[len(r)-1], "e NO") {
		t.Errorf("SELECT without login after an injected LOGIN: %q", r)
	}

	// Plaintext instead of a ClientHello: the handshake fails and the connection ends, nothing is relayed.
	g := dialLine(t, addr)
	g.line()
	g.send("a STARTTLS\r\n")
	if s := g.line(); !strings.HasPrefix(s, "a OK") {
		t.Fatalf("STARTTLS: %q", s)
	}
	g.send("b LOGIN alice alice-pw\r\n")
	rest, err := io.ReadAll(g.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection stayed open after plaintext where the TLS handshake belongs")
	}
	if bytes.Contains(rest, []byte("b OK")) || bytes.Contains(rest, []byte("b NO")) {
		t.Errorf("plaintext after STARTTLS was relayed: %q", rest)
	}
}

// TestStartTLSSession: a go-imap client that insists on STARTTLS reads through the proxy what it reads from
// Dovecot, including the 4 MB message (the relay's streaming copy, over the upgraded connection), with the
// upstream leg both TLS (STARTTLS to Dovecot) and plain TCP (the splice path).
func TestStartTLSSession(t *testing.T) {
	for _, upTLS := range []bool{true, false} {
		d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: !upTLS})
		seed(t, d, "alice")
		caFile := ""
		if upTLS {
			caFile = d.CAFile()
		}
		addr, conf := startTLSProxy(t, "imap://"+d.Addr(), caFile, true)
		c, err := imapclient.DialStartTLS(addr, &imapclient.Options{TLSConfig: conf})
		if err != nil {
			t.Fatalf("DialStartTLS (upstream TLS %v): %v", upTLS, err)
		}
		if err := c.Login("alice", "alice-pw").Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		direct := dial(t, d.Addr(), "alice", "alice-pw", nil)
		if _, err := direct.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		items := &imap.FetchOptions{UID: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}
		got, err := c.Fetch(imap.SeqSetNum(1, 2, 3, 4), items).Collect()
		if err != nil {
			t.Fatal(err)
		}
		want, err := direct.Fetch(imap.SeqSetNum(1, 2, 3, 4), items).Collect()
		if err != nil {
			t.Fatal(err)
		}
		if g, w := dump(t, got), dump(t, want); g != w || len(w) < 4<<20 {
			t.Errorf("upstream TLS %v: FETCH over STARTTLS differs from Dovecot's (%d vs %d bytes)", upTLS, len(g), len(w))
		}
		c.Logout().Wait()
		c.Close()
	}
}
