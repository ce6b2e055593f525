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
)

// hdrSearchSeed is the mail of TestSearchHeaderKeysServed: RFC 9788 header-protected messages whose served
// From, To, Cc and Subject are the inner ones (the stored outer Subject is "[...]"), an ordinary encrypted
// one, plain ones, a plain one with a forged status field, one encrypted to someone else, and address forms
// that Dovecot writes back differently from how they are stored.
func hdrSearchSeed(t *testing.T, own, other *x509.Certificate) [][]byte {
	t.Helper()
	enc := func(m []byte, c *x509.Certificate) []byte { return encryptTo(t, m, c) }
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
	date := time.Date(2026, 3, 1, 8, 30, 0, 0, time.UTC)
	at := func(i, n int) time.Time { return date.Add(time.Duration(n-i) * time.Hour) }
	o := newTwinOracle(t, hdrSearchSeed, at, "Subject: Quarterly kumquat report", hdrSearchCommands,
		"UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID)])")
	direct := o.login(t, o.d.Addr(), "EXAMINE INBOX")
	if got := searchUIDs(t, direct.do("UID SEARCH SUBJECT kumquat")); slices.Contains(got, "1") {
		t.Fatalf("the upstream server alone finds the protected subject (%v): the test would not show anything", got)
	}
	if o.want[0] == o.direct[0] {
		t.Fatalf("the upstream server answers %q as over the twins: the test would not show anything", hdrSearchCommands[0])
	}
	// Decrypting (a fresh proxy, nothing cached, no store), then from the memory cache, then from the store.
	addr := o.checkAll(t, "searches", true)

	// CONTEXT=SEARCH (RFC 5267): a protected message that arrives later is added to a SUBJECT search kept up to
	// date, as Dovecot adds its plain twin.
	pc, tc := o.login(t, addr, "SELECT INBOX"), o.login(t, o.d.Addr(), "SELECT Twins")
	const update = "UID SEARCH RETURN (UPDATE) SUBJECT kumquat"
	if p, w := ctxLines(pc.do(update)), ctxLines(tc.do(update)); p != w {
		t.Errorf("%s:\nproxy: %s\ntwins: %s", update, p, w)
	}
	late := encryptTo(t, msg([]string{`Content-Type: text/plain; charset=utf-8; hp="cipher"`,
		"From: alice@inner.example", "Subject: late kumquat memo", "Date: Tue, 03 Mar 2026 10:00:00 +0000"}, "late\n"),
		o.id.cert)
	uid := o.d.Append("alice", "INBOX", late, nil, date)
	o.d.Append("alice", "Twins", servedCopy(t, o.login(t, addr, "EXAMINE INBOX"), uint32(uid)), nil, date)
	p, w := ctxLines(pc.do("NOOP")), ctxLines(tc.do("NOOP"))
	if p != w {
		t.Errorf("NOOP after a protected message arrived:\nproxy: %s\ntwins: %s", p, w)
	}
	if !strings.Contains(p, fmt.Sprintf("ADDTO (0 %d)", uid)) {
		t.Errorf("the late protected message was not added: %s", p)
	}
}
