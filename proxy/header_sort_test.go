package proxy_test

import (
	"crypto/x509"
	"fmt"
	"testing"
	"time"
)

// hdrSortSeed is the mail of TestSortHeaderKeysServed: RFC 9788 header-protected messages (hp="cipher", the
// stored outer Subject "[...]" and an outer From that sorts elsewhere) whose inner Subject, From, To and Cc
// sort differently from the outer ones, ordinary encrypted ones, one encrypted to someone else, and plain
// ones, with the subject forms RFC 5256 section 2.1 strips (Re:, Fwd:, [blob], (fwd), [Fwd: ...]) and address
// forms that give different sort keys (comments, quoted and encoded display names, groups, no domain).
func hdrSortSeed(t *testing.T, own, other *x509.Certificate) [][]byte {
	t.Helper()
	enc := func(m []byte, c *x509.Certificate) []byte { return encryptTo(t, m, c) }
	hp := func(outerFrom string, fields ...string) []byte {
		h := append([]string{`Content-Type: text/plain; charset=utf-8; hp="cipher"`}, fields...)
		h = append(h, "HP-Outer: From: "+outerFrom, "HP-Outer: Subject: [...]")
		return enc(msg(h, "protected\n"), own)
	}
	date := func(d int) string { return fmt.Sprintf("Date: Mon, %02d Mar 2026 10:00:00 +0000", d) }
	return [][]byte{
		hp("Relay <aaa@relay.example>", "From: Zed Last <zed@inner.example>", "To: Amy <amy@example.org>",
			"Cc: bob@example.org", "Subject: Re: zebra minutes", date(5)),
		msg([]string{"From: mike@example.org", "To: Zoe <zoe@example.org>", "Subject: [list] Apple pie", date(3)}, "plain\n"),
		hp("Relay <aaa@relay.example>", "From: =?UTF-8?Q?=C3=89mile?= <emile@example.org>", "To: undisclosed-recipients:;",
			"Subject: Fwd: [tag] mango", date(9)),
		msg([]string{`From: "Quoted, Name" <quoted@example.org>`, "To: amy@example.org", "Cc: Zack <zack@example.org>",
			"Subject: RE: re: FW: apple pie (fwd)", date(1)}, "plain\n"),
		hp("Zulu <zzz@relay.example>", "From: banana@example.org (Comment Name)", "To: Zoe <zoe@example.org>",
			"Subject: [Fwd: banana split]", date(4)),
		msg([]string{"From: <noname@example.org>", "To: Bob <bob@example.org>", "Subject: =?UTF-8?Q?=C3=A9clair?= recipe", date(2)},
			"plain\n"),
		hp("Relay <aaa@relay.example>", "From: weekly@example.org", "To: list@example.org", "Cc: team: dan@example.org;",
			"Subject:   Weekly\r\n\tdigest", date(7)),
		msg([]string{"From: alice", "To: \"Odd, Name\" <odd@example.org>", date(6)}, "no subject\n"),
		hp("Relay <aaa@relay.example>", "From: Apple Grower <grower@example.org>", "To: carl@example.org",
			"Cc: Amy <amy@example.org>", "Subject: apple pie", date(8)),
		enc(msg([]string{"Content-Type: text/plain", "From: Kiwi Bird <kiwi@example.org>", "To: yves@example.org",
			"Subject: [a][b] Re: [c] kiwi", date(3)}, "ordinary encrypted\n"), own),
		msg([]string{"From: =?ISO-8859-1?Q?=C4rger?= <aerger@example.org>", "Subject: [only a blob]", date(2)}, "plain\n"),
		hp("Relay <aaa@relay.example>", "From: \"\" <empty@example.org>", "To: =?UTF-8?B?w4RuZGVydW5n?= <aend@example.org>",
			"Subject: re : spaced out", date(5)),
		enc(msg([]string{"Content-Type: text/plain", "From: Mallory <mallory@example.org>", "Subject: undecryptable thing",
			date(4)}, "not ours\n"), other),
		msg([]string{"From: Zed Last <zed@plain.example>", "To: Amy <amy@example.org>", "Subject: =?ISO-8859-1?Q?=C4rger?= (fwd)",
			date(6)}, "plain\n"),
		hp("Relay <aaa@relay.example>", "From: Fw Sender <fw@example.org>", "To: bob@example.org", "Subject: Fw[x]: zebra minutes",
			date(5)),
		enc(msg([]string{"Content-Type: text/plain", "From: Bob <bob@example.org>", "Subject: Re: Re: mango", date(1)}, "enc\n"), own),
		// Dates Dovecot parses leniently or not at all (then the internal date counts), and more subject forms.
		msg([]string{"From: x@example.org", "Subject: [FWD: Re: [x] nested (fwd)]  ", "Date: 3 Mar 26 10:00 EST"}, "plain\n"),
		msg([]string{"From: y@example.org", "Subject: Fwd:Fwd: re[list]: deep", "Date: garbage"}, "plain\n"),
		hp("Relay <aaa@relay.example>", "From: team: x@example.org;", "To: Bob <bob@example.org>", "Subject:   leading spaces"),
		msg([]string{"From: z@example.org", "Subject: =?UTF-8?B?w6nDqQ==?= =?UTF-8?Q?_x?=", "Date: Tue, 31 Feb 2026 10:00:00 +0000"},
			"plain\n"),
		msg([]string{"From: w@example.org", "Subject: re: [blob]", "Date: Wed, 4 Mar 2026 09:00 (comment) +0100"}, "plain\n"),
		hp("Relay <aaa@relay.example>", "From: v@example.org", "Subject: [a] [b]", "Date: Mon, 02 Mar 2026 10:00:00 z"),
		msg([]string{"From: u@example.org", "Subject: FW:", "Date: Mon, 02 Mar 2026 10:00:00 b"}, "plain\n"),
		hp("Relay <aaa@relay.example>", "From: t@example.org", "Subject: (fwd) (FWD)", "Date: Mon, 2 Mar 2026 09:59:60 PDT"),
	}
}

// hdrSortCommands are the sorts compared with Dovecot's answer over the plain twins.
var hdrSortCommands = []string{
	"UID SORT (SUBJECT) UTF-8 ALL",
	"SORT (SUBJECT) UTF-8 ALL",
	"UID SORT (REVERSE SUBJECT) UTF-8 ALL",
	"UID SORT (FROM) UTF-8 ALL",
	"UID SORT (REVERSE FROM) UTF-8 ALL",
	"UID SORT (DISPLAYFROM) UTF-8 ALL",
	"SORT (REVERSE DISPLAYFROM) UTF-8 ALL",
	"UID SORT (TO) UTF-8 ALL",
	"UID SORT (DISPLAYTO) UTF-8 ALL",
	"UID SORT (CC) UTF-8 ALL",
	"UID SORT (REVERSE CC) UTF-8 ALL",
	"UID SORT (SUBJECT DATE) UTF-8 ALL",
	"UID SORT (SUBJECT REVERSE DATE) UTF-8 ALL",
	"UID SORT (REVERSE SUBJECT REVERSE ARRIVAL) UTF-8 ALL",
	"UID SORT (DATE SUBJECT) UTF-8 ALL",
	"UID SORT (SUBJECT SIZE) UTF-8 ALL",
	"UID SORT (CC REVERSE TO FROM) UTF-8 ALL",
	"UID SORT (DISPLAYFROM REVERSE SUBJECT) UTF-8 1:*",
	"SORT (FROM SUBJECT) UTF-8 SUBJECT apple",
	"UID SORT (SUBJECT) UTF-8 NOT FROM zed",
	"SORT (SUBJECT) UTF-8 2:9",
	"UID SORT (TO) UTF-8 SUBJECT mango",
	"UID SORT (SUBJECT) US-ASCII OR TO amy CC amy",
	"UID SORT (ARRIVAL) UTF-8 ALL",
	"UID SORT (DATE) UTF-8 ALL",
	"SORT (REVERSE DATE) UTF-8 ALL",
	"UID SORT (DATE REVERSE FROM) UTF-8 ALL",
	"UID SORT (SUBJECT) UTF-8 SUBJECT zebra",
	"SORT RETURN (MIN MAX COUNT ALL) (SUBJECT) UTF-8 ALL",
	"UID SORT RETURN (ALL) (REVERSE FROM) UTF-8 ALL",
	"SORT RETURN () (DISPLAYFROM) UTF-8 NOT SUBJECT apple",
	"UID SORT RETURN (MIN MAX) (SUBJECT DATE) UTF-8 ALL",
	"UID SORT RETURN (COUNT) (TO) UTF-8 SUBJECT zebra",
	"UID SORT RETURN (ALL) (SUBJECT) UTF-8 SUBJECT zebra",
	"SORT RETURN (MIN MAX COUNT ALL) (SIZE) UTF-8 SUBJECT nomatchatall",
	"UID SORT RETURN (ALL COUNT) (ARRIVAL) UTF-8 SUBJECT mango",
}

// hdrSortDiffer are commands beyond the first ten that the upstream server alone answers differently.
var hdrSortDiffer = map[string]bool{
	"UID SORT (DATE) UTF-8 ALL":                           true,
	"SORT RETURN (MIN MAX COUNT ALL) (SUBJECT) UTF-8 ALL": true,
	"UID SORT RETURN (ALL) (SUBJECT) UTF-8 SUBJECT zebra": true,
	"UID SORT RETURN (COUNT) (TO) UTF-8 SUBJECT zebra":    true,
}

// TestSortHeaderKeysServed: SORT and UID SORT by SUBJECT, FROM, TO, CC (RFC 5256) and DISPLAYFROM, DISPLAYTO
// (RFC 5957) through the proxy order encrypted messages by their served header (for RFC 9788 header-protected
// mail the inner fields, which the upstream server never sees, not the stored "[...]"), and answer exactly as
// Dovecot answers for plain twins of the served copies (same bytes, same internal dates, same order): alone,
// REVERSE, with other keys, with search criteria; by decrypting, and after a restart from the metadata store
// with no decryption at all.
func TestSortHeaderKeysServed(t *testing.T) {
	arrival := time.Date(2026, 3, 1, 8, 30, 0, 0, time.UTC)
	at := func(i, _ int) time.Time { return arrival.Add(time.Duration((i*7)%5) * time.Hour) }
	o := newTwinOracle(t, hdrSortSeed, at, "Subject: Re: zebra minutes", hdrSortCommands,
		"UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date)])")
	for i, cmd := range hdrSortCommands {
		if (i < 10 || hdrSortDiffer[cmd]) && o.want[i] == o.direct[i] {
			t.Errorf("the upstream server answers %q as over the twins: the test would not show anything", cmd)
		}
	}
	o.checkAll(t, "sorts", false)
}
