package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/proxy"
)

// startProxy serves a proxy for d on a loopback listener and returns its address; it is closed at cleanup.
func startProxy(t testing.TB, d *testenv.Dovecot, rw proxy.Rewriter) (string, *proxy.Server) {
	t.Helper()
	return startProxyAt(t, "imap://"+d.Addr(), d.CAFile(), rw)
}

// startProxyAt serves a proxy for the upstream URL (trusting caFile).
func startProxyAt(t testing.TB, url, caFile string, rw proxy.Rewriter) (string, *proxy.Server) {
	t.Helper()
	lvl := slog.LevelWarn
	if os.Getenv("SMIMEPROXY_TEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	opts := proxy.Options{
		Upstream: backend.Options{URL: url, CAFile: caFile},
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})),
		Rewriter: rw,
	}
	wireHooks(&opts, rw)
	srv, err := proxy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != proxy.ErrServerClosed {
			t.Errorf("Serve() = %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String(), srv
}

// wireHooks sets every helper of proxy.Options (proxy/hooks.go) that rw implements, as cmd/smimeproxy wires a
// decrypt.Decrypter.
func wireHooks(o *proxy.Options, rw proxy.Rewriter) {
	o.CandidateFilter, _ = rw.(proxy.CandidateFilter)
	o.CacheProbe, _ = rw.(proxy.CacheProbe)
	o.HeaderGuard, _ = rw.(proxy.HeaderGuard)
	o.AppendGuard, _ = rw.(proxy.AppendGuard)
	o.TextMatcher, _ = rw.(proxy.TextMatcher)
	o.HeaderMatcher, _ = rw.(proxy.HeaderMatcher)
	o.DerivedCache, _ = rw.(proxy.DerivedCache)
	o.MetaSource, _ = rw.(proxy.MetaSource)
	o.MetaPruner, _ = rw.(proxy.MetaPruner)
	o.IndexStore, _ = rw.(proxy.IndexStore)
	o.StoredText, _ = rw.(proxy.StoredTextMatcher)
}

// dial logs user in at addr (the proxy or Dovecot) and closes the client at cleanup.
func dial(t testing.TB, addr, user, pw string, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, pw).Wait(); err != nil {
		t.Fatalf("login %s at %s: %v", user, addr, err)
	}
	return c
}

// msg builds an RFC 5322 message with CRLF line endings from header lines and a body.
func msg(headers []string, body string) []byte {
	var b bytes.Buffer
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n"))
	return b.Bytes()
}

// corpus is the seeded test mail: latin-1 8bit text, multipart with a binary attachment, encoded-word headers,
// a 4 MB message and a few small ones.
func corpus() [][]byte {
	latin1 := msg([]string{"From: Ren\xe9 <rene@example.org>", "To: alice@example.org", "Subject: latin-1 body",
		"Date: Mon, 02 Mar 2026 10:00:00 +0100", "Message-ID: <l1@example.org>", "MIME-Version: 1.0",
		"Content-Type: text/plain; charset=iso-8859-1", "Content-Transfer-Encoding: 8bit"}, "Caf\xe9 cr\xe8me br\xfbl\xe9e\n")
	att := make([]byte, 3000)
	for i := range att {
		att[i] = byte(i * 7)
	}
	var b64 strings.Builder
	enc := []byte(base64Std(att))
	for len(enc) > 76 {
		b64.Write(enc[:76])
		b64.WriteString("\n")
		enc = enc[76:]
	}
	b64.Write(enc)
	b64.WriteString("\n")
	multi := msg([]string{"From: Bob <bob@example.org>", "To: alice@example.org", "Subject: with attachment",
		"Date: Tue, 03 Mar 2026 11:00:00 +0000", "Message-ID: <m1@example.org>", "MIME-Version: 1.0",
		`Content-Type: multipart/mixed; boundary="b1"`},
		"preamble\n--b1\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nH=C3=A9llo =\nworld\n"+
			"--b1\nContent-Type: application/octet-stream; name=\"data.bin\"\nContent-Disposition: attachment; filename=\"data.bin\"\n"+
			"Content-Transfer-Encoding: base64\n\n"+b64.String()+"--b1--\n")
	encw := msg([]string{"From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.org>", "To: =?UTF-8?B?w4Fsdm8=?= <alvo@example.org>",
		"Subject: =?UTF-8?B?4pyTIMOcYmVyIGVuY29kZWQ=?= words", "Date: Wed, 04 Mar 2026 12:00:00 -0500",
		"Message-ID: <e1@example.org>", "In-Reply-To: <l1@example.org>"}, "ascii body\n")
	var big strings.Builder
	for big.Len() < 4<<20 {
		fmt.Fprintf(&big, "line %07d of a large plain message, padded to be long enough ..........\n", big.Len())
	}
	large := msg([]string{"From: big@example.org", "To: alice@example.org", "Subject: 4 MB", "Date: Thu, 05 Mar 2026 13:00:00 +0000",
		"Message-ID: <big@example.org>"}, big.String())
	out := [][]byte{latin1, multi, encw, large}
	for i := 0; i < 4; i++ {
		out = append(out, msg([]string{fmt.Sprintf("From: n%d@example.org", i), "To: alice@example.org",
			fmt.Sprintf("Subject: note %d", i), fmt.Sprintf("Date: Fri, %02d Mar 2026 09:00:00 +0000", 6+i),
			fmt.Sprintf("Message-ID: <n%d@example.org>", i)}, fmt.Sprintf("note number %d\n", i)))
	}
	return out
}

// seed appends the corpus to user's INBOX with distinct flags and dates.
func seed(t testing.TB, d *testenv.Dovecot, user string) {
	t.Helper()
	flagSets := [][]imap.Flag{{imap.FlagSeen}, nil, {imap.FlagFlagged, "$Label1"}, {imap.FlagSeen, imap.FlagAnswered}, nil, {imap.FlagDraft}, {imap.FlagSeen}, nil}
	for i, m := range corpus() {
		d.Append(user, "INBOX", m, flagSets[i%len(flagSets)], time.Date(2026, 3, 1+i, 8, 30, 0, 0, time.FixedZone("", 3600)))
	}
}

// dump renders fetched messages deterministically: flags sorted without \Recent (which differs per session,
// RFC 9051 section 2.3.2), everything else as JSON.
func dump(t testing.TB, msgs []*imapclient.FetchMessageBuffer) string {
	t.Helper()
	var b strings.Builder
	for _, m := range msgs {
		var flags []string
		for _, f := range m.Flags {
			if f != "\\Recent" {
				flags = append(flags, string(f))
			}
		}
		slices.Sort(flags)
		m.Flags = nil
		// Header field names in a section echo are case-insensitive (RFC 9051 section 6.4.5); Dovecot
		// upper-cases them, go-imap echoes the client's spelling.
		for i := range m.BodySection {
			sec := *m.BodySection[i].Section
			sec.HeaderFields = upper(sec.HeaderFields)
			sec.HeaderFieldsNot = upper(sec.HeaderFieldsNot)
			m.BodySection[i].Section = &sec
		}
		j, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%v %s\n", flags, j)
	}
	return b.String()
}

func upper(l []string) []string {
	var out []string
	for _, s := range l {
		out = append(out, strings.ToUpper(s))
	}
	return out
}
