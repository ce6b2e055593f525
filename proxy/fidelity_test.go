package proxy_test

import (
	"bufio"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/proxy"
)

// wireConn is an IMAP client that reads whole responses (literals included) and returns them as the server
// sent them, to compare transcripts byte for byte.
type wireConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
	n  int
}

func wireDial(t *testing.T, addr string) *wireConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := &wireConn{t: t, c: c, br: bufio.NewReader(c)}
	w.readResponse() // greeting
	return w
}

var literalRE = regexp.MustCompile(`~?\{(\d+)\+?\}\r\n$`)

// readResponse reads one response (a line and its literals).
func (w *wireConn) readResponse() string {
	w.t.Helper()
	w.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var b strings.Builder
	for {
		line, err := w.br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			w.t.Fatalf("read: %v; got %q", err, b.String())
		}
		m := literalRE.FindStringSubmatch(line)
		if m == nil {
			return b.String()
		}
		n, _ := strconv.Atoi(m[1])
		buf := make([]byte, n)
		if _, err := io.ReadFull(w.br, buf); err != nil {
			w.t.Fatalf("read literal: %v", err)
		}
		b.Write(buf)
	}
}

// do sends one command (its tag is generated; "+" continuation requests are answered by sending the text
// after each "{n}" line in parts) and returns every response up to and including the tagged one.
func (w *wireConn) do(cmd string) string {
	w.t.Helper()
	w.n++
	tag := fmt.Sprintf("t%d", w.n)
	w.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	parts := strings.SplitAfter(cmd, "}\r\n")
	var out strings.Builder
	for i, p := range parts {
		if i == 0 {
			p = tag + " " + p
		}
		if i == len(parts)-1 {
			p += "\r\n"
		}
		if _, err := io.WriteString(w.c, p); err != nil {
			w.t.Fatal(err)
		}
		if i < len(parts)-1 && !strings.HasSuffix(p, "+}\r\n") {
			for {
				r := w.readResponse()
				if strings.HasPrefix(r, "+") {
					break
				}
				out.WriteString(r)
				if strings.HasPrefix(r, tag+" ") {
					return out.String()
				}
			}
		}
	}
	for {
		r := w.readResponse()
		out.WriteString(r)
		if strings.HasPrefix(r, tag+" ") {
			return out.String()
		}
	}
}

// send writes raw bytes.
func (w *wireConn) send(s string) {
	w.t.Helper()
	if _, err := io.WriteString(w.c, s); err != nil {
		w.t.Fatal(err)
	}
}

// normalize removes what legitimately differs between two Dovecot instances: UIDVALIDITY values and the
// timings Dovecot puts in its tagged responses.
var (
	uidvalidityRE = regexp.MustCompile(`(?i)(UIDVALIDITY|COPYUID|APPENDUID) \d+`)
	timingRE      = regexp.MustCompile(` \([0-9.]+( \+ [0-9.]+)* secs\)\.`)
)

func normalize(s string) string {
	return timingRE.ReplaceAllString(uidvalidityRE.ReplaceAllString(s, "$1 V"), ".")
}

// proxyRemovedCaps are the capabilities the proxy does not offer with decryption on (proxy/caps.go).
var proxyRemovedCaps = regexp.MustCompile(` (STARTTLS|URL-PARTIAL|SNIPPET=FUZZY|PREVIEW=FUZZY|PREVIEW|COMPRESS=DEFLATE)\b`)

// fidelityWorld is one Dovecot seeded with the same mail as its twin, a client connection (through the
// proxy or direct) and another session connected directly (a phone beside the desktop).
type fidelityWorld struct {
	client, other *wireConn
}

// fidelityStep is one command of the client ("c") or of the other session ("o"); raw steps are sent as they
// are (for IDLE's DONE).
type fidelityStep struct {
	who, cmd string
}

// fidelitySeed is the plain mail both Dovecots hold: varied structure, flags from the empty set on.
func fidelitySeed(t *testing.T, d *testenv.Dovecot) {
	t.Helper()
	date := time.Date(2026, 3, 1, 8, 30, 0, 0, time.FixedZone("", 3600))
	msgs := corpus()
	flags := [][]imap.Flag{nil, {imap.FlagSeen}, nil, {imap.FlagFlagged}, nil, nil, {imap.FlagSeen}, nil}
	for i, m := range msgs {
		if i == 3 { // the 4 MB message: covered by the benchmarks
			continue
		}
		d.Append("alice", "INBOX", m, flags[i], date.Add(time.Duration(i)*time.Hour))
	}
	route := msg([]string{"From: <@relay.example:joe@example.org>", "To: Group: a@example.org, b@example.org;",
		"Subject: source route", "Message-ID: <route@example.org>"}, "routed\n")
	d.Append("alice", "INBOX", route, nil, date)
	nul := msg([]string{"From: a@example.org", "Subject: binary", "MIME-Version: 1.0",
		"Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64"}, "AAECAwBhYmMA\n")
	d.Append("alice", "INBOX", nul, nil, date)
}

// TestRelayFidelity runs the same IMAP session against Dovecot directly and through the proxy (decryption on,
// a key for the user, plain mail) while another session changes the mailbox directly, and requires the two
// transcripts to be equal byte for byte (UIDVALIDITY values aside). The steps cover each fidelity failure the
// go-imap based proxy had: empty flag lists, lone "*", LIST "" "", invalid modified UTF-7, unterminated
// quoted strings, RECENT, updates from other sessions on the first NOOP, EXPUNGE/EXISTS order, fetching a
// message another session expunged, BINARY partials, literal8 APPEND with NUL, ENVELOPE source routes, ID,
// SORT/THREAD/ESEARCH/CONDSTORE/QRESYNC, UID FETCH n:* past the end in and out of IDLE.
func TestRelayFidelity(t *testing.T) {
	steps := []fidelityStep{
		{"c", "LOGIN alice alice-pw"},
		{"o", "LOGIN alice alice-pw"},
		{"c", `LIST "" ""`},
		{"c", `LIST "" "&foo*"`},
		{"c", `LIST "" "*"`},
		{"c", `STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)`},
		{"c", "SELECT INBOX"},
		{"c", "FETCH 1:* (FLAGS)"},
		{"c", "FETCH * UID"},
		{"c", "UID FETCH 5:* UID"},
		{"c", "FETCH 1,* UID"},
		{"c", "UID FETCH 100:* (FLAGS)"},
		// Thunderbird's poll past the last UID, then IDLE: nothing may arrive after "+ idling".
		{"c", "IDLE"},
		{"c", "DONE0"},
		{"c", "SEARCH RECENT"},
		{"c", "SEARCH NEW"},
		{"c", "FETCH 1 (BODY[HEADER])"},
		{"c", "STORE 2 FLAGS ()"},
		{"c", "STORE 2 +FLAGS (\\Answered)"},
		{"c", "FETCH 1:* (UID RFC822.SIZE ENVELOPE)"},
		{"c", "FETCH 1:* (BODYSTRUCTURE)"},
		{"c", "FETCH 2 (BINARY.PEEK[2]<10.20> BINARY.SIZE[2] BODY.PEEK[1]<3.7>)"},
		{"c", "FETCH 9 (BINARY.PEEK[1] BINARY.PEEK[])"},
		{"c", "ID NIL"},
		{"c", "ENABLE CONDSTORE"},
		{"c", "UID SORT (SUBJECT) UTF-8 ALL"},
		{"c", "UID THREAD REFERENCES UTF-8 ALL"},
		{"c", "SEARCH RETURN (MIN MAX COUNT) BODY \"number\""},
		{"c", "UID SEARCH TEXT \"world\""},
		{"c", "FETCH 1:3 (FLAGS MODSEQ)"},
		// Another session changes the mailbox; the first NOOP shows it all.
		{"o", "SELECT INBOX"},
		{"o", "STORE 3 +FLAGS (\\Flagged)"},
		{"o", "APPEND INBOX (\\Seen) {61}\r\nFrom: o@example.org\r\nSubject: from the phone\r\n\r\nhello phone\r\n"},
		{"o", "STORE 1 +FLAGS (\\Deleted)"},
		{"o", "EXPUNGE"},
		{"c", "NOOP"},
		{"c", "FETCH 1:* (UID FLAGS)"},
		// A message expunged by the other session, fetched before this session has heard of it.
		{"o", "STORE 2 +FLAGS (\\Deleted)"},
		{"o", "EXPUNGE"},
		{"c", "FETCH 2 (UID BODY.PEEK[])"},
		{"c", "NOOP"},
		// IDLE while the other session appends.
		{"c", "IDLE"},
		{"o", "APPEND INBOX {43}\r\nFrom: o@example.org\r\nSubject: idle\r\n\r\nnew\r\n"},
		{"c", "DONE"},
		{"c", "UID FETCH 100:* (FLAGS)"},
		{"c", "APPEND INBOX ~{16}\r\nSubject: \x00\r\n\r\n\x00\x01"},
		{"c", "APPEND INBOX (\\Seen) {16}\r\nSubject: x\r\n\r\nab"},
		{"c", "FETCH 1:* (UID FLAGS RFC822.SIZE)"},
		{"c", "EXAMINE INBOX"},
		{"c", "LOGIN alice \"unterminated"},
		{"c", "LOGOUT"},
	}

	run := func(t *testing.T, viaProxy bool) []string {
		d := testenv.StartDovecot(t, testenv.DovecotOptions{})
		fidelitySeed(t, d)
		addr := d.Addr()
		if viaProxy {
			rw, _ := smimeRewriter(t, "alice")
			addr, _ = startProxy(t, d, rw)
		}
		w := fidelityWorld{client: wireDial(t, addr), other: wireDial(t, d.Addr())}
		var out []string
		for _, s := range steps {
			conn := w.client
			if s.who == "o" {
				conn = w.other
			}
			switch {
			case s.cmd == "IDLE":
				conn.n++
				conn.send(fmt.Sprintf("t%d IDLE\r\n", conn.n))
				out = append(out, conn.readResponse())
			case s.cmd == "DONE0" || s.cmd == "DONE":
				if s.cmd == "DONE" {
					// The other session's change arrives while idling.
					out = append(out, conn.readResponse())
				}
				conn.send("DONE\r\n")
				tag := fmt.Sprintf("t%d ", conn.n)
				for {
					r := conn.readResponse()
					out = append(out, r)
					if strings.HasPrefix(r, tag) {
						break
					}
				}
			default:
				res := conn.do(s.cmd)
				if s.who == "c" {
					out = append(out, s.cmd+" => "+res)
				}
			}
		}
		return out
	}
	direct := run(t, false)
	proxied := run(t, true)
	if len(direct) != len(proxied) {
		t.Fatalf("%d responses direct, %d through the proxy", len(direct), len(proxied))
	}
	for i := range direct {
		a, b := normalize(direct[i]), normalize(proxied[i])
		a = proxyRemovedCaps.ReplaceAllString(a, "")
		if a != b {
			t.Errorf("step %d differs:\ndirect: %q\nproxy:  %q", i, a, b)
		}
	}
}

// TestRelayDecryptsInOrder: with encrypted messages between plain ones, FETCH responses come in sequence
// order, the encrypted ones decrypted, the plain ones byte for byte as Dovecot sends them, and the non-body
// items (UID, FLAGS, MODSEQ) of an encrypted message as the server sent them.
func TestRelayDecryptsInOrder(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	rw, certPEM := smimeRewriter(t, "alice")
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	date := time.Date(2026, 3, 1, 8, 30, 0, 0, time.UTC)
	for i := range 6 {
		m := msg([]string{"From: a@example.org", fmt.Sprintf("Subject: message %d", i), "MIME-Version: 1.0",
			"Content-Type: text/plain"}, fmt.Sprintf("secret text %d\n", i))
		if i%2 == 1 {
			if m, err = decrypt.EncryptToSelf(m, []*x509.Certificate{cert}); err != nil {
				t.Fatal(err)
			}
		}
		d.Append("alice", "INBOX", m, nil, date)
	}
	addr, _ := startProxy(t, d, rw)
	c := wireDial(t, addr)
	c.do("LOGIN alice alice-pw")
	c.do("SELECT INBOX")
	direct := wireDial(t, d.Addr())
	direct.do("LOGIN alice alice-pw")
	direct.do("EXAMINE INBOX")
	c.do("ENABLE CONDSTORE")
	res := c.do("FETCH 1:6 (FLAGS BODY[TEXT] RFC822.SIZE MODSEQ)")
	lines := strings.SplitAfter(res, ")\r\n")
	for i := range 6 {
		want := fmt.Sprintf("* %d FETCH (", i+1)
		if i >= len(lines) || !strings.HasPrefix(lines[i], want) {
			t.Fatalf("response %d does not start with %q:\n%s", i, want, res)
		}
		if !strings.Contains(lines[i], fmt.Sprintf("secret text %d", i)) {
			t.Errorf("response %d: no plaintext: %q", i, lines[i])
		}
		if !strings.Contains(lines[i], "FLAGS (\\Seen") || !strings.Contains(lines[i], "MODSEQ (") {
			t.Errorf("response %d: FLAGS or MODSEQ missing: %q", i, lines[i])
		}
		if i%2 == 0 {
			d := direct.do(fmt.Sprintf("FETCH %d (BODY.PEEK[TEXT] RFC822.SIZE)", i+1))
			if !strings.Contains(lines[i], "RFC822.SIZE "+regexp.MustCompile(`RFC822.SIZE (\d+)`).FindStringSubmatch(d)[1]) {
				t.Errorf("plain message %d: size differs from Dovecot's: %q vs %q", i+1, lines[i], d)
			}
		}
	}
	// \Seen was set upstream by the non-PEEK fetch (the server's own doing).
	if r := direct.do("FETCH 1:6 (FLAGS)"); strings.Count(r, "\\Seen") != 6 {
		t.Errorf("\\Seen upstream after BODY[TEXT]: %q", r)
	}
}

// TestRelaySyncLiterals: against a server without LITERAL+ the relay sends literals synchronizing, waiting for
// the server's continuation request, while the client uses its own (answered by the relay); a literal the
// server refuses ends the command with the server's answer.
func TestRelaySyncLiterals(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{Extra: "imap_capability = IMAP4rev1 IDLE UIDPLUS\n"})
	rw, _ := smimeRewriter(t, "alice")
	addr, _ := startProxy(t, d, rw)
	c := wireDial(t, addr)
	if r := c.do("LOGIN {5}\r\nalice {8}\r\nalice-pw"); !strings.Contains(r, "OK") {
		t.Fatalf("LOGIN with literals: %q", r)
	}
	if r := c.do("CAPABILITY"); strings.Contains(r, "LITERAL+") {
		t.Fatalf("server still offers LITERAL+: %q", r)
	}
	m := "Subject: sync\r\n\r\nbody\r\n"
	if r := c.do(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(m), m)); !strings.Contains(r, "OK [APPENDUID") {
		t.Fatalf("APPEND: %q", r)
	}
	if r := c.do(fmt.Sprintf("APPEND NoSuchBox {%d}\r\n%s", len(m), m)); !strings.Contains(r, "NO [TRYCREATE]") {
		t.Fatalf("APPEND to a missing mailbox: %q", r)
	}
	c.do("SELECT INBOX")
	if r := c.do("UID SEARCH SUBJECT {4}\r\nsync"); !strings.Contains(r, "* SEARCH 1") {
		t.Fatalf("SEARCH with a literal: %q", r)
	}
	if r := c.do("FETCH 1 (BODY.PEEK[TEXT])"); !strings.Contains(r, "body") {
		t.Fatalf("FETCH: %q", r)
	}
}

// TestRelayAuthenticate: AUTHENTICATE is relayed challenge by challenge (PLAIN without and with an initial
// response, LOGIN), and what the client sent logs the side connections in: an encrypted message is served
// decrypted after each. A mechanism that cannot be replayed is refused by the proxy.
func TestRelayAuthenticate(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{Extra: "auth_mechanisms = plain login\n"})
	rw, certPEM := smimeRewriter(t, "alice")
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := decrypt.EncryptToSelf(msg([]string{"From: a@example.org", "Subject: s", "Content-Type: text/plain"}, "auth secret\n"), []*x509.Certificate{cert})
	if err != nil {
		t.Fatal(err)
	}
	d.Append("alice", "INBOX", enc, nil, time.Now())
	addr, _ := startProxy(t, d, rw)
	b64 := func(s string) string { return base64Std([]byte(s)) }
	for _, tc := range []struct {
		name  string
		steps []string // the command, then the client's answers to each "+"
	}{
		{"PLAIN", []string{"AUTHENTICATE PLAIN", b64("\x00alice\x00alice-pw")}},
		{"PLAIN SASL-IR", []string{"AUTHENTICATE PLAIN " + b64("\x00alice\x00alice-pw")}},
		{"LOGIN", []string{"AUTHENTICATE LOGIN", b64("alice"), b64("alice-pw")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := wireDial(t, addr)
			c.n++
			tag := fmt.Sprintf("t%d", c.n)
			c.send(tag + " " + tc.steps[0] + "\r\n")
			for _, answer := range tc.steps[1:] {
				if r := c.readResponse(); !strings.HasPrefix(r, "+") {
					t.Fatalf("want a continuation request, got %q", r)
				}
				c.send(answer + "\r\n")
			}
			if r := c.readResponse(); !strings.HasPrefix(r, tag+" OK") {
				t.Fatalf("AUTHENTICATE: %q", r)
			}
			c.do("SELECT INBOX")
			if r := c.do("FETCH 1 (BODY.PEEK[TEXT])"); !strings.Contains(r, "auth secret") {
				t.Errorf("not decrypted after %s: %q", tc.name, r)
			}
		})
	}
	c := wireDial(t, addr)
	if r := c.do("AUTHENTICATE CRAM-MD5"); !strings.Contains(r, "NO [CANNOT]") {
		t.Errorf("CRAM-MD5: %q", r)
	}
}

// TestRelayCachedFetch: a UID FETCH of encrypted messages whose served copies are cached is answered without
// their ciphertext (the upstream gets only the other items) and gives the same bytes as the first fetch; a
// fetch that sets \Seen still goes to the server.
func TestRelayCachedFetch(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	rw, certPEM := smimeRewriter(t, "alice")
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		m, err := decrypt.EncryptToSelf(msg([]string{"From: a@example.org", fmt.Sprintf("Subject: c%d", i), "Content-Type: text/plain"},
			strings.Repeat(fmt.Sprintf("cached secret %d\n", i), 2000)), []*x509.Certificate{cert})
		if err != nil {
			t.Fatal(err)
		}
		d.Append("alice", "INBOX", m, nil, time.Now())
	}
	addr, _ := startProxy(t, d, rw)
	c := wireDial(t, addr)
	c.do("LOGIN alice alice-pw")
	c.do("SELECT INBOX")
	const items = "(UID FLAGS RFC822.SIZE BODY.PEEK[] BODY.PEEK[TEXT]<5.20> ENVELOPE)"
	first := c.do("UID FETCH 1:3 " + items)
	second := c.do("UID FETCH 1:3 " + items)
	strip := func(s string) string { // the untagged responses
		return s[:strings.LastIndex(strings.TrimSuffix(s, "\r\n"), "\r\n")]
	}
	if strip(first) != strip(second) || !strings.Contains(second, "cached secret 2") || strings.Count(second, "* ") != 3 {
		t.Fatalf("second fetch differs from the first:\nfirst:  %.600q\nsecond: %.600q", first, second)
	}
	if !strings.Contains(second, "BODY[TEXT]<5> {20}") {
		t.Errorf("partial item: %.600q", second)
	}
	// \Seen comes from the server: a non-PEEK fetch is not answered from the cache alone.
	r := c.do("UID FETCH 2 (BODY[TEXT])")
	if !strings.Contains(r, "\\Seen") || !strings.Contains(r, "cached secret 1") {
		t.Errorf("non-PEEK fetch: %.300q", r)
	}
}

// TestPreAuthLimits: connections that have not logged in are bounded in number (further ones get BYE at once)
// and in time.
func TestPreAuthLimits(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	srv, err := proxy.New(proxy.Options{Upstream: backend.Options{URL: "imap://" + d.Addr(), CAFile: d.CAFile()},
		MaxPreAuth: 2, PreAuthTimeout: 700 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	a, b := wireDial(t, addr), wireDial(t, addr)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "* BYE [UNAVAILABLE]") {
		t.Errorf("third connection greeted %q, want BYE", line)
	}
	if r := a.do("LOGIN alice alice-pw"); !strings.Contains(r, "OK") {
		t.Fatalf("LOGIN: %q", r)
	}
	// A logged-in connection frees its place.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := bufio.NewReader(c2).ReadString('\n'); !strings.HasPrefix(line, "* OK") {
		t.Errorf("connection after a login greeted %q", line)
	}
	// b never logs in: it is let go.
	if r := b.readResponse(); !strings.HasPrefix(r, "* BYE") {
		t.Errorf("idle connection got %q, want BYE", r)
	}
	if r := a.do("NOOP"); !strings.Contains(r, "OK") {
		t.Errorf("logged-in connection after the timeout: %q", r)
	}
}
