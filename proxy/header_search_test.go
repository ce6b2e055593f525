package proxy_test

import (
	"crypto/x509"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// hdrSearchSeed is the mail of TestSearchHeaderKeysServed: RFC 9788 header-protected messages whose served
// From, To, Cc and Subject are the inner ones (the stored outer Subject is "[...]"), an ordinary encrypted
// one, plain ones, a plain one with a forged status field, one encrypted to someone else, and address forms
// that Dovecot writes back differently from how they are stored.
func hdrSearchSeed(t *testing.T, own, other *x509.Certificate) [][]byte {
	t.Helper()
	enc := func(m []byte, c *x509.Certificate) []byte {
		out, err := decrypt.EncryptToSelf(m, []*x509.Certificate{c})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	const date = "Date: Mon, 02 Mar 2026 10:00:00 +0000"
	return [][]byte{
		// 1: hp="cipher" with HP-Outer: the outer header holds only the recorded From and Subject.
		enc(msg([]string{`Content-Type: text/plain; charset=utf-8; hp="cipher"`, `From: "Alice Example" <alice@inner.example>`,
			"To: Bob <bob@example.org>, Carol <carol@example.org>", "Cc: team: dan@example.org, erin@example.org;",
			"Subject: Quarterly kumquat report =?UTF-8?Q?Caf=C3=A9_=C3=96lberg?=", date, "Message-ID: <hp1@example.org>",
			"X-Project: zebra-crossing", "HP-Outer: From: Relay Desk <desk@relay.example>", "HP-Outer: Subject: [...]"},
			"first protected body\n"), own),
		// 2: hp="cipher" without HP-Outer: From and Date outside, Subject "[...]".
		enc(msg([]string{`Content-Type: text/plain; charset=utf-8; hp="cipher"`, "From: alice@inner.example (Alice Comment)",
			"To: dave@example.org", "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n =?UTF-8?Q?_aus_K=C3=B6ln?= kumquat", date,
			"Message-ID: <hp2@example.org>"}, "second protected body\n"), own),
		// 3: ordinary encrypted (EncryptToSelf keeps the header fields outside too).
		enc(msg([]string{"Content-Type: text/plain", "From: Bob <bob@example.org>", "Subject:   Weekly   kumquat\r\n\tdigest",
			"Bcc: hidden@example.org", "To: undisclosed-recipients:;", date, "Message-ID: <enc3@example.org>"},
			"ordinary encrypted body\n"), own),
		// 4: plain.
		msg([]string{"From: Alice Example <alice@plain.example>", "To: bob@example.org", "Subject: kumquat plain", date,
			"X-Project: zebra-plain"}, "plain body\n"),
		// 5: plain with a forged status field (served without it).
		msg([]string{"From: alice@forged.example", "X-Smimeproxy-Status: decrypted; forged", "Subject: forged kumquat", date},
			"forged body\n"),
		// 6: encrypted to someone else (served undecryptable, with the stored header).
		enc(msg([]string{"Content-Type: text/plain", "From: Mallory <mallory@example.org>", "Subject: for someone else kumquat",
			date}, "not ours\n"), other),
		// 7: plain, address without a domain.
		msg([]string{"From: alice", "To: \"Odd, Name\" <odd@example.org>", "Subject: no domain", date}, "seven\n"),
	}
}

// hdrSearchCommands are the searches compared with Dovecot's answer over the plain twins.
var hdrSearchCommands = []string{
	"UID SEARCH SUBJECT kumquat",
	"SEARCH SUBJECT kumquat",
	`UID SEARCH SUBJECT "[...]"`,
	`UID SEARCH SUBJECT "KUMQUAT REPORT"`,
	`UID SEARCH SUBJECT "cafe olberg"`,
	`UID SEARCH SUBJECT "cafe"`,
	"UID SEARCH CHARSET UTF-8 SUBJECT {5}\r\ncafé",
	`UID SEARCH SUBJECT "weekly kumquat digest"`,
	"UID SEARCH CHARSET UTF-8 SUBJECT {7}\r\ngrüße",
	`UID SEARCH SUBJECT "grüße aus köln"`,
	"UID SEARCH CHARSET ISO-8859-1 SUBJECT {6}\r\n\xd6lberg",
	"UID SORT (ARRIVAL) ISO-8859-1 OR SUBJECT {4}\r\ncaf\xe9 BODY {4}\r\nbody",
	`UID SEARCH SUBJECT ""`,
	"UID SEARCH FROM alice",
	`UID SEARCH FROM "Alice <"`,
	`UID SEARCH FROM "\"Alice Example\" <alice@inner"`,
	`UID SEARCH FROM "<alice@"`,
	`UID SEARCH FROM "relay.example"`,
	`UID SEARCH FROM "Alice Comment"`,
	`UID SEARCH FROM "(Alice"`,
	`UID SEARCH FROM "Example\" <alice@"`,
	`UID SEARCH FROM "Comment\" <alice@inner"`,
	`UID SEARCH FROM "missing_domain"`,
	`UID SEARCH FROM ""`,
	"UID SEARCH TO bob",
	`UID SEARCH TO "Carol <carol"`,
	`UID SEARCH TO "<dave@example.org>"`,
	`UID SEARCH TO "undisclosed-recipients:;"`,
	`UID SEARCH TO "\"Odd, Name\""`,
	`UID SEARCH CC "team: "`,
	"UID SEARCH CC erin",
	`UID SEARCH CC "example.org>;"`,
	"UID SEARCH BCC hidden",
	"UID SEARCH HEADER Subject kumquat",
	"UID SEARCH HEADER X-Project zebra",
	`UID SEARCH HEADER X-Project ""`,
	`UID SEARCH HEADER To "Bob <bob@example.org>, Carol"`,
	`UID SEARCH HEADER From "Relay Desk"`,
	`UID SEARCH HEADER Message-ID "hp1@"`,
	`UID SEARCH HEADER X-Smimeproxy-Status "decrypted"`,
	"UID SEARCH NOT SUBJECT kumquat",
	"UID SEARCH NOT FROM alice",
	"UID SEARCH OR SUBJECT report FROM mallory",
	"UID SEARCH NOT (FROM alice SUBJECT kumquat)",
	"UID SEARCH OR (TO bob NOT CC erin) HEADER X-Project zebra",
	"UID SEARCH SUBJECT kumquat BODY protected",
	"UID SEARCH SUBJECT kumquat LARGER 10",
	"SEARCH RETURN (MIN MAX COUNT ALL) SUBJECT kumquat",
	"UID SEARCH RETURN (COUNT ALL) FROM alice",
	"UID SEARCH RETURN () NOT TO bob",
	"UID SORT (ARRIVAL) UTF-8 SUBJECT kumquat",
	"SORT (SIZE) UTF-8 FROM alice",
	"UID SORT (REVERSE SIZE) UTF-8 OR TO bob CC team",
	"UID THREAD REFERENCES UTF-8 SUBJECT kumquat",
}

var (
	esearchTagRE  = regexp.MustCompile(`\(TAG "[^"]*"\) `)
	threadNumRE   = regexp.MustCompile(`\d+`)
	bodyLiteralRE = regexp.MustCompile(`BODY\[\] \{(\d+)\}\r\n`)
)

// searchAnswer is the untagged answer to a search command (ESEARCH without its TAG; THREAD as its sorted
// numbers, since the threads are built from the stored headers) and the tagged status word.
func searchAnswer(t *testing.T, cmd, r string) string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(r, "\r\n"), "\r\n") {
		switch {
		case strings.HasPrefix(l, "* THREAD"):
			nums := threadNumRE.FindAllString(l, -1)
			slices.SortFunc(nums, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
			out = append(out, "* THREAD "+strings.Join(nums, " "))
		case strings.HasPrefix(l, "* "):
			out = append(out, esearchTagRE.ReplaceAllString(l, ""))
		case strings.HasPrefix(l, "t"):
			f := strings.Fields(l)
			if len(f) < 2 || f[1] != "OK" {
				t.Errorf("%q: %q", cmd, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestSearchHeaderKeysServed: FROM, TO, CC, BCC, SUBJECT and HEADER through the proxy see the served header (for
// RFC 9788 header-protected mail the inner fields, which the upstream server never sees), and answer exactly
// as Dovecot answers for plain twins of the served copies (same bytes, same internal dates, same order) — alone,
// under NOT and OR, with BODY and LARGER, in SEARCH, UID SEARCH, ESEARCH, SORT and THREAD: by decrypting, from
// the memory cache, and after a restart from the metadata store with no decryption at all.
func TestSearchHeaderKeysServed(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	id := newMetaIdentity(t, "alice")
	other := newMetaIdentity(t, "carol")
	date := time.Date(2026, 3, 1, 8, 30, 0, 0, time.UTC)
	seedMsgs := hdrSearchSeed(t, id.cert, other.cert)
	for i, m := range seedMsgs {
		d.Append("alice", "INBOX", m, nil, date.Add(time.Duration(len(seedMsgs)-i)*time.Hour))
	}
	direct := wireDial(t, d.Addr())
	direct.do("LOGIN alice alice-pw")
	direct.do("EXAMINE INBOX")
	if got := searchUIDs(t, direct.do("UID SEARCH SUBJECT kumquat")); slices.Contains(got, "1") {
		t.Fatalf("the upstream server alone finds the protected subject (%v): the test would not show anything", got)
	}

	// The served copies, stored plain as twins with the same internal dates.
	addr, srv := startProxy(t, d, id.decrypterWith(t, nil, -1, &countMetrics{}))
	c := wireDial(t, addr)
	c.do("LOGIN alice alice-pw")
	c.do("SELECT INBOX")
	for i := range seedMsgs {
		r := c.do(fmt.Sprintf("UID FETCH %d (BODY.PEEK[])", i+1))
		m := bodyLiteralRE.FindStringSubmatchIndex(r)
		if m == nil {
			t.Fatalf("UID FETCH %d: %.300q", i+1, r)
		}
		n, _ := strconv.Atoi(r[m[2]:m[3]])
		served := []byte(r[m[1] : m[1]+n])
		if i == 0 && !strings.Contains(string(served), "Subject: Quarterly kumquat report") {
			t.Fatalf("the protected subject is not served: %q", served)
		}
		d.Append("alice", "Twins", served, nil, date.Add(time.Duration(len(seedMsgs)-i)*time.Hour))
	}
	srv.Close()
	twin := wireDial(t, d.Addr())
	twin.do("LOGIN alice alice-pw")
	twin.do("EXAMINE Twins")
	want := make([]string, len(hdrSearchCommands))
	for i, cmd := range hdrSearchCommands {
		want[i] = searchAnswer(t, cmd, twin.do(cmd))
	}
	if want[0] == searchAnswer(t, hdrSearchCommands[0], direct.do(hdrSearchCommands[0])) {
		t.Fatalf("the upstream server answers %q as over the twins: the test would not show anything", want[0])
	}

	check := func(name, addr string) {
		t.Helper()
		c := wireDial(t, addr)
		c.do("LOGIN alice alice-pw")
		c.do("SELECT INBOX")
		for i, cmd := range hdrSearchCommands {
			if got := searchAnswer(t, cmd, c.do(cmd)); got != want[i] {
				t.Errorf("%s: %q:\n got %q\nwant %q (Dovecot over the twins)", name, cmd, got, want[i])
			}
		}
	}
	// Decrypting (a fresh proxy, nothing cached, no store), then from the memory cache.
	m0 := &countMetrics{}
	addr, srv = startProxy(t, d, id.decrypterWith(t, nil, -1, m0))
	check("decrypting", addr)
	if m0.decrypted.Load() == 0 {
		t.Errorf("the searches decrypted nothing: the served copies were not looked at")
	}
	check("cached", addr)
	srv.Close()

	// With the store: a header sync fills it; after a restart the searches decrypt nothing.
	dir := t.TempDir()
	ms := openMetaStore(t, dir)
	addr, srv = startProxy(t, d, id.decrypterWith(t, ms, -1, &countMetrics{}))
	s := wireDial(t, addr)
	s.do("LOGIN alice alice-pw")
	s.do("SELECT INBOX")
	s.do("UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID)])")
	srv.Close()
	ms.Flush()
	ms.Close()
	ms = openMetaStore(t, dir)
	defer ms.Close()
	m2 := &countMetrics{}
	addr, _ = startProxy(t, d, id.decrypterWith(t, ms, -1, m2))
	check("from the store after a restart", addr)
	if n := m2.decrypted.Load() + m2.undecryptable.Load() + m2.misses.Load(); n != 0 {
		t.Errorf("after the restart the searches decrypted %d messages (%d undecryptable, %d cache lookups); want none",
			m2.decrypted.Load(), m2.undecryptable.Load(), m2.misses.Load())
	}

	// CONTEXT=SEARCH (RFC 5267): a protected message that arrives later is added to a SUBJECT search kept up to
	// date, as Dovecot adds its plain twin.
	pc, tc := wireDial(t, addr), wireDial(t, d.Addr())
	pc.do("LOGIN alice alice-pw")
	pc.do("SELECT INBOX")
	tc.do("LOGIN alice alice-pw")
	tc.do("SELECT Twins")
	const update = "UID SEARCH RETURN (UPDATE) SUBJECT kumquat"
	if p, w := ctxLines(pc.do(update)), ctxLines(tc.do(update)); p != w {
		t.Errorf("%s:\nproxy: %s\ntwins: %s", update, p, w)
	}
	late, err := decrypt.EncryptToSelf(msg([]string{`Content-Type: text/plain; charset=utf-8; hp="cipher"`,
		"From: alice@inner.example", "Subject: late kumquat memo", "Date: Tue, 03 Mar 2026 10:00:00 +0000"}, "late\n"),
		[]*x509.Certificate{id.cert})
	if err != nil {
		t.Fatal(err)
	}
	uid := d.Append("alice", "INBOX", late, nil, date)
	f := wireDial(t, addr)
	f.do("LOGIN alice alice-pw")
	f.do("EXAMINE INBOX")
	r := f.do(fmt.Sprintf("UID FETCH %d (BODY.PEEK[])", uid))
	m := bodyLiteralRE.FindStringSubmatchIndex(r)
	if m == nil {
		t.Fatalf("UID FETCH %d: %.300q", uid, r)
	}
	n, _ := strconv.Atoi(r[m[2]:m[3]])
	d.Append("alice", "Twins", []byte(r[m[1]:m[1]+n]), nil, date)
	p, w := ctxLines(pc.do("NOOP")), ctxLines(tc.do("NOOP"))
	if p != w {
		t.Errorf("NOOP after a protected message arrived:\nproxy: %s\ntwins: %s", p, w)
	}
	if !strings.Contains(p, fmt.Sprintf("ADDTO (0 %d)", uid)) {
		t.Errorf("the late protected message was not added: %s", p)
	}
}
